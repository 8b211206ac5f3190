// The 'ringbuf' backend (alias 'memory'): what the frontend writes is kept
// in a ring of a power-of-two size, oldest bytes dropped first;
// ringbuf-read takes from it and ringbuf-write adds to it.

#include "chardev/backends.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace {

class RingbufImpl final : public RingbufChardev {
 public:
  RingbufImpl(const std::string& id, size_t size, bool memory)
      : RingbufChardev(id), buf_(new char[size]), size_(size), memory_(memory) {}

  std::string filename() const override { return memory_ ? "memory" : "ringbuf"; }

  void ring_write(std::string_view data) override {
    for (char c : data) {
      buf_[(start_ + count_) & (size_ - 1)] = c;
      if (count_ < size_) {
        ++count_;
      } else {
        start_ = (start_ + 1) & (size_ - 1);
        lost_ = true;  // the next read may begin inside a character
      }
    }
  }

  std::string ring_read(size_t size, bool text) override {
    size = std::min(size, count_);
    std::string out;
    out.reserve(size);
    size_t i = 0;
    auto at = [&](size_t k) {
      return static_cast<unsigned char>(buf_[(start_ + k) & (size_ - 1)]);
    };
    if (text && lost_) {
      // Data was lost: continuation bytes at the start belong to a
      // character whose first bytes are gone.
      while (i < count_ && (at(i) & 0xC0) == 0x80) ++i;
    }
    size_t end = std::min(count_, i + size);
    if (text) {
      // Stop before a character that does not fit whole within 'size' but
      // is still complete in the buffer (it is read next time).
      size_t k = end;
      size_t back = 0;
      while (k > i && back < 3 && (at(k - 1) & 0xC0) == 0x80) {
        --k;
        ++back;
      }
      if (k > i) {
        unsigned lead = at(k - 1);
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (need > back + 1 && k - 1 + need <= count_) end = k - 1;
      }
    }
    for (size_t k = i; k < end; ++k) out.push_back(static_cast<char>(at(k)));
    start_ = (start_ + end) & (size_ - 1);
    count_ -= end;
    lost_ = false;
    return out;
  }

 protected:
  void backend_write(std::string data) override { ring_write(data); }

 private:
  // Not zeroed: the pages of a large ring are only touched as it fills.
  std::unique_ptr<char[]> buf_;
  size_t size_;
  size_t start_ = 0;
  size_t count_ = 0;
  bool lost_ = false;
  bool memory_;
};

}  // namespace

std::shared_ptr<Chardev> chardev_ringbuf_new(const std::string& id,
                                             const qapi::ChardevRingbuf& opts, bool memory) {
  int64_t size = opts.size.value_or(65536);
  if (size <= 0 || (size & (size - 1)) != 0) {
    qapi::fail("size of ringbuf chardev must be power of two");
  }
  if (size > (int64_t{1} << 30)) qapi::fail("size of ringbuf chardev must be at most 1 GiB");
  return std::make_shared<RingbufImpl>(id, static_cast<size_t>(size), memory);
}

}  // namespace vstord
