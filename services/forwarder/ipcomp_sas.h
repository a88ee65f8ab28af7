// ipsec-forwarder: the IPComp SAs (RFC 3173), kept apart from the ESP/AH SA
// table because they carry no key and have no crypto session: a CPI between
// two addresses, a mode and a reqid. Installed and removed on keydb's
// messages (control.cpp), read by the packet paths — outbound to pick the CPI
// a bundle compresses under (bundle.cpp), inbound to check that a received CPI
// belongs to an SA between the ESP SA's ends (inbound_open.cpp). Also holds the
// one compressor and decompressor (their z_streams are allocated at the first
// install, never on the data path). One thread; lookups noexcept.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "esp/ip.h"
#include "ipcomp/ipcomp.h"
#include "proto/dataplane.capnp.h"
#include "tables.h"

namespace ipsec::forwarder {

struct IpcompSa {
  SaRef ref;
  std::uint16_t cpi = 0;
  std::uint8_t mode = 0;
  std::uint32_t reqid = 0;
  esp::IpAddress src, dst;
  std::uint64_t order = 0;  // install order: the newest wins a selection
};

class IpcompSas {
 public:
  static bool isInstall(proto::SaInstall::Reader msg) noexcept;
  // False for a malformed install (bad addresses, a CPI above 16 bits).
  bool install(proto::SaInstall::Reader msg);
  bool remove(SaRef ref) noexcept;
  // Outbound: the newest SA from src to dst (with that reqid unless it is 0).
  const IpcompSa* select(const esp::IpAddress& src, const esp::IpAddress& dst, std::uint32_t reqid) const noexcept;
  // Inbound: is cpi an SA between src and dst?
  bool knows(std::uint16_t cpi, const esp::IpAddress& src, const esp::IpAddress& dst) const noexcept;
  // nullptr until the first IPComp SA is installed.
  ipcomp::Compressor* compressor() noexcept { return compressor_.get(); }
  ipcomp::Decompressor* decompressor() noexcept { return decompressor_.get(); }

 private:
  std::vector<IpcompSa> sas_;
  std::uint64_t nextOrder_ = 1;
  std::unique_ptr<ipcomp::Compressor> compressor_;
  std::unique_ptr<ipcomp::Decompressor> decompressor_;
};

}  // namespace ipsec::forwarder
