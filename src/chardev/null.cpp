// The 'null' backend: output is discarded, there is never input.

#include "chardev/backends.hpp"

namespace vstord {

namespace {

class NullChardev final : public Chardev {
 public:
  using Chardev::Chardev;
  std::string filename() const override { return "null"; }

 protected:
  void backend_write(std::string) override {}
};

}  // namespace

std::shared_ptr<Chardev> chardev_null_new(const std::string& id) {
  return std::make_shared<NullChardev>(id);
}

}  // namespace vstord
