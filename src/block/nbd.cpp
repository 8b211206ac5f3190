// The nbd driver: a remote NBD export as a node, through libnbd.

#include "block/block.hpp"
#include "qapi/error.hpp"

namespace vstord {

Task<std::shared_ptr<BlockNode>> open_nbd_node(NodeOpenContext&, const qapi::BlockdevOptions&) {
  qapi::fail("the nbd driver is not available yet");
  co_return nullptr;
}

}  // namespace vstord
