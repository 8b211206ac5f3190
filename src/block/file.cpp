// The file and host_device drivers: a regular file or a block device,
// with QEMU's image locking (OFD locks on the bytes QEMU uses, so that
// vstord, QEMU and qemu-img see each other's locks).

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <mutex>

#include "block/aio.hpp"
#include "block/block.hpp"
#include "block/io_buffer.hpp"
#include "block/range_lock.hpp"
#include "net/open.hpp"
#include "qapi/error.hpp"
#include "util/unique_fd.hpp"

namespace vstord {

namespace {

// QEMU's lock layout (block/file-posix.c): byte 100 + bit is held by
// whoever has that permission, byte 200 + bit by whoever does not share
// it.
constexpr off_t kLockPermBase = 100;
constexpr off_t kLockSharedBase = 200;
const char* const kLockNames[] = {"consistent read", "write", "write unchanged", "resize"};

int ofd_lock(int fd, off_t byte, short type) {
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  fl.l_type = type;
  return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
}

// Whether someone else holds a lock that conflicts with an exclusive one
// on byte.
bool ofd_locked_by_other(int fd, off_t byte) {
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  fl.l_type = F_WRLCK;
  if (fcntl(fd, F_OFD_GETLK, &fl) < 0) return false;
  return fl.l_type != F_UNLCK;
}

class FileNode final : public BlockNode {
 public:
  FileNode(qapi::BlockdevOptions options, std::string name)
      : BlockNode(std::move(options), std::move(name)) {}

  Task<void> open(Daemon& daemon) {
    const auto& o = options_.driver() == qapi::BlockdevDriver::file
                        ? options_.get<qapi::BlockdevDriver::file>()
                        : options_.get<qapi::BlockdevDriver::host_device>();
    path_ = o.filename;
    if (path_.empty()) {
      qapi::fail("The '{}' block driver requires a file name", driver_name());
    }
    if (o.pr_manager) qapi::fail("pr-manager is not supported");
    auto aio = o.aio.value_or(qapi::BlockdevAioOptions::threads);
    if (aio == qapi::BlockdevAioOptions::native && !cache_direct_) {
      qapi::fail(
          "aio=native was specified, but it requires cache.direct=on, which was not "
          "specified.");
    }
    // Linux AIO and io_uring both submit without a thread; io_uring is the
    // one this build uses for both.
    engine_ = aio == qapi::BlockdevAioOptions::threads ? AioEngine::threads : AioEngine::io_uring;
    if (engine_ == AioEngine::io_uring) {
      std::string why;
      if (!io_uring_available(&why)) qapi::fail("Unable to use io_uring: {}", why);
    }
    locking_ = o.locking.value_or(qapi::OnOffAuto::q_auto) != qapi::OnOffAuto::off;

    int flags = O_CLOEXEC | (cache_direct_ ? O_DIRECT : 0);
    bool auto_ro = options_.auto_read_only.value_or(false);
    if (read_only_) {
      fd_ = co_await open_path_async(daemon, path_, flags | O_RDONLY);
    } else if (auto_ro) {
      // As QEMU since 4.0: read-only until a writer attaches (set_perm),
      // so that a manager can grant writing only when it is needed.
      fd_ = co_await open_path_async(daemon, path_, flags | O_RDONLY);
      auto_read_only_ = true;
      daemon_ = &daemon;
    } else {
      fd_ = co_await open_path_async(daemon, path_, flags | O_RDWR);
    }

    struct stat st;
    if (fstat(fd_.get(), &st) < 0) qapi::fail("Could not stat '{}': {}", path_, strerror(errno));
    is_device_ = S_ISBLK(st.st_mode) || S_ISCHR(st.st_mode);
    if (options_.driver() == qapi::BlockdevDriver::host_device && !is_device_) {
      qapi::fail("'host_device' driver requires '{}' to be either a character or block device",
                 path_);
    }
    if (options_.driver() == qapi::BlockdevDriver::file && !S_ISREG(st.st_mode)) {
      qapi::fail("'file' driver requires '{}' to be a regular file", path_);
    }
    set_size(current_size());
    // Memory-backed files never wait for a disk: their I/O is a copy, done
    // at once on the calling thread instead of a hop to another thread
    // (which costs more than the copy).  Elsewhere RWF_NOWAIT tries the
    // page cache first and falls back to the engine.
    struct statfs sfs;
    memory_backed_ = !cache_direct_ && fstatfs(fd_.get(), &sfs) == 0 &&
                     (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
    nowait_reads_ = !cache_direct_ && !memory_backed_;
    if (cache_direct_) probe_dio_alignment();
    share_span_fd();
    co_return;
  }

  // ---- data path -------------------------------------------------------------
  Task<int> do_read(uint64_t offset, IoVec iov, uint32_t) override {
    if (cache_direct_ && !dio_aligned(offset, iov)) co_return co_await bounce_read(offset, iov);
    uint64_t want = 0;
    for (const auto& v : iov) want += v.iov_len;
    uint64_t done = 0;
    while (done < want) {
      int64_t r = try_inline_read(iov, offset + done);
      if (r == kNotInline) r = co_await aio_preadv(engine_, fd_.get(), iov, offset + done);
      if (r < 0) co_return int(r);
      if (r == 0) {
        // Past the end of the file (it shrank underneath us): zeroes.
        zero_tail(iov, done);
        break;
      }
      done += r;
      if (done < want && cache_direct_ && offset + done >= uint64_t(current_size())) {
        // A short O_DIRECT read at the end of the file: the rest reads as
        // zeroes.  (Short elsewhere, it goes on below.)
        zero_tail(iov, done);
        break;
      }
      if (done < want) {
        // A short read: go on with the rest (rare; copy the vector).
        std::vector<iovec> rest = skip(iov, done);
        int ret = co_await do_read(offset + done, rest, 0);
        co_return ret;
      }
    }
    co_return 0;
  }

  Task<int> do_write(uint64_t offset, IoVec iov, uint32_t flags) override {
    if (cache_direct_) co_return co_await direct_write(offset, iov, flags);
    co_return co_await plain_write(offset, iov, flags);
  }

  Task<int> plain_write(uint64_t offset, IoVec iov, uint32_t flags) {
    uint64_t want = 0;
    for (const auto& v : iov) want += v.iov_len;
    int64_t r = try_inline_write(iov, offset, flags & kReqFua);
    if (r == kNotInline) r = co_await aio_pwritev(engine_, fd_.get(), iov, offset, flags & kReqFua);
    if (r < 0) co_return int(r);
    if (uint64_t(r) < want) {
      std::vector<iovec> rest = skip(iov, r);
      co_return co_await plain_write(offset + r, rest, flags);
    }
    co_return 0;
  }

  // ---- O_DIRECT ----------------------------------------------------------------
  // cache.direct=on wants offsets and lengths aligned to the file's block
  // and buffers to its memory alignment (statx tells both).  A request
  // that is not goes through an aligned bounce buffer; an unaligned write
  // reads the blocks at its edges first and writes them back whole, alone
  // over those blocks (ranges_), so that no write in between is lost.

  void probe_dio_alignment() {
    struct statx sx {};
    if (statx(fd_.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align) {
      dio_offset_align_ = sx.stx_dio_offset_align;
      dio_mem_align_ = std::max<uint32_t>(sx.stx_dio_mem_align, alignof(std::max_align_t));
      return;
    }
    int sector = 0;
    if (is_device_ && ioctl(fd_.get(), BLKSSZGET, &sector) == 0 && sector > 0) {
      dio_offset_align_ = dio_mem_align_ = uint32_t(sector);
    }
  }

  bool dio_aligned(uint64_t offset, IoVec iov) const {
    if (offset % dio_offset_align_) return false;
    for (const auto& v : iov) {
      if (v.iov_len % dio_offset_align_ || uintptr_t(v.iov_base) % dio_mem_align_) return false;
    }
    return true;
  }
  uint64_t align_down(uint64_t n) const { return n / dio_offset_align_ * dio_offset_align_; }
  uint64_t align_up(uint64_t n) const { return align_down(n + dio_offset_align_ - 1); }

  Task<int> bounce_read(uint64_t offset, IoVec iov) {
    uint64_t start = align_down(offset), end = align_up(offset + total(iov));
    IoBuffer buf = make_io_buffer(end - start, dio_mem_align_);
    iovec v{buf.get(), size_t(end - start)};
    int r = co_await do_read(start, IoVec(&v, 1), 0);
    if (r < 0) co_return r;
    const uint8_t* from = buf.get() + (offset - start);
    for (const auto& d : iov) {
      std::memcpy(d.iov_base, from, d.iov_len);
      from += d.iov_len;
    }
    co_return 0;
  }

  Task<int> direct_write(uint64_t offset, IoVec iov, uint32_t flags) {
    uint64_t len = total(iov);
    uint64_t start = align_down(offset), end = align_up(offset + len);
    bool partial = start != offset || end != offset + len;
    RangeLock::Hold hold = co_await ranges_.acquire(start, end, partial);
    if (!partial && dio_aligned(offset, iov)) co_return co_await plain_write(offset, iov, flags);
    IoBuffer buf = make_io_buffer(end - start, dio_mem_align_);
    uint64_t block = dio_offset_align_;
    if (offset != start) {
      iovec head{buf.get(), size_t(block)};
      int r = co_await do_read(start, IoVec(&head, 1), 0);
      if (r < 0) co_return r;
    }
    if (offset + len != end && !(end - block == start && offset != start)) {
      iovec tail{buf.get() + (end - block - start), size_t(block)};
      int r = co_await do_read(end - block, IoVec(&tail, 1), 0);
      if (r < 0) co_return r;
    }
    uint8_t* to = buf.get() + (offset - start);
    for (const auto& v : iov) {
      std::memcpy(to, v.iov_base, v.iov_len);
      to += v.iov_len;
    }
    // Whole blocks past the end of a file whose size is not a multiple of
    // the block would make it longer: cut it back to what was written.
    int64_t size_before = current_size();
    iovec whole{buf.get(), size_t(end - start)};
    int r = co_await plain_write(start, IoVec(&whole, 1), flags);
    uint64_t keep = std::max<uint64_t>(uint64_t(size_before), offset + len);
    if (r == 0 && !is_device_ && end > keep && ftruncate(fd_.get(), off_t(keep)) < 0) {
      co_return -errno;
    }
    co_return r;
  }

  // Zeroing and discarding change whole ranges: they wait for a
  // read-modify-write over them, which would write stale bytes back.
  Task<RangeLock::Hold> hold_for_direct(uint64_t offset, uint64_t bytes) {
    RangeLock::Hold hold;
    if (cache_direct_)
      hold = co_await ranges_.acquire(align_down(offset), align_up(offset + bytes), false);
    co_return hold;
  }

  Task<int> do_flush() override {
    int64_t r = co_await aio_fdatasync(engine_, fd_.get());
    co_return r < 0 ? int(r) : 0;
  }

  Task<int> do_discard(uint64_t offset, uint64_t bytes) override {
    RangeLock::Hold hold = co_await hold_for_direct(offset, bytes);
    forget_extent();
    int fd = fd_.get();
    bool dev = is_device_;
    // A named job: GCC 12 destroys temporaries inside co_await twice.
    std::function<int64_t()> job = [=]() -> int64_t {
      if (dev) {
        uint64_t range[2] = {offset, bytes};
        return ioctl(fd, BLKDISCARD, range) < 0 ? -errno : 0;
      }
      return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(offset),
                       off_t(bytes)) < 0
                 ? -errno
                 : 0;
    };
    int64_t r = co_await run_in_worker(std::move(job));
    // Discard is advisory: a file system without hole punching is fine.
    co_return (r == -EOPNOTSUPP || r == -ENOTSUP) ? 0 : int(r);
  }

  Task<int> do_write_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
    RangeLock::Hold hold = co_await hold_for_direct(offset, bytes);
    forget_extent();
    int fd = fd_.get();
    bool dev = is_device_;
    bool unmap = flags & kReqMayUnmap;
    // A named job: GCC 12 destroys temporaries inside co_await twice.
    std::function<int64_t()> job = [=]() -> int64_t {
      if (dev) {
        uint64_t range[2] = {offset, bytes};
        return ioctl(fd, BLKZEROOUT, range) < 0 ? -errno : 0;
      }
      if (unmap && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(offset),
                             off_t(bytes)) == 0) {
        return 0;
      }
      if (fallocate(fd, FALLOC_FL_ZERO_RANGE, off_t(offset), off_t(bytes)) == 0) return 0;
      // tmpfs has no ZERO_RANGE: punch the hole, then allocate it again.
      if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(offset), off_t(bytes)) ==
          0) {
        // Allocating again is best effort: the range reads zeroes either way.
        if (!unmap) (void)fallocate(fd, FALLOC_FL_KEEP_SIZE, off_t(offset), off_t(bytes));
        return 0;
      }
      return -ENOTSUP;
    };
    int64_t r = co_await run_in_worker(std::move(job));
    // The fallback writes zeroes through do_write, which takes its own
    // range.
    hold.release();
    if (r == -ENOTSUP || r == -EOPNOTSUPP || r == -EINVAL) {
      co_return co_await BlockNode::do_write_zeroes(offset, bytes, flags);
    }
    if (r == 0 && (flags & kReqFua)) co_return co_await do_flush();
    co_return int(r);
  }

  Task<int> do_cache(uint64_t offset, uint64_t bytes) override {
    int fd = fd_.get();
    // A named job: GCC 12 destroys temporaries inside co_await twice.
    std::function<int64_t()> job = [=]() -> int64_t {
      int r = posix_fadvise(fd, off_t(offset), off_t(bytes), POSIX_FADV_WILLNEED);
      return -r;
    };
    co_return int(co_await run_in_worker(std::move(job)));
  }

  Task<BlockStatus> do_block_status(uint64_t offset, uint64_t bytes) override {
    // SEEK_DATA / SEEK_HOLE answer from the file system's metadata.
    BlockStatus st{kStatusData | kStatusAllocated, bytes, 1};
    if (is_device_) co_return st;
    {
      // SEEK_HOLE walks the file's pages up to the next hole: on a big
      // fully written file that is a millisecond per call.  The last data
      // extent found is remembered (writes cannot shrink it; discards and
      // zeroing forget it), as QEMU's block-status cache does.
      std::lock_guard lock(extent_lock_);
      if (offset >= data_start_ && offset < data_end_) {
        st.bytes = std::min<uint64_t>(bytes, data_end_ - offset);
        co_return st;
      }
    }
    off_t data = lseek(fd_.get(), off_t(offset), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) {  // no data after offset: a hole to the end
        st.flags = kStatusZero | kStatusAllocated;
      }
      co_return st;
    }
    if (uint64_t(data) > offset) {
      st.flags = kStatusZero | kStatusAllocated;
      st.bytes = std::min<uint64_t>(bytes, data - offset);
      co_return st;
    }
    off_t hole = lseek(fd_.get(), off_t(offset), SEEK_HOLE);
    if (hole > off_t(offset)) {
      st.bytes = std::min<uint64_t>(bytes, hole - offset);
      std::lock_guard lock(extent_lock_);
      data_start_ = offset;
      data_end_ = uint64_t(hole);
    }
    co_return st;
  }

  Task<int> do_truncate(int64_t size) override {
    forget_extent();
    if (is_device_) {
      if (size > current_size()) co_return -EFBIG;
      co_return 0;
    }
    int fd = fd_.get();
    // A named job: GCC 12 destroys temporaries inside co_await twice.
    std::function<int64_t()> job = [=]() -> int64_t {
      return ftruncate(fd, off_t(size)) < 0 ? -errno : 0;
    };
    co_return int(co_await run_in_worker(std::move(job)));
  }

  // ---- properties ------------------------------------------------------------
  bool can_discard() const override { return discard_unmap_; }
  bool can_write_zeroes_fast() const override { return !is_device_; }
  uint32_t request_alignment() const override { return cache_direct_ ? dio_offset_align_ : 1; }
  std::string filename() const override { return path_; }
  qapi::Json json_filename() const override {
    return qapi::Json{{"driver", driver_name()}, {"filename", path_}};
  }
  bool has_dirty_flag() const override { return true; }
  std::optional<MemorySpan> memory_span(uint64_t offset, uint64_t) const override {
    auto fd = span_fd_.load(std::memory_order_acquire);
    if (!fd) return std::nullopt;
    return MemorySpan{std::move(fd), offset};
  }
  std::optional<int64_t> allocated_bytes() const override {
    struct stat st;
    if (fstat(fd_.get(), &st) < 0) return std::nullopt;
    return int64_t(st.st_blocks) * 512;
  }

  void set_perm(uint32_t perm, uint32_t shared) override {
    if (auto_read_only_ && fd_) reopen_for(perm);
    if (!locking_ || !fd_) return;
    uint32_t unshared = perm::all & ~shared;
    for (int bit = 0; bit < 4; ++bit) {
      uint32_t p = 1u << bit;
      if ((perm & p) && ofd_locked_by_other(fd_.get(), kLockSharedBase + bit)) {
        qapi::Error e(qapi::ErrorClass::GenericError,
                      fmt::format("Failed to get \"{}\" lock", kLockNames[bit]),
                      fmt::format("Is another process using the image [{}]?", path_));
        throw e;
      }
      if ((unshared & p) && ofd_locked_by_other(fd_.get(), kLockPermBase + bit)) {
        qapi::Error e(qapi::ErrorClass::GenericError,
                      fmt::format("Failed to get shared \"{}\" lock", kLockNames[bit]),
                      fmt::format("Is another process using the image [{}]?", path_));
        throw e;
      }
    }
    for (int bit = 0; bit < 4; ++bit) {
      uint32_t p = 1u << bit;
      ofd_lock(fd_.get(), kLockPermBase + bit, (perm & p) ? F_RDLCK : F_UNLCK);
      ofd_lock(fd_.get(), kLockSharedBase + bit, (unshared & p) ? F_RDLCK : F_UNLCK);
    }
  }

  // auto-read-only: the file is open read-write exactly while a user
  // needs to write.  The new descriptor takes the old one's number
  // (dup3), so requests in flight on other threads never see a closed
  // number.  Throws qapi::Error when writing cannot be had.
  void reopen_for(uint32_t perm) {
    bool want_write = perm & (perm::write | perm::write_unchanged);
    if (want_write == fd_writable_) return;
    int flags = O_CLOEXEC | (want_write ? O_RDWR : O_RDONLY) | (cache_direct_ ? O_DIRECT : 0);
    UniqueFd fd;
    try {
      fd = open_path(*daemon_, path_, flags);
    } catch (const qapi::Error&) {
      if (want_write) throw;
      return;  // staying read-write is harmless
    }
    if (dup3(fd.get(), fd_.get(), O_CLOEXEC) < 0) {
      qapi::fail("Could not reopen '{}': {}", path_, strerror(errno));
    }
    fd_writable_ = want_write;
    share_span_fd();
  }

  void close() override {
    span_fd_.store(nullptr, std::memory_order_release);
    fd_.reset();
  }

 private:
  int64_t current_size() const {
    if (is_device_) {
      uint64_t bytes = 0;
      if (ioctl(fd_.get(), BLKGETSIZE64, &bytes) == 0) return int64_t(bytes);
      off_t end = lseek(fd_.get(), 0, SEEK_END);
      return end < 0 ? 0 : end;
    }
    struct stat st;
    return fstat(fd_.get(), &st) == 0 ? st.st_size : 0;
  }

  static std::vector<iovec> skip(IoVec iov, uint64_t n) {
    std::vector<iovec> rest;
    for (const auto& v : iov) {
      if (n >= v.iov_len) {
        n -= v.iov_len;
        continue;
      }
      rest.push_back({static_cast<char*>(v.iov_base) + n, v.iov_len - n});
      n = 0;
    }
    return rest;
  }

  static void zero_tail(IoVec iov, uint64_t from) {
    for (const auto& v : iov) {
      if (from >= v.iov_len) {
        from -= v.iov_len;
        continue;
      }
      std::memset(static_cast<char*>(v.iov_base) + from, 0, v.iov_len - from);
      from = 0;
    }
  }

  static constexpr int64_t kNotInline = INT64_MIN;

  // Memory spans hand out their own duplicate of the fd, so that replies
  // queued with it keep it open across a reopen or close of the node.
  void share_span_fd() {
    std::shared_ptr<const UniqueFd> fd;
    if (memory_backed_) {
      int dup = ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0);
      if (dup >= 0) fd = std::make_shared<const UniqueFd>(dup);
    }
    span_fd_.store(std::move(fd), std::memory_order_release);
  }

  void forget_extent() {
    std::lock_guard lock(extent_lock_);
    data_start_ = data_end_ = 0;
  }

  // Bytes read, -errno, or kNotInline when the engine must do it.
  // Copies this large go to a worker even from memory, so that one
  // session's copies and socket writes use two cores.
  static constexpr size_t kInlineMax = 128 * 1024;

  static size_t total(IoVec iov) {
    size_t n = 0;
    for (const auto& v : iov) n += v.iov_len;
    return n;
  }

  int64_t try_inline_read(IoVec iov, uint64_t offset) {
    if (!memory_backed_ && !nowait_reads_.load(std::memory_order_relaxed)) return kNotInline;
    if (memory_backed_ && total(iov) > kInlineMax) return kNotInline;
    ssize_t r = ::preadv2(fd_.get(), iov.data(), int(iov.size()), off_t(offset),
                          memory_backed_ ? 0 : RWF_NOWAIT);
    if (r >= 0) return r;
    if (errno == EOPNOTSUPP) nowait_reads_ = false;
    if (errno == EAGAIN || errno == EOPNOTSUPP || errno == EINTR) return kNotInline;
    return -errno;
  }

  int64_t try_inline_write(IoVec iov, uint64_t offset, bool fua) {
    if (!memory_backed_ || total(iov) > kInlineMax) return kNotInline;
    ssize_t r =
        ::pwritev2(fd_.get(), iov.data(), int(iov.size()), off_t(offset), fua ? RWF_DSYNC : 0);
    if (r >= 0) return r;
    return errno == EINTR ? kNotInline : -errno;
  }

  std::string path_;
  UniqueFd fd_;
  bool memory_backed_ = false;
  // O_DIRECT's alignment of offsets and lengths, and of buffers.
  uint32_t dio_offset_align_ = 4096;
  uint32_t dio_mem_align_ = 4096;
  RangeLock ranges_;  // writes in flight, with cache.direct=on
  std::atomic<std::shared_ptr<const UniqueFd>> span_fd_;
  // Guards the remembered data extent [data_start_, data_end_).
  std::mutex extent_lock_;
  uint64_t data_start_ = 0, data_end_ = 0;
  std::atomic<bool> nowait_reads_{false};
  AioEngine engine_ = AioEngine::threads;
  bool locking_ = true;
  bool is_device_ = false;
  bool auto_read_only_ = false;  // read-write only while a writer needs it
  bool fd_writable_ = false;     // with auto_read_only_: fd_ is O_RDWR
  Daemon* daemon_ = nullptr;
};

}  // namespace

Task<std::shared_ptr<BlockNode>> open_file_node(NodeOpenContext& ctx,
                                                const qapi::BlockdevOptions& opts) {
  auto node = std::make_shared<FileNode>(opts, ctx.name);
  co_await node->open(ctx.daemon);
  co_return node;
}

}  // namespace vstord
