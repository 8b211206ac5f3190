// Buffers for data on its way to or from a node, aligned to a page so
// that O_DIRECT files (cache.direct=on) take them as they are.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace vstord {

inline constexpr size_t kIoBufferAlign = 4096;

struct IoBufferFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using IoBuffer = std::unique_ptr<uint8_t[], IoBufferFree>;

// A buffer of at least one byte (so that zero-length requests have an
// address too), aligned to kIoBufferAlign.  Throws std::bad_alloc.
inline IoBuffer make_io_buffer(size_t bytes, size_t align = kIoBufferAlign) {
  size_t size = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
  void* p = std::aligned_alloc(align, size);
  if (!p) throw std::bad_alloc();
  return IoBuffer(static_cast<uint8_t*>(p));
}

}  // namespace vstord
