// The block graph without a monitor: blockdev-add and blockdev-del through
// BlockGraph, root users through BlockUser, QEMU's permission model and
// its messages, and requests through a raw node down to a file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/uio.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <regex>
#include <vector>

#include "block/bitmap.hpp"
#include "block/block.hpp"
#include "daemon/daemon.hpp"
#include "qapi/error.hpp"

namespace vstord {
namespace {

namespace asio = boost::asio;
using qapi::BlockdevDriver;
using qapi::BlockdevOptions;
using qapi::BlockdevRef;

constexpr int64_t KiB = 1024;
constexpr int64_t MiB = 1024 * KiB;

// ---- options as a client would send them -------------------------------------

BlockdevOptions null_co(std::optional<std::string> name, int64_t size = MiB) {
  BlockdevOptions o;
  o.node_name = std::move(name);
  auto& n = o.emplace<BlockdevDriver::null_co>();
  n.size = size;
  n.read_zeroes = true;
  return o;
}

BlockdevOptions file_node(std::string name, std::string filename) {
  BlockdevOptions o;
  o.node_name = std::move(name);
  o.emplace<BlockdevDriver::file>().filename = std::move(filename);
  return o;
}

BlockdevRef ref(std::string name) {
  BlockdevRef r;
  r.u = std::move(name);
  return r;
}

BlockdevRef inline_ref(BlockdevOptions child) {
  BlockdevRef r;
  r.u = qapi::Box<BlockdevOptions>(std::move(child));
  return r;
}

BlockdevOptions raw(std::optional<std::string> name, BlockdevRef file,
                    std::optional<int64_t> offset = std::nullopt,
                    std::optional<int64_t> size = std::nullopt) {
  BlockdevOptions o;
  o.node_name = std::move(name);
  auto& r = o.emplace<BlockdevDriver::raw>();
  r.file = std::move(file);
  r.offset = offset;
  r.size = size;
  return o;
}

std::string error_of(auto fn) {
  try {
    fn();
  } catch (const qapi::Error& e) {
    return e.what();
  }
  return "<ok>";
}

std::vector<std::string> names(const std::vector<std::shared_ptr<BlockNode>>& nodes) {
  std::vector<std::string> out;
  for (const auto& n : nodes) out.push_back(n->name());
  return out;
}

// ---- fixture ---------------------------------------------------------------------

class BlockGraphTest : public ::testing::Test {
 protected:
  // Runs a coroutine on the main io_context to its end; rethrows what it
  // threw.
  template <class T>
  T run(Task<T> task) {
    std::optional<T> result;
    std::exception_ptr error;
    bool done = false;
    asio::co_spawn(io_, std::move(task), [&](std::exception_ptr e, T value) {
      error = e;
      if (!e) result = std::move(value);
      done = true;
    });
    drive(done);
    if (error) std::rethrow_exception(error);
    return std::move(*result);
  }
  void run(Task<void> task) {
    std::exception_ptr error;
    bool done = false;
    asio::co_spawn(io_, std::move(task), [&](std::exception_ptr e) {
      error = e;
      done = true;
    });
    drive(done);
    if (error) std::rethrow_exception(error);
  }

  std::shared_ptr<BlockNode> add(const BlockdevOptions& opts) {
    return run(graph().add(opts, cli_fds_));
  }
  std::string add_error(const BlockdevOptions& opts) {
    return error_of([&] { add(opts); });
  }
  std::string del_error(const std::string& name) {
    return error_of([&] { graph().del(name); });
  }

  int write(BlockNode& node, uint64_t offset, std::vector<char>& buf) {
    iovec v{buf.data(), buf.size()};
    return run(node.write(offset, IoVec(&v, 1)));
  }
  int read(BlockNode& node, uint64_t offset, std::vector<char>& buf) {
    iovec v{buf.data(), buf.size()};
    return run(node.read(offset, IoVec(&v, 1)));
  }

  BlockGraph& graph() { return daemon_.block(); }

  asio::io_context io_;
  Daemon daemon_{io_};
  FdContext cli_fds_;  // as on the command line: fd addresses are numbers

 private:
  void drive(const bool& done) {
    io_.restart();
    io_.run_for(std::chrono::seconds(10));
    if (!done) {
      // The coroutine still refers to this frame: nothing sane to go on with.
      std::fprintf(stderr, "coroutine did not finish within 10 s\n");
      std::abort();
    }
  }
};

// A node "n" (null-co, 1 MiB) with a raw window "r" over it.
class WindowTest : public BlockGraphTest {
 protected:
  void SetUp() override {
    n_ = add(null_co("n"));
    r_ = add(raw("r", ref("n"), std::nullopt, 512 * KiB));
  }
  std::shared_ptr<BlockNode> n_, r_;
};

// ---- adding nodes ----------------------------------------------------------------

TEST_F(BlockGraphTest, AddChecksNames) {
  EXPECT_EQ(add_error(null_co(std::nullopt)), "'node-name' must be specified for the root node");
  EXPECT_EQ(add_error(null_co("1n")), "Invalid node-name: '1n'");
  EXPECT_EQ(add_error(null_co("n#")), "Invalid node-name: 'n#'");
  EXPECT_EQ(add_error(null_co(std::string(32, 'n'))), "Node name too long");
  auto n = add(null_co("n"));
  EXPECT_TRUE(n->monitor_owned());
  EXPECT_EQ(n->size(), MiB);
  EXPECT_EQ(add_error(null_co("n")), "Duplicate nodes with node-name='n'");
  EXPECT_EQ(add_error(raw("r", ref("missing"))),
            "Cannot find device='missing' nor node-name='missing'");
  add(raw("r", ref("n")));
  EXPECT_EQ(names(graph().nodes()), (std::vector<std::string>{"r", "n"}));
  EXPECT_EQ(graph().find_or_fail("r")->file_child(), n.get());
  EXPECT_EQ(error_of([&] { graph().find_or_fail("x"); }),
            "Cannot find device='' nor node-name='x'");
}

TEST_F(BlockGraphTest, InlineChildGetsAGeneratedName) {
  auto r = add(raw("r", inline_ref(null_co(std::nullopt))));
  BlockNode* child = r->file_child();
  ASSERT_NE(child, nullptr);
  EXPECT_TRUE(std::regex_match(child->name(), std::regex("#block[0-9]{3,}")));
  EXPECT_FALSE(child->monitor_owned());
  EXPECT_EQ(graph().find(child->name()).get(), child);
  EXPECT_EQ(graph().nodes().size(), 2u);
}

TEST_F(BlockGraphTest, FailedAddRemovesItsInlineChild) {
  EXPECT_EQ(add_error(raw("r", inline_ref(null_co(std::nullopt)), 2 * MiB)),
            "Offset (2097152) cannot be greater than size of the containing file (1048576)");
  EXPECT_TRUE(graph().nodes().empty());
}

TEST_F(BlockGraphTest, FailedAddRemovesNestedInlineChildren) {
  // raw over an inline raw over an inline null-co: every node the failed
  // command created goes, not only the outer node's direct child.
  auto mid = raw(std::nullopt, inline_ref(null_co(std::nullopt)));
  EXPECT_EQ(add_error(raw("top", inline_ref(std::move(mid)), 2 * MiB)),
            "Offset (2097152) cannot be greater than size of the containing file (1048576)");
  EXPECT_EQ(names(graph().nodes()), std::vector<std::string>{});
}

TEST_F(BlockGraphTest, InlineChildCannotReuseItsParentsName) {
  // The parent's name is checked before its child exists; the child must
  // not take it meanwhile.
  EXPECT_EQ(add_error(raw("x", inline_ref(null_co("x")))), "Duplicate nodes with node-name='x'");
  EXPECT_EQ(names(graph().nodes()), std::vector<std::string>{});
}

TEST_F(BlockGraphTest, PermissionNames) {
  EXPECT_EQ(perm::names(perm::all), "consistent read, write, write unchanged, resize");
  EXPECT_EQ(perm::names(perm::write | perm::resize), "write, resize");
  EXPECT_EQ(perm::names(0), "");
  EXPECT_EQ(perm::to_qapi(perm::consistent_read | perm::resize),
            (std::vector<qapi::BlockPermission>{qapi::BlockPermission::resize,
                                                qapi::BlockPermission::consistent_read}));
}

TEST_F(WindowTest, RawWindowUnsharesResize) {
  EXPECT_EQ(r_->size(), 512 * KiB);
  ASSERT_EQ(n_->parents().size(), 1u);
  const BdrvChild* edge = n_->parents()[0];
  EXPECT_EQ(edge->parent_node, r_.get());
  EXPECT_EQ(edge->role, "file");
  EXPECT_EQ(edge->perm, 0u);
  EXPECT_EQ(edge->shared, perm::all & ~perm::resize);
}

// ---- permission conflicts --------------------------------------------------------

TEST_F(WindowTest, ResizeUserConflictsWithTheWindow) {
  EXPECT_EQ(error_of([&] { BlockUser::attach(n_, "", perm::resize, perm::all); }),
            "Permission conflict on node 'n': permissions 'resize' are both required by an "
            "unnamed block device (uses node 'n' as 'root' child) and unshared by node 'r' (uses "
            "node 'n' as 'file' child).");
  // The failed attach left nothing behind.
  EXPECT_EQ(n_->parents().size(), 1u);
  // Anything but resize is fine.
  auto user = BlockUser::attach(n_, "", perm::consistent_read | perm::write, perm::all);
  EXPECT_EQ(n_->parents().size(), 2u);
  user.reset();
  EXPECT_EQ(n_->parents().size(), 1u);
}

TEST_F(BlockGraphTest, WindowOverAResizeUserFailsToOpen) {
  auto n = add(null_co("n"));
  auto user = BlockUser::attach(n, "", perm::resize, perm::all);
  EXPECT_EQ(add_error(raw("r", ref("n"), 512)),
            "Permission conflict on node 'n': permissions 'resize' are both required by an "
            "unnamed block device (uses node 'n' as 'root' child) and unshared by node 'r' (uses "
            "node 'n' as 'file' child).");
  EXPECT_EQ(graph().find("r"), nullptr);
  EXPECT_EQ(n->parents().size(), 1u);
  user.reset();
  EXPECT_EQ(add_error(raw("r", ref("n"), 512)), "<ok>");
}

TEST_F(WindowTest, ReleasingAUserLetsTheNextOneAttach) {
  // A writer on r that shares no writing: the need goes down to n.
  auto writer = BlockUser::attach(r_, "", perm::consistent_read | perm::write,
                                  perm::consistent_read | perm::write_unchanged);
  const BdrvChild* edge = n_->parents()[0];
  EXPECT_EQ(edge->perm, perm::consistent_read | perm::write);
  EXPECT_EQ(edge->shared, perm::consistent_read | perm::write_unchanged);

  EXPECT_EQ(error_of([&] { BlockUser::attach(n_, "exp", perm::write, perm::all); }),
            "Permission conflict on node 'n': permissions 'write' are both required by block "
            "device 'exp' (uses node 'n' as 'root' child) and unshared by node 'r' (uses node "
            "'n' as 'file' child).");
  writer.reset();
  EXPECT_EQ(edge->perm, 0u);
  EXPECT_EQ(edge->shared, perm::all & ~perm::resize);
  auto second = BlockUser::attach(n_, "exp", perm::write, perm::all);
  EXPECT_TRUE(second);
  EXPECT_EQ(&second.node(), n_.get());
}

TEST_F(WindowTest, ConflictFoundBelowUndoesTheEdges) {
  // A reader of n that lets nobody write; then a writer on r.
  auto reader = BlockUser::attach(n_, "", perm::consistent_read, perm::consistent_read);
  EXPECT_EQ(error_of([&] { BlockUser::attach(r_, "", perm::write, perm::all); }),
            "Permission conflict on node 'n': permissions 'write' are both required by node 'r' "
            "(uses node 'n' as 'file' child) and unshared by an unnamed block device (uses node "
            "'n' as 'root' child).");
  EXPECT_TRUE(r_->parents().empty());
  const BdrvChild* edge = r_->children()[0].get();
  EXPECT_EQ(edge->perm, 0u);
  EXPECT_EQ(edge->shared, perm::all & ~perm::resize);
  // Reading through r is still fine.
  auto r_reader = BlockUser::attach(r_, "", perm::consistent_read, perm::all);
  EXPECT_EQ(edge->perm, perm::consistent_read);
}

TEST_F(BlockGraphTest, ConflictBetweenRootUsersNamesEveryPermission) {
  auto n = add(null_co("n"));
  auto a = BlockUser::attach(n, "a", perm::consistent_read, perm::consistent_read);
  EXPECT_EQ(error_of([&] {
              BlockUser::attach(n, "b", perm::consistent_read | perm::write | perm::resize,
                                perm::all);
            }),
            "Permission conflict on node 'n': permissions 'write, resize' are both required by "
            "block device 'b' (uses node 'n' as 'root' child) and unshared by block device 'a' "
            "(uses node 'n' as 'root' child).");
  // The other way round: the newcomer does not share what a holder needs.
  a.reset();
  auto w = BlockUser::attach(n, "", perm::write, perm::all);
  EXPECT_EQ(error_of([&] { BlockUser::attach(n, "c", perm::consistent_read, 0); }),
            "Permission conflict on node 'n': permissions 'write' are both required by an "
            "unnamed block device (uses node 'n' as 'root' child) and unshared by block device "
            "'c' (uses node 'n' as 'root' child).");
}

TEST_F(BlockGraphTest, MovedUserKeepsItsHold) {
  auto n = add(null_co("n"));
  auto a = BlockUser::attach(n, "", perm::write, perm::consistent_read | perm::write);
  BlockUser b = std::move(a);
  EXPECT_FALSE(a);
  EXPECT_EQ(n->parents().size(), 1u);
  EXPECT_NE(error_of([&] { BlockUser::attach(n, "", perm::resize, perm::all); }), "<ok>");
  b = BlockUser();
  EXPECT_TRUE(n->parents().empty());
  EXPECT_EQ(error_of([&] { BlockUser::attach(n, "", perm::resize, perm::all); }), "<ok>");
}

// ---- read-only nodes -------------------------------------------------------------

TEST_F(BlockGraphTest, ReadOnlyNodeRefusesWriters) {
  auto opts = null_co("ro");
  opts.read_only = true;
  auto ro = add(opts);
  EXPECT_TRUE(ro->read_only());
  EXPECT_EQ(error_of([&] { BlockUser::attach(ro, "", perm::write, perm::all); }),
            "Block node is read-only");
  EXPECT_EQ(error_of([&] { BlockUser::attach(ro, "", perm::write_unchanged, perm::all); }),
            "Block node is read-only");
  EXPECT_TRUE(ro->parents().empty());
  auto reader = BlockUser::attach(ro, "", perm::consistent_read, perm::all);

  // A raw node over it is writable itself; the write need fails below.
  auto r = add(raw("r", ref("ro")));
  EXPECT_FALSE(r->read_only());
  EXPECT_EQ(error_of([&] { BlockUser::attach(r, "", perm::write, perm::all); }),
            "Block node is read-only");
  EXPECT_EQ(r->children()[0]->perm, 0u);

  // The data path refuses too.
  std::vector<char> buf(512, 'x');
  EXPECT_EQ(write(*ro, 0, buf), -EPERM);
}

TEST_F(BlockGraphTest, ForceShareNeedsReadOnly) {
  auto opts = null_co("n");
  opts.force_share = true;
  EXPECT_EQ(add_error(opts), "force-share=on can only be used with read-only images");
}

// ---- blockdev-del ------------------------------------------------------------------

TEST_F(WindowTest, DelRefusesNodesInUse) {
  EXPECT_EQ(del_error("nope"), "Failed to find node with node-name='nope'");
  auto user = BlockUser::attach(r_, "", perm::consistent_read, perm::all);
  EXPECT_EQ(del_error("r"), "Node r is in use");
  EXPECT_EQ(del_error("n"), "Block device n is in use");
  user.reset();
  EXPECT_EQ(del_error("r"), "<ok>");
  EXPECT_EQ(graph().find("r"), nullptr);
  // n stays: the monitor added it.  Its permissions are free again.
  EXPECT_TRUE(n_->parents().empty());
  EXPECT_EQ(names(graph().nodes()), std::vector<std::string>{"n"});
  auto resizer = BlockUser::attach(n_, "", perm::resize, perm::all);
  resizer.reset();
  EXPECT_EQ(del_error("n"), "<ok>");
  EXPECT_TRUE(graph().nodes().empty());
}

TEST_F(BlockGraphTest, DelRefusesAnInlineChild) {
  auto r = add(raw("r", inline_ref(null_co(std::nullopt))));
  std::string child = r->file_child()->name();
  std::string err = del_error(child);
  EXPECT_TRUE(std::regex_match(err, std::regex("Node #block[0-9]{3,} is not owned by the monitor")))
      << err;
  EXPECT_EQ(err, "Node " + child + " is not owned by the monitor");
  // Deleting the parent takes the inline child along.
  EXPECT_EQ(del_error("r"), "<ok>");
  EXPECT_EQ(graph().find(child), nullptr);
  EXPECT_TRUE(graph().nodes().empty());
}

TEST_F(BlockGraphTest, InlineChildGoesWithItsLastUser) {
  // An inline child still used by someone outlives its parent, but only
  // as long as that use: then it goes, as QEMU frees it.
  auto r = add(raw("r", inline_ref(null_co(std::nullopt))));
  auto child = graph().find(r->file_child()->name());
  auto user = BlockUser::attach(child, "", perm::consistent_read, perm::all);
  EXPECT_EQ(del_error("r"), "<ok>");
  EXPECT_EQ(names(graph().nodes()), std::vector<std::string>{child->name()});
  user.reset();
  EXPECT_EQ(names(graph().nodes()), std::vector<std::string>{});
}

TEST_F(BlockGraphTest, DelRefusesANodeWithABusyBitmap) {
  auto n = add(null_co("n"));
  auto bm = std::make_shared<DirtyBitmap>("b0", 65536, uint64_t(n->size()), true);
  n->add_bitmap(bm);
  bm->hold();
  EXPECT_EQ(del_error("n"),
            "Bitmap 'b0' is currently in use by another operation and cannot be used");
  bm->release();
  EXPECT_EQ(del_error("n"), "<ok>");
}

// ---- the data path through raw ---------------------------------------------------

// A 1 MiB file "f" with a raw window "r" over it at 64 KiB, 512 KiB long.
class DataPathTest : public BlockGraphTest {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vstord-graph-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = (dir_ / "disk.img").string();
    int fd = ::open(path_.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, MiB), 0);
    ::close(fd);
    f_ = add(file_node("f", path_));
    r_ = add(raw("r", ref("f"), kOffset, 512 * KiB));
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // What the file holds, read behind the daemon's back.
  std::vector<char> on_disk(off_t offset, size_t len) {
    std::vector<char> buf(len);
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(pread(fd, buf.data(), len, offset), ssize_t(len));
    ::close(fd);
    return buf;
  }

  static constexpr int64_t kOffset = 64 * KiB;
  std::filesystem::path dir_;
  std::string path_;
  std::shared_ptr<BlockNode> f_, r_;
};

std::vector<char> pattern(size_t len, char seed) {
  std::vector<char> buf(len);
  for (size_t i = 0; i < len; ++i) buf[i] = char(seed + i % 251);
  return buf;
}

TEST_F(DataPathTest, WritesThroughRawLandAtTheOffset) {
  EXPECT_EQ(f_->size(), MiB);
  EXPECT_EQ(r_->size(), 512 * KiB);
  auto user = BlockUser::attach(r_, "", perm::consistent_read | perm::write, perm::all);

  auto data = pattern(4096, 'a');
  EXPECT_EQ(write(*r_, 4096, data), 0);

  std::vector<char> back(4096);
  EXPECT_EQ(read(*f_, kOffset + 4096, back), 0);
  EXPECT_EQ(back, data);
  EXPECT_EQ(on_disk(kOffset + 4096, 4096), data);
  std::vector<char> again(4096);
  EXPECT_EQ(read(*r_, 4096, again), 0);
  EXPECT_EQ(again, data);
  // The child's own offset 4096 is untouched.
  std::vector<char> other(4096, 'x');
  EXPECT_EQ(read(*f_, 4096, other), 0);
  EXPECT_EQ(other, std::vector<char>(4096, 0));

  // Zeroes through raw, too.
  EXPECT_EQ(run(r_->write_zeroes(4096, 512)), 0);
  EXPECT_EQ(on_disk(kOffset + 4096, 512), std::vector<char>(512, 0));
  EXPECT_EQ(on_disk(kOffset + 4096 + 512, 512),
            std::vector<char>(data.begin() + 512, data.begin() + 1024));
}

TEST_F(DataPathTest, TruncateThroughRaw) {
  EXPECT_EQ(error_of([&] { run(r_->truncate(256 * KiB)); }), "Cannot resize fixed-size raw disks");
  EXPECT_EQ(r_->size(), 512 * KiB);

  // A raw node without a window resizes its child, and its bitmaps follow.
  graph().del("r");
  auto whole = add(raw("whole", ref("f")));
  auto bm = std::make_shared<DirtyBitmap>("b", 65536, uint64_t(whole->size()), true);
  whole->add_bitmap(bm);
  bm->mark(MiB - 1, 1);
  auto user = BlockUser::attach(whole, "", perm::resize, perm::all);
  run(whole->truncate(2 * MiB));
  EXPECT_EQ(whole->size(), 2 * MiB);
  EXPECT_EQ(f_->size(), 2 * MiB);
  EXPECT_EQ(std::filesystem::file_size(path_), uintmax_t(2 * MiB));
  EXPECT_EQ(bm->count(), 65536);
  bm->mark(2 * MiB - 1, 1);
  EXPECT_EQ(bm->count(), 2 * 65536);
}

TEST_F(DataPathTest, BitmapsAreMarkedAtEachNodesOffsets) {
  auto on_raw = std::make_shared<DirtyBitmap>("b", 65536, uint64_t(r_->size()), true);
  auto on_file = std::make_shared<DirtyBitmap>("b", 512, uint64_t(f_->size()), true);
  auto disabled = std::make_shared<DirtyBitmap>("off", 512, uint64_t(r_->size()), false);
  r_->add_bitmap(on_raw);
  r_->add_bitmap(disabled);
  f_->add_bitmap(on_file);
  EXPECT_EQ(r_->find_bitmap("off"), disabled);
  EXPECT_EQ(r_->bitmaps().size(), 2u);
  EXPECT_EQ(r_->bitmaps()[0], disabled);  // newest first

  auto data = pattern(4096, 'q');
  EXPECT_EQ(write(*r_, 4096, data), 0);
  EXPECT_EQ(on_raw->count(), 65536);
  EXPECT_EQ(on_raw->run_at(0, r_->size()), std::make_pair(true, uint64_t(65536)));
  EXPECT_EQ(on_file->count(), 4096);
  EXPECT_EQ(on_file->run_at(0, f_->size()), std::make_pair(false, uint64_t(kOffset + 4096)));
  EXPECT_EQ(on_file->run_at(kOffset + 4096, 4096), std::make_pair(true, uint64_t(4096)));
  EXPECT_EQ(disabled->count(), 0);

  // Reads mark nothing.
  std::vector<char> back(4096);
  EXPECT_EQ(read(*r_, 256 * KiB, back), 0);
  EXPECT_EQ(on_raw->count(), 65536);

  // write_zeroes marks as a write does.
  EXPECT_EQ(run(r_->write_zeroes(256 * KiB, 512)), 0);
  EXPECT_EQ(on_raw->count(), 2 * 65536);
  EXPECT_EQ(on_raw->run_at(256 * KiB, 64 * KiB), std::make_pair(true, uint64_t(64 * KiB)));
  EXPECT_EQ(on_file->count(), 4096 + 512);

  // A write straight to the file marks only the file's bitmap.
  EXPECT_EQ(write(*f_, 0, data), 0);
  EXPECT_EQ(on_raw->count(), 2 * 65536);
  EXPECT_EQ(on_file->count(), 2 * 4096 + 512);

  r_->remove_bitmap("b");
  EXPECT_EQ(r_->find_bitmap("b"), nullptr);
  EXPECT_EQ(write(*r_, 0, data), 0);
  EXPECT_EQ(on_raw->count(), 2 * 65536);
}

}  // namespace
}  // namespace vstord
