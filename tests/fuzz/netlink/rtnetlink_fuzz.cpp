// libFuzzer target: netlink::parseDatagram on arbitrary datagrams, as the
// forwarder's next-hop cache receives them on its NETLINK_ROUTE socket. The
// parser must never read outside the datagram, count at most one bad
// message per message, and report only what it parsed whole.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "netlink/rtnetlink.h"

namespace {
struct Counting {
  unsigned reported = 0;
  void route(const ipsec::netlink::Header&, const ipsec::netlink::Route&) { ++reported; }
  void neighbour(const ipsec::netlink::Header&, const ipsec::netlink::Neighbour& n) {
    if (n.ifindex == 0) std::abort();  // refused as bad, never reported
    ++reported;
  }
  void error(const ipsec::netlink::Header&, int e) {
    if (e <= 0) std::abort();  // a positive errno only
    ++reported;
  }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::vector<std::uint8_t> datagram(data, data + size);  // exactly the bytes: ASan sees any overread
  Counting seen;
  const auto c = ipsec::netlink::parseDatagram({datagram.data(), datagram.size()}, seen);
  if (c.bad > c.messages || seen.reported + c.bad > c.messages) std::abort();
  return 0;
}
