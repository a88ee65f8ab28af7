// The send after an ESP tunnel seal (services/forwarder/tunnel_send.cpp
// finishTunnelSeal) driven with bytes: a host's packet in a buffer laid out
// as a pool buffer is, framed in tunnel mode by lib/esp, sealed by
// lib/cryptodrv's AES-GCM transform (the broker's own), the completion handed
// to the send decision, and the verdict read back by hand here — which
// socket, which bytes, to where, TOS and DF, the outer IP and UDP headers the
// core wrote at their RFC offsets (RFC 791, RFC 8200, RFC 768/3948) with
// their checksums computed in this file, the ESP opened by a second
// transform back to the inner packet. Then every drop by name, and
// completions that lie about where the packet is. No socket, no ring.
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <vector>

#include "core_packets.h"
#include "core_tables.h"
#include "tunnel_send.h"

namespace ipsec::forwarder {
namespace {

using Kind = TunnelSend::Kind;
using core_packets::be16;
using core_packets::be32;
using core_packets::innerPacket;
using core_packets::ipv4ChecksumOk;
using core_packets::udp6ChecksumOk;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }
const char* gwA(int v) { return v == 4 ? "192.0.2.1" : "2001:db8:1::1"; }
const char* gwB(int v) { return v == 4 ? "192.0.2.2" : "2001:db8:1::2"; }

constexpr std::uint32_t kInnerAt = 512;    // where the TUN read puts a packet
constexpr std::uint16_t kNatTPort = 4500;  // the IPv4 NAT-T socket's port
constexpr std::uint16_t kOfferedId = 0x1234;
constexpr std::size_t kIcv = 16;

class TunnelSendCore : public core_packets::GcmCore {
 protected:
  Sa& addSa(int v, std::uint32_t spi) {
    sas_ = SaTable{};
    core_tables::SaValues values;
    values.index = 0;
    values.spi = spi;
    values.mode = IPSEC_MODE_TUNNEL;
    values.src = ip(gwA(v));
    values.dst = ip(gwB(v));
    values.layout = layout_;
    EXPECT_FALSE(core_tables::installSa(sas_, values));
    nat_ = {};
    return *sas_.find({0, 1});
  }

  void setNatT(std::uint16_t sport, std::uint16_t dport) {
    nat_.present = true;
    nat_.type = 2;  // UDP_ENCAP_ESPINUDP
    nat_.sport = sport;
    nat_.dport = dport;
  }

  // The inner packet framed in tunnel mode at `at`, sealed as the broker
  // seals, and the completion.
  proto::CryptoCompletion seal(const Sa& sa, const std::vector<std::uint8_t>& inner, std::uint32_t at = kInnerAt) {
    inner_ = inner;
    std::fill(buffer_.begin(), buffer_.end(), 0xee);
    std::copy(inner.begin(), inner.end(), buffer_.begin() + at);
    const esp::EncapResult r = esp::encapsulate(buffer_, at, inner.size(), sa.spi, 1, layout_);
    EXPECT_TRUE(r.ok());
    proto::CryptoCompletion c{};
    c.op = proto::CryptoOp::kSeal;
    c.status = proto::CryptoStatus::kOk;
    c.offset = static_cast<std::uint32_t>(r.offset);
    c.length = static_cast<std::uint32_t>(r.length);
    const std::array<std::uint8_t, 8> iv{0, 0, 0, 0, 0, 0, 0, 1};
    EXPECT_EQ(sealer_->sealWithIv(buffer_.data() + c.offset, c.length, 0, iv.data()), cryptodrv::Status::kOk);
    return c;
  }

  TunnelSend send(const Sa& sa, const proto::CryptoCompletion& c) {
    const TunnelSendFacts facts{nat_.present ? &nat_ : nullptr, mtu_, tos_, outerDf_, kNatTPort, kOfferedId};
    return finishTunnelSeal(sa, facts, buffer_, c);
  }

  // The ESP packet at esp[0, len) opened by the peer's transform: the inner
  // packet, under the SA's SPI, next header IPv4 or IPv6.
  void expectOpensToInner(const std::uint8_t* esp, std::size_t len, std::uint32_t spi) {
    std::vector<std::uint8_t> copy(esp, esp + len);
    EXPECT_EQ(be32(copy.data()), spi);
    ASSERT_EQ(opener_->open(copy.data(), copy.size(), 0), cryptodrv::Status::kOk);
    EXPECT_EQ(copy[len - kIcv - 1], (inner_[0] >> 4) == 4 ? IPPROTO_IPIP : IPPROTO_IPV6);
    const std::size_t padLen = copy[len - kIcv - 2];
    const std::size_t begin = 8 + layout_.ivLength;
    ASSERT_GE(len, begin + padLen + 2 + kIcv);
    EXPECT_EQ(std::vector<std::uint8_t>(copy.begin() + static_cast<std::ptrdiff_t>(begin),
                                        copy.end() - static_cast<std::ptrdiff_t>(kIcv + 2 + padLen)),
              inner_);
  }

  // Our IPv4 header at h: the SA's addresses, the context's TOS, the offered
  // Identification, TTL 64, `protocol`, its checksum.
  void expectOurIpv4Header(const std::uint8_t* h, std::size_t length, std::uint8_t protocol, bool df) {
    EXPECT_EQ(h[0], 0x45);
    EXPECT_EQ(h[1], tos_);
    EXPECT_EQ(be16(h + 2), length);
    EXPECT_EQ(be16(h + 4), kOfferedId);
    EXPECT_EQ(be16(h + 6), df ? 0x4000 : 0);
    EXPECT_EQ(h[8], 64);
    EXPECT_EQ(h[9], protocol);
    EXPECT_TRUE(ipv4ChecksumOk(h));
    EXPECT_TRUE(std::equal(h + 12, h + 16, ip(gwA(4)).bytes().begin()));
    EXPECT_TRUE(std::equal(h + 16, h + 20, ip(gwB(4)).bytes().begin()));
  }

  SaTable sas_;
  NatT nat_;
  std::size_t mtu_ = 1500;
  std::uint8_t tos_ = 0xb8;
  bool outerDf_ = true;
  std::vector<std::uint8_t> inner_;
  std::vector<std::uint8_t> buffer_ = std::vector<std::uint8_t>(4096);
};

// ---- plain ESP --------------------------------------------------------------------------

TEST_F(TunnelSendCore, Ipv4GetsOurHeaderWithTheContextsTosDfAndTheOfferedIdOnTheHeaderIncludedSocket) {
  const Sa& sa = addSa(4, 0x800);
  const proto::CryptoCompletion c = seal(sa, innerPacket(4, 60));
  for (const bool df : {true, false}) {
    SCOPED_TRACE(df);
    outerDf_ = df;
    const TunnelSend s = send(sa, c);
    ASSERT_EQ(s.kind, Kind::kHeaderIncluded);
    EXPECT_FALSE(s.natT);
    EXPECT_TRUE(s.tookIpv4Id);
    EXPECT_EQ(s.to.address, ip(gwB(4)));
    EXPECT_EQ(s.to.port, 0);
    ASSERT_EQ(s.start, c.offset - 20);
    ASSERT_EQ(s.length, c.length + 20);
    EXPECT_EQ(s.dontFragment, df);
    expectOurIpv4Header(buffer_.data() + s.start, s.length, IPPROTO_ESP, df);
    expectOpensToInner(buffer_.data() + c.offset, c.length, 0x800);
  }
}

TEST_F(TunnelSendCore, Ipv6ThatFitsIsEspAloneOnTheRawSocketWithTheTrafficClass) {
  const Sa& sa = addSa(6, 0x801);
  const proto::CryptoCompletion c = seal(sa, innerPacket(6, 100, 0x28));
  const std::vector<std::uint8_t> before(buffer_.begin(), buffer_.begin() + c.offset);
  const TunnelSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kRawEsp);
  EXPECT_FALSE(s.natT);
  EXPECT_FALSE(s.tookIpv4Id);
  EXPECT_EQ(s.start, c.offset);
  EXPECT_EQ(s.length, c.length);
  EXPECT_EQ(s.to.address, ip(gwB(6)));
  EXPECT_EQ(s.to.port, 0);
  EXPECT_EQ(s.tos, tos_);
  EXPECT_TRUE(std::equal(before.begin(), before.end(), buffer_.begin()));  // nothing written in front
  expectOpensToInner(buffer_.data() + s.start, s.length, 0x801);
}

TEST_F(TunnelSendCore, Ipv4BeyondTheMtuIsOurHeaderWithoutDfCutIntoFragments) {
  const Sa& sa = addSa(4, 0x802);
  const proto::CryptoCompletion c = seal(sa, innerPacket(4, 1200));
  mtu_ = c.length + 20;
  EXPECT_EQ(send(sa, c).kind, Kind::kHeaderIncluded);  // exactly the MTU fits
  mtu_ = c.length + 19;
  const TunnelSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kFragments);
  EXPECT_EQ(s.mtu, c.length + 19);
  EXPECT_TRUE(s.tookIpv4Id);
  EXPECT_FALSE(s.dontFragment);  // the SA's DF policy yields to the MTU
  ASSERT_EQ(s.start, c.offset - 20);
  ASSERT_EQ(s.length, c.length + 20);
  EXPECT_EQ(s.to.address, ip(gwB(4)));
  expectOurIpv4Header(buffer_.data() + s.start, s.length, IPPROTO_ESP, false);
}

TEST_F(TunnelSendCore, Ipv6BeyondTheMtuIsOurIpv6HeaderCutIntoFragments) {
  const Sa& sa = addSa(6, 0x803);
  const proto::CryptoCompletion c = seal(sa, innerPacket(6, 1300));
  mtu_ = c.length + 40;
  EXPECT_EQ(send(sa, c).kind, Kind::kRawEsp);
  mtu_ = c.length + 39;
  const TunnelSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kFragments);
  EXPECT_EQ(s.mtu, c.length + 39);
  ASSERT_EQ(s.start, c.offset - 40);
  ASSERT_EQ(s.length, c.length + 40);
  const std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[0], 0x6b);  // version 6, traffic class 0xb8
  EXPECT_EQ(h[1] & 0xf0, 0x80);
  EXPECT_EQ(be16(h + 4), c.length);
  EXPECT_EQ(h[6], IPPROTO_ESP);
  EXPECT_EQ(h[7], 64);
  EXPECT_TRUE(std::equal(h + 8, h + 24, ip(gwA(6)).bytes().begin()));
  EXPECT_TRUE(std::equal(h + 24, h + 40, ip(gwB(6)).bytes().begin()));
  expectOpensToInner(h + 40, c.length, 0x803);
}

// ---- NAT-T: ESP in UDP (RFC 3948) ---------------------------------------------------------

TEST_F(TunnelSendCore, NatTOverIpv4FromTheSocketsPortGoesOnTheNatTSocketWithTosAndDf) {
  const Sa& sa = addSa(4, 0x810);
  setNatT(kNatTPort, 4501);
  const proto::CryptoCompletion c = seal(sa, innerPacket(4, 60));
  for (const bool df : {true, false}) {
    SCOPED_TRACE(df);
    outerDf_ = df;
    const TunnelSend s = send(sa, c);
    ASSERT_EQ(s.kind, Kind::kNatT);
    EXPECT_TRUE(s.natT);
    EXPECT_FALSE(s.tookIpv4Id);  // the kernel's Identification
    EXPECT_EQ(s.start, c.offset);
    EXPECT_EQ(s.length, c.length);
    EXPECT_EQ(s.to.address, ip(gwB(4)));
    EXPECT_EQ(s.to.port, 4501);
    EXPECT_EQ(s.tos, tos_);
    EXPECT_EQ(s.dontFragment, df);
  }
  expectOpensToInner(buffer_.data() + c.offset, c.length, 0x810);
}

TEST_F(TunnelSendCore, NatTOverIpv4FromAnotherPortGetsOurIpv4AndUdpHeader) {
  const Sa& sa = addSa(4, 0x811);
  setNatT(4600, 4501);
  const proto::CryptoCompletion c = seal(sa, innerPacket(4, 60));
  const TunnelSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kHeaderIncluded);
  EXPECT_TRUE(s.natT);
  EXPECT_TRUE(s.tookIpv4Id);
  EXPECT_EQ(s.to.address, ip(gwB(4)));
  EXPECT_EQ(s.to.port, 0);
  ASSERT_EQ(s.start, c.offset - 28);
  ASSERT_EQ(s.length, c.length + 28);
  const std::uint8_t* h = buffer_.data() + s.start;
  expectOurIpv4Header(h, s.length, IPPROTO_UDP, true);
  EXPECT_EQ(be16(h + 20), 4600);  // from the SA's source port
  EXPECT_EQ(be16(h + 22), 4501);  // to the peer's
  EXPECT_EQ(be16(h + 24), 8 + c.length);
  EXPECT_EQ(be16(h + 26), 0);  // no UDP checksum over IPv4 (RFC 3948 §2.1)
  expectOpensToInner(h + 28, c.length, 0x811);
}

TEST_F(TunnelSendCore, NatTOverIpv4BeyondTheMtuIsOurHeaderWithUdpCutIntoFragments) {
  const Sa& sa = addSa(4, 0x812);
  setNatT(kNatTPort, 4501);
  const proto::CryptoCompletion c = seal(sa, innerPacket(4, 1000));
  mtu_ = c.length + 28;
  EXPECT_EQ(send(sa, c).kind, Kind::kNatT);  // IPv4 and UDP in front: exactly the MTU
  mtu_ = c.length + 27;
  const TunnelSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kFragments);
  EXPECT_TRUE(s.natT);
  EXPECT_EQ(s.mtu, c.length + 27);
  ASSERT_EQ(s.start, c.offset - 28);
  ASSERT_EQ(s.length, c.length + 28);
  const std::uint8_t* h = buffer_.data() + s.start;
  expectOurIpv4Header(h, s.length, IPPROTO_UDP, false);
  EXPECT_EQ(be16(h + 20), kNatTPort);
  EXPECT_EQ(be16(h + 22), 4501);
}

TEST_F(TunnelSendCore, NatTOverIpv6GoesOnTheNatTSocketOrBeyondTheMtuWithOurCheckedUdpHeaderInFragments) {
  const Sa& sa = addSa(6, 0x820);
  setNatT(4600, 4501);  // IPv6 sends from the socket's port whatever the SA's
  const proto::CryptoCompletion c = seal(sa, innerPacket(6, 1300));
  mtu_ = c.length + 48;
  TunnelSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kNatT);
  EXPECT_TRUE(s.natT);
  EXPECT_EQ(s.start, c.offset);
  EXPECT_EQ(s.length, c.length);
  EXPECT_EQ(s.to.address, ip(gwB(6)));
  EXPECT_EQ(s.to.port, 4501);
  EXPECT_EQ(s.tos, tos_);
  mtu_ = c.length + 47;
  s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kFragments);
  EXPECT_TRUE(s.natT);
  ASSERT_EQ(s.start, c.offset - 48);
  ASSERT_EQ(s.length, c.length + 48);
  const std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[0], 0x6b);
  EXPECT_EQ(be16(h + 4), 8 + c.length);
  EXPECT_EQ(h[6], IPPROTO_UDP);
  EXPECT_EQ(be16(h + 40), 4600);
  EXPECT_EQ(be16(h + 42), 4501);
  EXPECT_EQ(be16(h + 44), 8 + c.length);
  EXPECT_TRUE(udp6ChecksumOk(h, h + 40, 8 + c.length));
  expectOpensToInner(h + 48, c.length, 0x820);
}

// ---- drops by name --------------------------------------------------------------------

TEST_F(TunnelSendCore, ANatTSaWithoutThePortsOurHeaderNeedsDropsByNameHavingTakenTheId) {
  const Sa& sa = addSa(4, 0x830);
  const proto::CryptoCompletion c = seal(sa, innerPacket(4));
  for (const auto& [sport, dport] : {std::pair<std::uint16_t, std::uint16_t>{0, 4501}, {kNatTPort, 0}, {4600, 0}}) {
    SCOPED_TRACE(sport);
    setNatT(sport, dport);
    const TunnelSend s = send(sa, c);
    EXPECT_EQ(s.kind, Kind::kDrop);
    EXPECT_EQ(s.drop, &Counters::pmtu_out_drop_header);
    EXPECT_TRUE(s.tookIpv4Id);  // as the shell always did: the Identification is spent
  }
}

TEST_F(TunnelSendCore, ANatTSaOverIpv6WithoutAPeerPortDropsByNameEvenWhenItFits) {
  const Sa& sa = addSa(6, 0x833);
  setNatT(4600, 0);
  const proto::CryptoCompletion c = seal(sa, innerPacket(6, 100));
  mtu_ = c.length + 48;
  const TunnelSend s = send(sa, c);
  EXPECT_EQ(s.kind, Kind::kDrop);
  EXPECT_EQ(s.drop, &Counters::pmtu_out_drop_header);
  EXPECT_FALSE(s.tookIpv4Id);
}

TEST_F(TunnelSendCore, NoRoomForOurHeaderInFrontOfTheEspDropsByName) {
  const Sa& sa = addSa(4, 0x831);
  // The inner packet read at the least headroom ESP needs: ESP starts the buffer.
  const proto::CryptoCompletion c = seal(sa, innerPacket(4), static_cast<std::uint32_t>(layout_.headroom()));
  ASSERT_EQ(c.offset, 0u);
  EXPECT_EQ(send(sa, c).drop, &Counters::pmtu_out_drop_header);
  const Sa& sa6 = addSa(6, 0x832);
  mtu_ = 1280;  // beyond it: IPv6 needs our header too
  const proto::CryptoCompletion c6 = seal(sa6, innerPacket(6, 1300), static_cast<std::uint32_t>(layout_.headroom()) + 39);
  ASSERT_EQ(c6.offset, 39u);
  EXPECT_EQ(send(sa6, c6).drop, &Counters::pmtu_out_drop_header);
}

TEST_F(TunnelSendCore, AFailedSealDropsUnderTheBrokersReason) {
  const Sa& sa = addSa(4, 0x833);
  proto::CryptoCompletion c = seal(sa, innerPacket(4));
  c.status = proto::CryptoStatus::kWrongDirection;
  EXPECT_EQ(send(sa, c).drop, &Counters::out_drop_wrong_direction);
  c.status = proto::CryptoStatus::kInternalError;
  EXPECT_EQ(send(sa, c).drop, &Counters::out_drop_crypto);
  EXPECT_FALSE(send(sa, c).tookIpv4Id);
}

// ---- a completion that lies about where the packet is -----------------------------------

TEST_F(TunnelSendCore, ACompletionOutsideTheBufferIsABadCompletionAndNothingIsWritten) {
  for (const int v : {4, 6}) {
    SCOPED_TRACE(v);
    const Sa& sa = addSa(v, 0x840);
    const proto::CryptoCompletion c = seal(sa, innerPacket(v, 40));
    ASSERT_NE(send(sa, c).kind, Kind::kDrop);
    const auto size = static_cast<std::uint32_t>(buffer_.size());
    auto lie = [&](auto&& change) {
      proto::CryptoCompletion bad = c;
      change(bad);
      std::fill(buffer_.begin(), buffer_.end(), 0xee);
      const TunnelSend s = send(sa, bad);
      EXPECT_TRUE(std::all_of(buffer_.begin(), buffer_.end(), [](std::uint8_t b) { return b == 0xee; }));
      EXPECT_FALSE(s.tookIpv4Id);
      return s.drop;
    };
    EXPECT_EQ(lie([&](auto& b) { b.offset = size + 1; }), &Counters::crypto_bad_completion);
    EXPECT_EQ(lie([&](auto& b) { b.offset = 0xffffffffu; }), &Counters::crypto_bad_completion);
    EXPECT_EQ(lie([&](auto& b) { b.length = size - b.offset + 1; }), &Counters::crypto_bad_completion);
    EXPECT_EQ(lie([&](auto& b) { b.length = 0xffffffffu; }), &Counters::crypto_bad_completion);
    EXPECT_EQ(lie([&](auto& b) { b.offset = size - 8, b.length = 9; }), &Counters::crypto_bad_completion);
    // Up to the buffer's last byte is inside it.
    proto::CryptoCompletion edge = c;
    edge.offset = size - c.length;
    EXPECT_NE(send(sa, edge).kind, Kind::kDrop);
  }
}

}  // namespace
}  // namespace ipsec::forwarder
