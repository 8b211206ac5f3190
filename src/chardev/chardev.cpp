#include "chardev/chardev.hpp"

#include "chardev/socket.hpp"
#include "qapi/error.hpp"

namespace vstord {

void Chardev::attach(ChardevFrontend* fe) {
  if (frontend_ && frontend_ != fe) qapi::fail("Device '{}' is in use", id_);
  frontend_ = fe;
}

std::vector<std::string> chardev_backends_available() {
  return {"socket"};
}

std::shared_ptr<Chardev> chardev_new(Daemon& daemon, const std::string& id,
                                     const qapi::ChardevBackend& backend, const FdContext& fds) {
  using K = qapi::ChardevBackendKind;
  switch (backend.type()) {
    case K::socket: return chardev_socket_new(daemon, id, backend.get<K::socket>().data, fds);
    default: break;
  }
  qapi::fail("chardev backend '{}' is not supported yet", qapi::enum_name(backend.type()));
}

void ChardevRegistry::add(std::shared_ptr<Chardev> chr) {
  if (chardevs_.contains(chr->id())) qapi::fail("Duplicate ID '{}' for chardev", chr->id());
  std::string id = chr->id();
  chardevs_.emplace(std::move(id), std::move(chr));
}

std::shared_ptr<Chardev> ChardevRegistry::find(const std::string& id) const {
  auto it = chardevs_.find(id);
  return it == chardevs_.end() ? nullptr : it->second;
}

void ChardevRegistry::remove(const std::string& id) {
  auto it = chardevs_.find(id);
  if (it == chardevs_.end()) return;
  it->second->close();
  chardevs_.erase(it);
}

void ChardevRegistry::close_all() {
  for (auto& [id, chr] : chardevs_) chr->close();
}

}  // namespace vstord
