// The ipsecd configuration file (`ipsecd --config FILE`): plain `key = value`
// lines, read once by the supervisor at start, before it creates anything.
// The text is trusted only as far as the operator who wrote it: every value is
// checked here, and any mistake is a ConfigError naming "FILE:LINE" so that
// ipsecd can refuse to start with a message the operator can act on
// (STYLE.md §6: bad configuration at start is an exception caught in main).
// The keys, their defaults and examples are documented in README.md beside
// this file; keep the two in step.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ipsec::config {

// An IPv4 or IPv6 address with a prefix length. A plain address (such as a
// local endpoint address) has the full length: 32 or 128.
struct IpPrefix {
  int family = 0;                       // AF_INET or AF_INET6
  std::array<std::uint8_t, 16> bytes{}; // network byte order; IPv4 uses the first 4
  std::uint8_t prefixLength = 0;

  std::size_t addressLength() const noexcept;  // 4 or 16
  std::string addressString() const;           // "192.0.2.1", "2001:db8::1"
  std::string toString() const;                // "192.0.2.1/24"
  bool operator==(const IpPrefix&) const = default;
};

// The uid and gid a child service runs as after it drops root.
struct ServiceIds {
  uid_t uid = 0;
  gid_t gid = 0;
  bool operator==(const ServiceIds&) const = default;
};

struct Config {
  std::string tunName = "ipsec0";
  unsigned tunMtu = 1400;
  // The TUN with IFF_VNET_HDR and the kernel's offloads (TSO/USO, checksum):
  // super-packets read and written (issue 13); off: one plain packet per syscall.
  bool tunOffload = true;
  // Plain ESP over IPv4 received through a PACKET_RX_RING instead of the raw
  // socket (esp/esp_ring.h). Off by default: the ring takes packets before
  // the IP stack, so netfilter's INPUT rules and rp_filter no longer see
  // them, and outer fragments are dropped (counted) instead of reassembled.
  bool espRing = false;
  // How plain ESP over IPv4 in tunnel mode that we framed ourselves and that
  // fits leaves: on the header-included raw socket (kRaw, the IP stack routes
  // it), or on an AF_PACKET socket to the next hop's MAC that a netlink
  // next-hop cache found (kPacket: no route lookup, netfilter OUTPUT/
  // POSTROUTING, qdisc or taps on the way). Off by default for those costs.
  enum class EspSend : std::uint8_t { kRaw, kPacket };
  EspSend espSend = EspSend::kRaw;
  std::vector<IpPrefix> tunAddresses;    // assigned to the TUN device
  std::vector<IpPrefix> tunRoutes;       // routed into the TUN device (host bits zero)
  std::vector<IpPrefix> localAddresses;  // this host's tunnel endpoints (full-length prefixes)
  std::string runtimeDir = "/run/ipsecd";
  std::optional<std::string> setkeyFile;
  unsigned cryptoWorkers = 1;
  // Forwarder threads, one per TUN queue (IFF_MULTI_QUEUE when above 1),
  // each driving the crypto workers i with i % forwarderThreads == its
  // number: cryptoWorkers must be at least this (issue 13, item 5).
  unsigned forwarderThreads = 1;
  unsigned nattPort = 4500;
  // Transport mode (RFC 4303 §3.1.1): traffic from this host to these peers is
  // routed into the TUN by a policy-routing table; the forwarder's sockets
  // carry fwmark, which the rule skips, so ESP itself never loops back.
  std::vector<IpPrefix> transportPeers;  // full-length prefixes
  std::uint32_t fwmark = 0x4950;         // non-zero
  std::uint32_t routeTable = 4950;       // not 0, 253 (default), 254 (main), 255 (local)
  ServiceIds keydb{64701, 64701};
  ServiceIds policy{64702, 64702};
  ServiceIds crypto{64703, 64703};
  ServiceIds forwarder{64704, 64704};
  std::optional<gid_t> pfkeyGroup;
  unsigned replayWindow = 64;
  unsigned restartLimit = 5;
  unsigned restartWindowSeconds = 60;
  bool debug = false;
};

// what() is "FILE:LINE: message" (or "FILE: message" when no line applies,
// e.g. the file cannot be read).
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string_view fileName, unsigned line, std::string_view message);

  const std::string& fileName() const noexcept { return fileName_; }
  unsigned line() const noexcept { return line_; }  // 0: not tied to a line
  const std::string& message() const noexcept { return message_; }

 private:
  std::string fileName_;
  unsigned line_;
  std::string message_;
};

// Parses the text of a config file. fileName is used only in error messages.
// Throws ConfigError, and nothing else short of std::bad_alloc.
Config parseConfig(std::string_view text, std::string_view fileName);

// Reads and parses a file; a file that cannot be read is a ConfigError too.
Config loadConfigFile(const std::string& path);

}  // namespace ipsec::config
