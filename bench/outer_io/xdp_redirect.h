// outer_io_bench, receive case (3): the XDP program that takes plain ESP/IPv4
// off a veth before the IP stack sees it. It is written as raw eBPF
// instructions and loaded, given its one-entry XSKMAP and attached with
// bpf(2) alone (no libbpf): IPv4 protocol-50 frames, unfragmented, addressed
// to the receiver go to the AF_XDP socket at key 0; everything else (ARP,
// other protocols, fragments for the stack to reassemble) passes on. If the
// socket is gone from the map the redirect falls back to XDP_PASS too.
//
// Trust: the program is ours and the kernel's verifier checks it; it reads
// frames from the wire, so every read is bounds-checked against data_end
// first. The attachment is a bpf_link: it ends when this object closes the
// link's fd, or when the process dies, or with the interface.
#pragma once

#include <cstdint>
#include <string>

namespace outer_io {

enum class XdpMode { kDriver, kGeneric };

class XdpRedirect {
 public:
  // Creates the XSKMAP, puts xskFd (bound to ifindex, queue 0) at key 0,
  // loads the program and attaches it to ifindex in `preferred` mode: driver
  // (native) mode, else generic (SKB) mode; or generic mode only. `localAddress` is the IPv4 destination to take,
  // in network byte order. Throws std::runtime_error (with the verifier's
  // log if it refused the program), having closed what it opened.
  XdpRedirect(int ifindex, std::uint32_t localAddress, int xskFd, XdpMode preferred);
  ~XdpRedirect();  // detaches (closes the link) and closes the program and the map
  XdpRedirect(const XdpRedirect&) = delete;
  XdpRedirect& operator=(const XdpRedirect&) = delete;

  XdpMode mode() const { return mode_; }

 private:
  void closeAll() noexcept;

  int map_ = -1, program_ = -1, link_ = -1;
  XdpMode mode_ = XdpMode::kDriver;
};

const char* xdpModeName(XdpMode mode);

}  // namespace outer_io
