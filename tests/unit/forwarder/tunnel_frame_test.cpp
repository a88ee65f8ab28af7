// The forwarder's outbound framing core for an ESP tunnel (services/forwarder/
// tunnel_frame.cpp) driven with bytes: a host's packet routed by the first
// stage (esp_out.cpp), framed by the core in a buffer laid out as a pool
// buffer is, sealed by lib/cryptodrv's transform (the broker's own), then
// opened and judged by the inbound core (inbound_open.cpp) — what a peer
// running this code would deliver. PMTU, DF, TFC and IPComp verdicts checked
// against their numbers. No socket, no ring, no process.
#include "tunnel_frame.h"

#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <capnp/message.h>
#include <memory>
#include <vector>

#include "core_tables.h"
#include "core_packets.h"
#include "cryptodrv/driver.h"
#include "esp/esp.h"
#include "esp/pmtu.h"
#include "esp_out.h"
#include "inbound_open.h"

namespace ipsec::forwarder {
namespace {

using Kind = TunnelFrame::Kind;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }
esp::Prefix host(const char* s) { return {ip(s), static_cast<std::uint8_t>(ip(s).isV4() ? 32 : 128)}; }

using core_packets::kKey;
constexpr std::uint32_t kInnerAt = 512;  // where the TUN read puts a packet (room for headers in front)

using core_packets::innerPacket;

class TunnelFrameCore : public core_packets::GcmCore {
 protected:
  // An ESP tunnel SA a -> b with outbound and inbound policies between the hosts of innerPacket(version).
  Sa& tunnel(int version, bool withIpcomp = false, std::uint8_t ipcompLevel = IPSEC_LEVEL_USE) {
    const esp::IpAddress a = version == 4 ? ip("192.0.2.1") : ip("2001:db8:1::1");
    const esp::IpAddress b = version == 4 ? ip("192.0.2.2") : ip("2001:db8:1::2");
    core_tables::SaValues v;
    v.spi = 0x100;
    v.src = a;
    v.dst = b;
    v.layout = layout_;
    EXPECT_FALSE(core_tables::installSa(sas_, v));
    const Request esp{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, a, b};
    const Request comp{IPPROTO_COMP, IPSEC_MODE_TUNNEL, ipcompLevel, 0, a, b};
    const char* hostA = version == 4 ? "198.51.100.1" : "2001:db8:a::1";
    const char* hostB = version == 4 ? "203.0.113.1" : "2001:db8:b::1";
    for (std::uint8_t dir : {IPSEC_DIR_OUTBOUND, IPSEC_DIR_INBOUND}) {
      const std::uint32_t id = dir == IPSEC_DIR_OUTBOUND ? 1 : 2;
      if (withIpcomp) {
        EXPECT_FALSE(core_tables::addPolicy(spd_, {id, dir, IPSEC_POLICY_IPSEC, host(hostA), host(hostB), {comp, esp}}));
      } else {
        EXPECT_FALSE(core_tables::addPolicy(spd_, {id, dir, IPSEC_POLICY_IPSEC, host(hostA), host(hostB), {esp}}));
      }
    }
    return *sas_.find({0, 1});
  }

  void installIpcomp(const Sa& esp) { ASSERT_TRUE(core_tables::installIpcompSa(ipcomp_, 1, 0x4242, esp.src, esp.dst)); }

  // The packet as the TUN read leaves it in a pool buffer, routed, then framed.
  TunnelFrame frame(const std::vector<std::uint8_t>& inner) {
    std::fill(buffer_.begin(), buffer_.end(), 0xee);
    std::copy(inner.begin(), inner.end(), buffer_.begin() + kInnerAt);
    const OutboundRoute r = routeOutbound(spd_, sas_, {buffer_.data() + kInnerAt, inner.size()}, true);
    EXPECT_EQ(r.kind, OutboundRoute::Kind::kEsp);
    if (r.kind != OutboundRoute::Kind::kEsp) return {};
    return frameTunnel({*r.sa, *r.policy, facts_, ipcomp_, ipcompEnabled_}, buffer_, kInnerAt,
                       static_cast<std::uint32_t>(inner.size()));
  }

  // The broker's seal of the verdict's request, the peer's open, and the inbound core's judgement.
  std::vector<std::uint8_t> sealAndOpen(const TunnelFrame& f, Sa& sa) {
    EXPECT_EQ(f.kind, Kind::kSeal);
    std::array<std::uint8_t, 8> iv{0, 0, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(f.seq)};
    EXPECT_EQ(sealer_->sealWithIv(buffer_.data() + f.offset, f.length, 0, iv.data()), cryptodrv::Status::kOk);
    EXPECT_EQ(opener_->open(buffer_.data() + f.offset, f.length, 0), cryptodrv::Status::kOk);
    const OpenedVerdict v = judgeOpened({sas_, spd_, ipcomp_, natt_, counters_, true}, buffer_, f.offset, f.length,
                                        sa, {});
    EXPECT_EQ(v.kind, OpenedVerdict::Kind::kDeliver);
    if (v.kind != OpenedVerdict::Kind::kDeliver) return {};
    return {buffer_.begin() + v.offset, buffer_.begin() + v.offset + v.length};
  }

  SaTable sas_;
  Spd spd_;
  IpcompSas ipcomp_;
  NattPeers natt_;
  Counters counters_;
  TunnelFacts facts_;  // 1500 bytes, IPv4 outer, DF copied, no TFC
  bool ipcompEnabled_ = true;
  std::vector<std::uint8_t> buffer_ = std::vector<std::uint8_t>(4096);
};

// ---- sealed -----------------------------------------------------------------------

TEST_F(TunnelFrameCore, AnIpv4PacketIsFramedSealedAndOpensToItself) {
  Sa& sa = tunnel(4);
  const auto inner = innerPacket(4, 40, 0xb8);
  const TunnelFrame f = frame(inner);
  ASSERT_EQ(f.kind, Kind::kSeal);
  EXPECT_EQ(f.seq, 1u);
  EXPECT_EQ(sa.seqNext, 1u);  // the shell counts the number as used, not the core
  EXPECT_EQ(f.outerTos, 0xb8);  // RFC 6040 normal mode: the whole byte
  EXPECT_EQ(f.length, esp::espPacketLength(layout_, inner.size()));
  EXPECT_EQ(f.ipcompEvent, nullptr);
  EXPECT_FALSE(f.tfcPadded);
  EXPECT_EQ(sealAndOpen(f, sa), inner);
}

TEST_F(TunnelFrameCore, AnIpv6PacketIsFramedSealedAndOpensToItself) {
  Sa& sa = tunnel(6);
  facts_.pathMtu = 1500;
  facts_.outerOverhead = 40;
  const auto inner = innerPacket(6, 100, 0x28);
  const TunnelFrame f = frame(inner);
  ASSERT_EQ(f.kind, Kind::kSeal);
  EXPECT_EQ(f.outerTos, 0x28);
  EXPECT_FALSE(f.outerDf);  // no DF bit in IPv6
  EXPECT_EQ(sealAndOpen(f, sa), inner);
}

TEST_F(TunnelFrameCore, TfcPadsInsideTheEncryptionAndThePeerCutsItOff) {
  Sa& sa = tunnel(4);
  facts_.tfcPad = 300;
  const auto inner = innerPacket(4, 8);
  const TunnelFrame f = frame(inner);
  ASSERT_EQ(f.kind, Kind::kSeal);
  EXPECT_TRUE(f.tfcPadded);
  EXPECT_EQ(f.length, esp::espPacketLength(layout_, 300));
  EXPECT_EQ(sealAndOpen(f, sa), inner);
}

TEST_F(TunnelFrameCore, TfcNeverPadsBeyondWhatFitsTheMtu) {
  tunnel(4);
  facts_.tfcPad = 1500;
  const TunnelFrame f = frame(innerPacket(4, 8));
  ASSERT_EQ(f.kind, Kind::kSeal);
  EXPECT_TRUE(f.tfcPadded);
  EXPECT_EQ(f.length, esp::espPacketLength(layout_, esp::maxInnerLength(layout_, 1500, 20)));
  EXPECT_LE(f.length + 20, 1500u);
}

TEST_F(TunnelFrameCore, TheOuterDfIsCopiedSetOrClearedAsTheSaSays) {
  tunnel(4);
  EXPECT_TRUE(frame(innerPacket(4, 8, 0, true)).outerDf);  // net.inet.ipsec.dfbit copy (the default)
  EXPECT_FALSE(frame(innerPacket(4, 8, 0, false)).outerDf);
  facts_.dfPolicy = static_cast<std::uint8_t>(esp::DfPolicy::kSet);
  EXPECT_TRUE(frame(innerPacket(4, 8, 0, false)).outerDf);
  facts_.dfPolicy = static_cast<std::uint8_t>(esp::DfPolicy::kClear);
  EXPECT_FALSE(frame(innerPacket(4, 8, 0, true)).outerDf);
  facts_.dfPolicy = static_cast<std::uint8_t>(esp::DfPolicy::kInherit);
  facts_.dfbit = esp::DfPolicy::kSet;
  EXPECT_TRUE(frame(innerPacket(4, 8, 0, false)).outerDf);
}

// ---- too big ---------------------------------------------------------------------

TEST_F(TunnelFrameCore, ADfPacketAboveTheSaMtuIsTooBigAndTheIcmpQuotesWhatFits) {
  tunnel(4);
  facts_.pathMtu = 1400;
  facts_.outerOverhead = 28;  // ESP in UDP
  const std::size_t fits = esp::maxInnerLength(layout_, 1400, 28);
  const TunnelFrame f = frame(innerPacket(4, fits + 1 - 28, 0, true));
  ASSERT_EQ(f.kind, Kind::kTooBig);
  EXPECT_EQ(f.drop, &Counters::pmtu_out_drop_too_big);
  EXPECT_EQ(f.mtu, fits);
  EXPECT_EQ(frame(innerPacket(4, fits - 28, 0, true)).kind, Kind::kSeal);  // one byte less fits
}

TEST_F(TunnelFrameCore, WithoutDfAPacketAboveTheMtuIsSealedToBeFragmentedWithoutOuterDf) {
  tunnel(4);
  const std::size_t fits = esp::maxInnerLength(layout_, 1500, 20);
  facts_.dfPolicy = static_cast<std::uint8_t>(esp::DfPolicy::kSet);
  const TunnelFrame f = frame(innerPacket(4, fits + 100 - 28));
  ASSERT_EQ(f.kind, Kind::kSeal);
  EXPECT_FALSE(f.outerDf);  // fragments: DF would only make the path drop them
}

TEST_F(TunnelFrameCore, AnIpv6PacketAbove1280AndTheMtuIsTooBig) {
  tunnel(6);
  facts_.pathMtu = 1300;
  facts_.outerOverhead = 40;
  const std::size_t fits = esp::maxInnerLength(layout_, 1300, 40);
  ASSERT_LT(fits, 1280u);
  const TunnelFrame big = frame(innerPacket(6, 1300 - 48));
  ASSERT_EQ(big.kind, Kind::kTooBig);
  EXPECT_EQ(big.mtu, fits);
  EXPECT_EQ(frame(innerPacket(6, 1280 - 48)).kind, Kind::kSeal);  // up to 1280 the tunnel fragments
}

// ---- IPComp ----------------------------------------------------------------------

TEST_F(TunnelFrameCore, IpcompCompressesInsideEspAndThePeerInflates) {
  Sa& sa = tunnel(4, true);
  installIpcomp(sa);
  const auto inner = innerPacket(4, 600, 0x10);  // 600 bytes of 'x': compresses well
  const TunnelFrame f = frame(inner);
  ASSERT_EQ(f.kind, Kind::kSeal);
  EXPECT_EQ(f.ipcompEvent, &Counters::ipcomp_out_compressed);
  EXPECT_EQ(f.outerTos, 0x10);  // read before IPComp replaced the header
  EXPECT_LT(f.length, esp::espPacketLength(layout_, inner.size()));
  EXPECT_EQ(sealAndOpen(f, sa), inner);
  EXPECT_EQ(counters_.ipcomp_in_decompressed, 1u);
}

TEST_F(TunnelFrameCore, APacketIpcompWouldNotShrinkGoesUncompressedAndTfcStillApplies) {
  Sa& sa = tunnel(4, true);
  installIpcomp(sa);
  facts_.tfcPad = 200;
  const auto inner = innerPacket(4, 4);
  const TunnelFrame f = frame(inner);
  ASSERT_EQ(f.kind, Kind::kSeal);
  EXPECT_EQ(f.ipcompEvent, &Counters::ipcomp_out_uncompressed);
  EXPECT_TRUE(f.tfcPadded);
  EXPECT_EQ(sealAndOpen(f, sa), inner);
}

TEST_F(TunnelFrameCore, TfcIsNotAppliedBehindIpcomp) {
  Sa& sa = tunnel(4, true);
  installIpcomp(sa);
  facts_.tfcPad = 1000;
  const TunnelFrame f = frame(innerPacket(4, 600));
  ASSERT_EQ(f.ipcompEvent, &Counters::ipcomp_out_compressed);
  EXPECT_FALSE(f.tfcPadded);
}

// ---- dropped ---------------------------------------------------------------------

TEST_F(TunnelFrameCore, EachRefusalIsNamedByItsCounter) {
  tunnel(4, true, IPSEC_LEVEL_REQUIRE);
  EXPECT_EQ(frame(innerPacket(4, 8)).drop, &Counters::ipcomp_out_drop_no_sa);  // required, none installed
  installIpcomp(*sas_.find({0, 1}));
  ipcompEnabled_ = false;
  EXPECT_EQ(frame(innerPacket(4, 8)).drop, &Counters::ipcomp_out_drop_disabled);
  ipcompEnabled_ = true;
  buffer_.resize(kInnerAt + 40);  // no tailroom for the trailer and ICV
  const TunnelFrame f = frame(innerPacket(4, 8));
  EXPECT_EQ(f.kind, Kind::kDrop);
  EXPECT_EQ(f.drop, &Counters::out_drop_no_room);
}

TEST_F(TunnelFrameCore, AnOptionalIpcompWithoutItsSaSendsPlainEsp) {
  Sa& sa = tunnel(4, true, IPSEC_LEVEL_USE);
  const auto inner = innerPacket(4, 600);
  const TunnelFrame f = frame(inner);
  ASSERT_EQ(f.kind, Kind::kSeal);
  EXPECT_EQ(f.ipcompEvent, nullptr);
  EXPECT_EQ(sealAndOpen(f, sa), inner);
}

}  // namespace
}  // namespace ipsec::forwarder
