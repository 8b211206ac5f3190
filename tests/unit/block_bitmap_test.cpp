// Dirty bitmaps on their own: marking, runs, counting, resizing, merging
// and the hash QEMU's x-debug-block-dirty-bitmap-sha256 reports.
#include "block/bitmap.hpp"

#include <gtest/gtest.h>

#include <utility>

#include "qapi/error.hpp"

namespace vstord {
namespace {

// Signed, as count() is: the comparisons stay free of sign warnings.
constexpr int64_t KiB = 1024;
constexpr int64_t MiB = 1024 * KiB;

// sha256 of 8 zero bytes: one clean 64-bit word.
constexpr const char* kOneCleanWord =
    "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc";

using Span = std::pair<bool, uint64_t>;

std::string error_of(auto fn) {
  try {
    fn();
  } catch (const qapi::Error& e) {
    return e.what();
  }
  return "<ok>";
}

TEST(DirtyBitmap, StartsClean) {
  DirtyBitmap bm("b", 64 * KiB, MiB, true);
  EXPECT_EQ(bm.name(), "b");
  EXPECT_EQ(bm.granularity(), 65536u);
  EXPECT_TRUE(bm.recording());
  EXPECT_FALSE(bm.busy());
  EXPECT_EQ(bm.count(), 0);
  EXPECT_EQ(bm.run_at(0, MiB), Span(false, MiB));
}

TEST(DirtyBitmap, MarkAcrossWordBoundary) {
  // 512-byte chunks: bits 60..69 straddle the first and second words.
  DirtyBitmap bm("b", 512, MiB, true);
  bm.mark(60 * 512, 10 * 512);
  EXPECT_EQ(bm.count(), 10 * 512);
  EXPECT_EQ(bm.run_at(0, MiB), Span(false, 60 * 512));
  EXPECT_EQ(bm.run_at(60 * 512, MiB - 60 * 512), Span(true, 10 * 512));
  EXPECT_EQ(bm.run_at(70 * 512, MiB - 70 * 512), Span(false, MiB - 70 * 512));
  // Inside the run, from an unaligned offset.
  EXPECT_EQ(bm.run_at(63 * 512 + 7, MiB), Span(true, 7 * 512 - 7));
  // Marking again changes nothing.
  bm.mark(61 * 512, 512);
  EXPECT_EQ(bm.count(), 10 * 512);
}

TEST(DirtyBitmap, MarkSpanningWholeWords) {
  // Bits 100..299: a partial word, two full words (128..255), a partial one.
  DirtyBitmap bm("b", 512, MiB, true);
  bm.mark(100 * 512, 200 * 512);
  EXPECT_EQ(bm.count(), 200 * 512);
  EXPECT_EQ(bm.run_at(0, MiB), Span(false, 100 * 512));
  EXPECT_EQ(bm.run_at(100 * 512, MiB), Span(true, 200 * 512));
  EXPECT_EQ(bm.run_at(128 * 512, MiB), Span(true, 172 * 512));
  EXPECT_EQ(bm.run_at(300 * 512, MiB - 300 * 512), Span(false, MiB - 300 * 512));
  // A run of clean whole words up to the end.
  EXPECT_EQ(bm.run_at(320 * 512, MiB - 320 * 512), Span(false, MiB - 320 * 512));
}

TEST(DirtyBitmap, PartialChunksDirtyTheWholeChunk) {
  DirtyBitmap bm("b", 64 * KiB, MiB, true);
  // Two bytes across the first chunk boundary: chunks 0 and 1.
  bm.mark(64 * KiB - 1, 2);
  // One byte in chunk 3.
  bm.mark(196613, 1);
  EXPECT_EQ(bm.count(), 3 * 64 * KiB);
  EXPECT_EQ(bm.run_at(0, MiB), Span(true, 128 * KiB));
  EXPECT_EQ(bm.run_at(1, MiB - 1), Span(true, 128 * KiB - 1));
  EXPECT_EQ(bm.run_at(128 * KiB, MiB - 128 * KiB), Span(false, 64 * KiB));
  EXPECT_EQ(bm.run_at(192 * KiB, MiB - 192 * KiB), Span(true, 64 * KiB));
  EXPECT_EQ(bm.run_at(256 * KiB, MiB - 256 * KiB), Span(false, MiB - 256 * KiB));
  // A query shorter than the chunk ends with the query.
  EXPECT_EQ(bm.run_at(10, 5), Span(true, 5));
  EXPECT_EQ(bm.run_at(130 * KiB, 5), Span(false, 5));
}

TEST(DirtyBitmap, MarkOfNothingOrPastTheEnd) {
  DirtyBitmap bm("b", 64 * KiB, MiB, true);
  bm.mark(0, 0);
  bm.mark(MiB, 64 * KiB);
  bm.mark(2 * MiB, 1);
  EXPECT_EQ(bm.count(), 0);
  EXPECT_EQ(bm.sha256(), kOneCleanWord);
  // A range running off the end marks up to the last chunk only.
  bm.mark(MiB - 1, 10 * MiB);
  EXPECT_EQ(bm.count(), 64 * KiB);
  EXPECT_EQ(bm.run_at(MiB - 64 * KiB, 64 * KiB), Span(true, 64 * KiB));
}

TEST(DirtyBitmap, RunsAtTheEndOfAnUnalignedNode) {
  // 100000 bytes at 64 KiB: chunk 1 is partial (65536..99999).
  constexpr int64_t size = 100000;
  DirtyBitmap bm("b", 64 * KiB, size, true);
  EXPECT_EQ(bm.run_at(0, size), Span(false, size));
  bm.mark(70000, 1);
  EXPECT_EQ(bm.run_at(0, size), Span(false, 64 * KiB));
  EXPECT_EQ(bm.run_at(64 * KiB, size - 64 * KiB), Span(true, size - 64 * KiB));
  EXPECT_EQ(bm.run_at(size - 1, 1), Span(true, 1));
  // QEMU counts whole chunks, even the partial last one.
  EXPECT_EQ(bm.count(), 64 * KiB);
  // Past the end: clean, as long as asked.
  EXPECT_EQ(bm.run_at(200000, 10), Span(false, 10));
}

TEST(DirtyBitmap, RunCoversAPartialLastWord) {
  // 201 chunks of 512 bytes, the last one partial: whole words, then the
  // nine bits of a partial last word.
  constexpr int64_t size = 200 * 512 + 100;
  DirtyBitmap bm("b", 512, size, true);
  bm.mark(0, size);
  EXPECT_EQ(bm.count(), 201 * 512);
  EXPECT_EQ(bm.run_at(0, size), Span(true, size));
  EXPECT_EQ(bm.run_at(64 * 512, size - 64 * 512), Span(true, size - 64 * 512));
  bm.clear();
  bm.mark(size - 1, 1);
  EXPECT_EQ(bm.run_at(0, size), Span(false, 200 * 512));
  EXPECT_EQ(bm.run_at(200 * 512, 100), Span(true, 100));
}

TEST(DirtyBitmap, Clear) {
  DirtyBitmap bm("b", 512, MiB, true);
  bm.mark(0, MiB);
  EXPECT_EQ(bm.count(), int64_t(MiB));
  EXPECT_EQ(bm.run_at(0, MiB), Span(true, MiB));
  bm.clear();
  EXPECT_EQ(bm.count(), 0);
  EXPECT_EQ(bm.run_at(0, MiB), Span(false, MiB));
  EXPECT_EQ(bm.sha256(), "5341e6b2646979a70e57653007a1f310169421ec9bdd9f1a5648f75ade005af1");
}

TEST(DirtyBitmap, NotRecordingIgnoresMarks) {
  DirtyBitmap bm("b", 64 * KiB, MiB, false);
  EXPECT_FALSE(bm.recording());
  bm.mark(0, MiB);
  EXPECT_EQ(bm.count(), 0);
  bm.set_recording(true);
  bm.mark(0, 1);
  EXPECT_EQ(bm.count(), 64 * KiB);
  bm.set_recording(false);
  bm.mark(MiB - 1, 1);
  EXPECT_EQ(bm.count(), 64 * KiB);
  EXPECT_FALSE(bm.info().recording);
}

TEST(DirtyBitmap, ResizeGrowKeepsBits) {
  DirtyBitmap bm("b", 64 * KiB, MiB, true);
  bm.mark(0, 1);
  bm.mark(MiB - 1, 1);
  bm.resize(2 * MiB);
  EXPECT_EQ(bm.count(), 2 * 64 * KiB);
  EXPECT_EQ(bm.run_at(0, 2 * MiB), Span(true, 64 * KiB));
  EXPECT_EQ(bm.run_at(MiB - 64 * KiB, MiB + 64 * KiB), Span(true, 64 * KiB));
  EXPECT_EQ(bm.run_at(MiB, MiB), Span(false, MiB));
  // The new area records.
  bm.mark(MiB + MiB / 2, 1);
  EXPECT_EQ(bm.count(), 3 * 64 * KiB);
}

TEST(DirtyBitmap, ResizeShrinkDropsBitsPastTheEnd) {
  DirtyBitmap bm("b", 64 * KiB, MiB, true);
  bm.mark(0, 1);
  bm.mark(MiB - 1, 1);
  bm.resize(MiB / 2);
  EXPECT_EQ(bm.count(), 64 * KiB);
  EXPECT_EQ(bm.run_at(64 * KiB, MiB / 2 - 64 * KiB), Span(false, MiB / 2 - 64 * KiB));
  // Growing again does not bring the dropped bit back.
  bm.resize(MiB);
  EXPECT_EQ(bm.count(), 64 * KiB);
  EXPECT_EQ(bm.run_at(64 * KiB, MiB - 64 * KiB), Span(false, MiB - 64 * KiB));

  DirtyBitmap fresh("f", 64 * KiB, MiB, true);
  fresh.mark(0, 1);
  EXPECT_EQ(bm.sha256(), fresh.sha256());
}

TEST(DirtyBitmap, ResizeKeepsAPartialLastChunk) {
  // As QEMU: a chunk that still has bytes in the node stays dirty.
  DirtyBitmap bm("b", 64 * KiB, MiB, true);
  bm.mark(64 * KiB, 64 * KiB);
  bm.resize(100000);
  EXPECT_EQ(bm.count(), 64 * KiB);
  EXPECT_EQ(bm.run_at(64 * KiB, 100000 - 64 * KiB), Span(true, 100000 - 64 * KiB));
}

TEST(DirtyBitmap, ResizeAcrossWordCounts) {
  // 2048 bits (32 words) down to 2047 and 64, then back up.
  DirtyBitmap bm("b", 512, MiB, true);
  bm.mark(100 * 512, 1);
  bm.mark(MiB - 1, 1);
  bm.resize(MiB - 512);
  EXPECT_EQ(bm.count(), 512);
  bm.resize(64 * 512);
  EXPECT_EQ(bm.count(), 0);
  bm.resize(MiB);
  EXPECT_EQ(bm.count(), 0);
  EXPECT_EQ(bm.sha256(), "5341e6b2646979a70e57653007a1f310169421ec9bdd9f1a5648f75ade005af1");
}

TEST(DirtyBitmap, MergeFromFinerGranularity) {
  DirtyBitmap dst("dst", 64 * KiB, MiB, true);
  DirtyBitmap src("src", 512, MiB, true);
  src.mark(1024, 512);              // chunk 0 of dst
  src.mark(5 * 64 * KiB + 100, 1);  // chunk 5 of dst
  dst.mark(MiB - 1, 1);             // already there: kept
  dst.merge_from(src);
  EXPECT_EQ(dst.count(), 3 * 64 * KiB);
  EXPECT_EQ(dst.run_at(0, MiB), Span(true, 64 * KiB));
  EXPECT_EQ(dst.run_at(64 * KiB, MiB), Span(false, 4 * 64 * KiB));
  EXPECT_EQ(dst.run_at(5 * 64 * KiB, MiB), Span(true, 64 * KiB));
  EXPECT_EQ(dst.run_at(MiB - 64 * KiB, 64 * KiB), Span(true, 64 * KiB));
  // The source is untouched.
  EXPECT_EQ(src.count(), 2 * 512);
}

TEST(DirtyBitmap, MergeFromCoarserGranularity) {
  DirtyBitmap dst("dst", 512, MiB, true);
  DirtyBitmap src("src", 64 * KiB, MiB, true);
  src.mark(64 * KiB + 3, 1);
  dst.merge_from(src);
  EXPECT_EQ(dst.count(), 64 * KiB);
  EXPECT_EQ(dst.run_at(0, MiB), Span(false, 64 * KiB));
  EXPECT_EQ(dst.run_at(64 * KiB, MiB - 64 * KiB), Span(true, 64 * KiB));
  EXPECT_EQ(dst.run_at(128 * KiB, MiB - 128 * KiB), Span(false, MiB - 128 * KiB));
}

TEST(DirtyBitmap, MergeIntoADisabledBitmap) {
  // Merging is not a write: a disabled target takes the bits and stays
  // disabled.
  DirtyBitmap dst("dst", 64 * KiB, MiB, false);
  DirtyBitmap src("src", 64 * KiB, MiB, true);
  src.mark(0, 2 * 64 * KiB);
  dst.merge_from(src);
  EXPECT_EQ(dst.count(), 2 * 64 * KiB);
  EXPECT_FALSE(dst.recording());
  dst.mark(MiB - 1, 1);
  EXPECT_EQ(dst.count(), 2 * 64 * KiB);
}

TEST(DirtyBitmap, Sha256KnownValues) {
  EXPECT_EQ(DirtyBitmap("b", 64 * KiB, MiB, true).sha256(), kOneCleanWord);
  EXPECT_EQ(DirtyBitmap("b", 512, MiB, true).sha256(),
            "5341e6b2646979a70e57653007a1f310169421ec9bdd9f1a5648f75ade005af1");

  DirtyBitmap bm("b", 64 * KiB, MiB, true);
  bm.mark(0, 1024);
  bm.mark(196613, 1);
  EXPECT_EQ(bm.sha256(), "cbbd5f990c53684d7ae650b40fcb5656e02261b53da5f6a7d8c819c92f2828f8");
  bm.clear();
  EXPECT_EQ(bm.sha256(), kOneCleanWord);
}

TEST(DirtyBitmap, Sha256OfAnEmptyNode) {
  // QEMU's bitmap always has at least one word, even for a node of no
  // bytes, and hashes it.
  EXPECT_EQ(DirtyBitmap("b", 64 * KiB, 0, true).sha256(), kOneCleanWord);
  DirtyBitmap bm("b", 64 * KiB, MiB, true);
  bm.resize(0);
  EXPECT_EQ(bm.sha256(), kOneCleanWord);
  EXPECT_EQ(bm.count(), 0);
  EXPECT_EQ(bm.run_at(0, 512), Span(false, 512));
}

TEST(DirtyBitmap, BusyRefusesChanges) {
  DirtyBitmap bm("bm0", 64 * KiB, MiB, true);
  EXPECT_EQ(error_of([&] { bm.check_modifiable(); }), "<ok>");
  bm.hold();
  bm.hold();
  EXPECT_TRUE(bm.busy());
  EXPECT_TRUE(bm.info().busy);
  EXPECT_EQ(error_of([&] { bm.check_modifiable(); }),
            "Bitmap 'bm0' is currently in use by another operation and cannot be used");
  bm.release();
  EXPECT_TRUE(bm.busy());
  bm.release();
  EXPECT_FALSE(bm.busy());
  EXPECT_EQ(error_of([&] { bm.check_modifiable(); }), "<ok>");
}

TEST(DirtyBitmap, Info) {
  DirtyBitmap bm("bm0", 512, MiB, true);
  bm.mark(0, 1000);
  auto info = bm.info();
  EXPECT_EQ(info.name, "bm0");
  EXPECT_EQ(info.count, 1024);
  EXPECT_EQ(info.granularity, 512u);
  EXPECT_TRUE(info.recording);
  EXPECT_FALSE(info.busy);
  EXPECT_FALSE(info.persistent);
}

}  // namespace
}  // namespace vstord
