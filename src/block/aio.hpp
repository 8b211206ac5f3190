// How file nodes reach the kernel without blocking the thread that asks:
// a shared pool of worker threads doing the blocking calls (aio=threads,
// QEMU's default), or io_uring with one ring per calling thread
// (aio=io_uring).  Every call returns bytes done or a negative errno.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>

#include "block/block.hpp"

namespace vstord {

enum class AioEngine { threads, io_uring };

// Runs fn on a worker thread and resumes the caller on its own executor.
Task<int64_t> run_in_worker(std::function<int64_t()> fn);

Task<int64_t> aio_preadv(AioEngine engine, int fd, IoVec iov, uint64_t offset);
Task<int64_t> aio_pwritev(AioEngine engine, int fd, IoVec iov, uint64_t offset, bool fua);
Task<int64_t> aio_fdatasync(AioEngine engine, int fd);

// Whether io_uring works here; the error text if not.
bool io_uring_available(std::string* why);

}  // namespace vstord
