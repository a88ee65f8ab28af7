// libFuzzer target: the forwarder's inbound packet core (services/forwarder/
// esp_in.cpp) on untrusted bytes, as ipsec-forwarder runs it — the check
// before the broker (SPI lookup, encapsulation, lengths, replay pre-check),
// then, for a packet that passes, a random broker answer (any status, a sane
// or changed descriptor) and the check after it (replay window update).
// Input: byte 0 picks the destination (IPv4/IPv6), whether it came in UDP, the
// descriptor's sanity and the protocol's counters; byte 1 the broker's status;
// byte 2 how many times the packet is offered; the rest is the ESP packet.
// The table is built afresh per input, so a finding reproduces from its input.
#include <linux/pfkeyv2.h>
#include <linux/udp.h>

#include <capnp/message.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "esp/esp.h"
#include "esp_in.h"

namespace {

using namespace ipsec;
using namespace ipsec::forwarder;

const esp::IpAddress kSrc4 = *esp::IpAddress::parse("192.0.2.1"), kDst4 = *esp::IpAddress::parse("192.0.2.2");
const esp::IpAddress kSrc6 = *esp::IpAddress::parse("2001:db8:1::1"), kDst6 = *esp::IpAddress::parse("2001:db8:1::2");

struct SaSpec {
  std::uint32_t spi;
  bool v6;
  esp::EspLayout layout;
  std::uint32_t window;
  bool esn;
  bool natt;
};
// SPIs 0x100..0x104: GCM v4 plain, CBC v4 in UDP, GCM v6 without a window, ESN v4, NULL-auth v6 in UDP.
constexpr SaSpec kSas[] = {
    {0x100, false, {8, 16, 4}, 64, false, false},  {0x101, false, {16, 12, 16}, 32, false, true},
    {0x102, true, {8, 16, 4}, 0, false, false},     {0x103, false, {8, 16, 4}, 128, true, false},
    {0x104, true, {0, 12, 4}, 64, false, true},
};

void install(SaTable& sas, NattPeers& natt, std::uint32_t index, const SaSpec& s) {
  capnp::MallocMessageBuilder b;
  auto m = b.initRoot<proto::SaInstall>();
  m.initSa().setIndex(index);
  m.getSa().setGeneration(1);
  auto p = m.initParams();
  const auto src = (s.v6 ? kSrc6 : kSrc4).bytes(), dst = (s.v6 ? kDst6 : kDst4).bytes();
  p.setSatype(SADB_SATYPE_ESP);
  p.setSpi(s.spi);
  p.setSrc(capnp::Data::Reader(src.data(), src.size()));
  p.setDst(capnp::Data::Reader(dst.data(), dst.size()));
  p.setIvLength(s.layout.ivLength);
  p.setIcvLength(s.layout.icvLength);
  p.setPadAlign(s.layout.padAlign);
  p.setReplayWindow(s.window);
  p.setEsn(s.esn);
  m.setSeqNext(1);
  m.setSeqLimit(1000);
  if (sas.install(m.asReader())) __builtin_trap();  // the fixture itself is wrong
  if (s.natt) natt.set({index, 1}, NatT{true, 1, UDP_ENCAP_ESPINUDP, 4500, 4500, 0, false, {}});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  SaTable sas;
  NattPeers natt;
  for (std::uint32_t i = 0; i < sizeof kSas / sizeof kSas[0]; ++i) install(sas, natt, i, kSas[i]);
  const std::uint8_t flags = data[0];
  const auto status = static_cast<proto::CryptoStatus>(data[1] % 11);
  const unsigned offers = 1 + data[2] % 3;
  const esp::IpAddress& dst = (flags & 1) ? kDst6 : kDst4;
  const bool udp = flags & 2, sane = flags & 4;
  const VerifyDrops& drops = (flags & 8) ? kAhVerifyDrops : kEspVerifyDrops;
  // The core reads a view of these bytes: kept alive (and writable, as a pool buffer is) while it does.
  std::vector<std::uint8_t> packet(data + 3, data + size);
  Counters counters;
  for (unsigned k = 0; k < offers; ++k) {
    const InboundEsp in = checkInboundEsp(sas, natt, packet, dst, udp);
    if (in.drop) {
      countDrop(counters, in.drop);
      continue;
    }
    // Passed: the SA is one of ours for this destination and encapsulation,
    // and the packet is long enough and in whole blocks for its layout.
    const auto& l = in.sa->layout;
    if (in.sa->dst != dst || packet.size() < esp::kEspHeaderLength + l.ivLength + esp::kEspTrailerLength + l.icvLength ||
        (packet.size() - esp::kEspHeaderLength - l.ivLength - l.icvLength) % l.padAlign != 0 ||
        (natt.of(*in.sa) != nullptr) != udp) {
      __builtin_trap();
    }
    const Verified v = acceptVerified(sas, in.sa->ref, status, sane, in.seq, drops);
    if (v.drop) {
      countDrop(counters, v.drop);
      continue;
    }
    // Accepted only an authenticated, sane answer; once accepted, the same
    // sequence number never passes again where there is a window.
    if (status != proto::CryptoStatus::kOk || !sane || v.sa != in.sa) __builtin_trap();
    if (v.sa->replay && !checkInboundEsp(sas, natt, packet, dst, udp).drop) __builtin_trap();
    (void)esp::decapsulate(packet, l);
  }
  return 0;
}
