// The send after a transport-mode ESP seal (services/forwarder/
// transport_frame.cpp finishTransportSeal) driven with bytes: a host's
// packet framed by the transport core in a buffer laid out as a pool buffer
// is, sealed by lib/cryptodrv's AES-GCM transform (the broker's own), the
// completion handed to the send decision, and the verdict read back by hand
// here — which socket, which bytes, to where, the IP and UDP headers the
// core wrote at their RFC offsets (RFC 791, RFC 8200, RFC 768/3948) with
// their checksums computed in this file, the ESP opened by a second
// transform. Then every drop by name, and completions that lie about where
// the packet is. No socket, no ring.
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <capnp/message.h>
#include <vector>

#include "core_packets.h"
#include "core_tables.h"
#include "transport_frame.h"

namespace ipsec::forwarder {
namespace {

using Kind = TransportSend::Kind;
using core_packets::be16;
using core_packets::be32;
using core_packets::innerPacket;
using core_packets::ipv4ChecksumOk;
using core_packets::udp6ChecksumOk;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }
const char* hostA(int v) { return v == 4 ? "198.51.100.1" : "2001:db8:a::1"; }
const char* hostB(int v) { return v == 4 ? "203.0.113.1" : "2001:db8:b::1"; }

constexpr std::uint32_t kInnerAt = 512;  // where the TUN read puts a packet
constexpr std::uint16_t kNatTPort = 4500;  // the IPv4 NAT-T socket's port
constexpr std::size_t kIcv = 16;

class TransportSendCore : public core_packets::GcmCore {
 protected:
  OutboundTables tables() { return {sas_, tunnels_, natt_, ipcomp_, true, true, true}; }

  Sa& addSa(int v, std::uint32_t spi) {
    core_tables::SaValues values;
    values.index = 0;
    values.spi = spi;
    values.mode = IPSEC_MODE_TRANSPORT;
    values.src = ip(hostA(v));
    values.dst = ip(hostB(v));
    values.layout = layout_;
    EXPECT_FALSE(core_tables::installSa(sas_, values));
    return *sas_.find({0, 1});
  }

  void setNatT(const Sa& sa, std::uint16_t sport, std::uint16_t dport) {
    NatT nat;
    nat.present = true;
    nat.generation = sa.ref.generation;
    nat.type = 2;  // UDP_ENCAP_ESPINUDP
    nat.sport = sport;
    nat.dport = dport;
    natt_.set(sa.ref, nat);
  }

  void setMtu(const Sa& sa, std::uint16_t mtu) {
    capnp::MallocMessageBuilder b;
    auto p = b.initRoot<proto::SaParams>();
    p.setMtu(mtu);
    tunnels_.install(sa.ref, p.asReader());
  }

  // The packet framed at `at` by the transport core (no MTU judgement: the
  // sender may fragment), sealed as the broker seals, and the completion.
  proto::CryptoCompletion seal(Sa& sa, const std::vector<std::uint8_t>& inner, std::uint32_t at = kInnerAt) {
    std::fill(buffer_.begin(), buffer_.end(), 0xee);
    std::copy(inner.begin(), inner.end(), buffer_.begin() + at);
    framed_ = frameEspTransport(tables(), sa, nullptr, {}, buffer_, at, static_cast<std::uint32_t>(inner.size()));
    EXPECT_EQ(framed_.kind, FrameVerdict::Kind::kCrypto);
    proto::CryptoCompletion c{};
    c.op = proto::CryptoOp::kSeal;
    c.status = proto::CryptoStatus::kOk;
    c.offset = framed_.offset;
    c.length = framed_.length;
    const std::array<std::uint8_t, 8> iv{0, 0, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(sa.seqNext)};
    EXPECT_EQ(sealer_->sealWithIv(buffer_.data() + c.offset, c.length, 0, iv.data()), cryptodrv::Status::kOk);
    return c;
  }

  TransportSend send(const Sa& sa, const proto::CryptoCompletion& c) {
    return finishTransportSeal(tables(), sa, {framed_.transportHeader, kNatTPort}, buffer_, c);
  }

  // The ESP packet at esp[0, len) opened by the peer's transform: the host's
  // payload after the kept header, under the SA's SPI.
  void expectOpensTo(const std::uint8_t* esp, std::size_t len, std::uint32_t spi,
                     const std::vector<std::uint8_t>& inner, std::size_t headerLength, std::uint8_t protocol) {
    std::vector<std::uint8_t> copy(esp, esp + len);
    EXPECT_EQ(be32(copy.data()), spi);
    EXPECT_EQ(be32(copy.data() + 4), 1u);
    ASSERT_EQ(opener_->open(copy.data(), copy.size(), 0), cryptodrv::Status::kOk);
    EXPECT_EQ(copy[len - kIcv - 1], protocol);
    const std::size_t padLen = copy[len - kIcv - 2];
    const std::size_t begin = 8 + layout_.ivLength;
    ASSERT_GE(len, begin + padLen + 2 + kIcv);
    EXPECT_EQ(std::vector<std::uint8_t>(copy.begin() + static_cast<std::ptrdiff_t>(begin),
                                        copy.end() - static_cast<std::ptrdiff_t>(kIcv + 2 + padLen)),
              std::vector<std::uint8_t>(inner.begin() + static_cast<std::ptrdiff_t>(headerLength), inner.end()));
  }

  SaTable sas_;
  IpcompSas ipcomp_;
  NattPeers natt_;
  TunnelOptionsTable tunnels_;
  FrameVerdict framed_;
  std::vector<std::uint8_t> buffer_ = std::vector<std::uint8_t>(4096);
};

// ---- without NAT-T: the host's packet as it is ------------------------------------------

TEST_F(TransportSendCore, PlainIpv4GoesWholeOnTheHeaderIncludedSocketToTheHeadersDestination) {
  Sa& sa = addSa(4, 0x700);
  const auto inner = innerPacket(4, 60, 0x20, true);
  const proto::CryptoCompletion c = seal(sa, inner);
  const TransportSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kHeaderIncluded);
  EXPECT_FALSE(s.natT);
  EXPECT_EQ(s.to.address, ip(hostB(4)));
  EXPECT_EQ(s.to.port, 0);
  EXPECT_EQ(s.start, c.offset - 20);
  EXPECT_EQ(s.length, c.length + 20);
  const std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[0], 0x45);
  EXPECT_EQ(h[1], 0x20);
  EXPECT_EQ(h[6], 0x40);
  EXPECT_EQ(h[9], IPPROTO_ESP);
  EXPECT_EQ(be16(h + 2), s.length);
  EXPECT_TRUE(ipv4ChecksumOk(h));
  expectOpensTo(h + 20, s.length - 20, 0x700, inner, 20, IPPROTO_ICMP);
}

TEST_F(TransportSendCore, PlainIpv6GoesWholeOnTheHeaderIncludedSocketToTheHeadersDestination) {
  Sa& sa = addSa(6, 0x701);
  const auto inner = innerPacket(6, 100, 0x48);
  const proto::CryptoCompletion c = seal(sa, inner);
  const TransportSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kHeaderIncluded);
  EXPECT_FALSE(s.natT);
  EXPECT_EQ(s.to.address, ip(hostB(6)));
  EXPECT_EQ(s.to.port, 0);
  EXPECT_EQ(s.start, c.offset - 40);
  EXPECT_EQ(s.length, c.length + 40);
  const std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[6], IPPROTO_ESP);
  EXPECT_EQ(be16(h + 4), c.length);
  EXPECT_TRUE(std::equal(h, h + 4, inner.begin()));
  expectOpensTo(h + 40, c.length, 0x701, inner, 40, IPPROTO_ICMPV6);
}

TEST_F(TransportSendCore, PlainGoesWhereTheKeptHeaderSaysNotToTheSasDestination) {
  // As with an IPv6 routing header, whose next hop the header names.
  core_tables::SaValues values;
  values.spi = 0x703;
  values.mode = IPSEC_MODE_TRANSPORT;
  values.src = ip(hostA(6));
  values.dst = ip("2001:db8:c::1");
  values.layout = layout_;
  ASSERT_FALSE(core_tables::installSa(sas_, values));
  Sa& sa = *sas_.find({0, 1});
  const proto::CryptoCompletion c = seal(sa, innerPacket(6));
  const TransportSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kHeaderIncluded);
  EXPECT_EQ(s.to.address, ip(hostB(6)));
}

TEST_F(TransportSendCore, PlainBeyondTheSasMtuIsCutIntoFragmentsOfTheWholePacket) {
  for (const int v : {4, 6}) {
    SCOPED_TRACE(v);
    sas_ = SaTable{};
    Sa& sa = addSa(v, 0x702);
    const auto inner = innerPacket(v, 1400);
    const proto::CryptoCompletion c = seal(sa, inner);
    const std::uint32_t whole = c.length + framed_.transportHeader;
    setMtu(sa, static_cast<std::uint16_t>(whole));
    EXPECT_EQ(send(sa, c).kind, Kind::kHeaderIncluded);  // exactly the MTU fits
    setMtu(sa, static_cast<std::uint16_t>(whole - 1));
    const TransportSend s = send(sa, c);
    ASSERT_EQ(s.kind, Kind::kFragments);
    EXPECT_EQ(s.mtu, whole - 1);
    EXPECT_EQ(s.start, c.offset - framed_.transportHeader);
    EXPECT_EQ(s.length, whole);
    EXPECT_EQ(s.to.address, ip(hostB(v)));
    EXPECT_FALSE(s.natT);
  }
}

// ---- NAT-T: ESP in UDP (RFC 3948 §3.1.1) ---------------------------------------------

TEST_F(TransportSendCore, NatTOverIpv4GoesOnTheNatTSocketWithTheHostsTosTtlAndDf) {
  Sa& sa = addSa(4, 0x710);
  setNatT(sa, kNatTPort, 4501);
  auto inner = innerPacket(4, 60, 0x2c, true);
  inner[8] = 17;  // the host's TTL
  const proto::CryptoCompletion c = seal(sa, inner);
  const TransportSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kNatT);
  EXPECT_TRUE(s.natT);
  EXPECT_EQ(s.start, c.offset);  // ESP alone: the kernel writes IP and UDP
  EXPECT_EQ(s.length, c.length);
  EXPECT_EQ(s.to.address, ip(hostB(4)));
  EXPECT_EQ(s.to.port, 4501);
  EXPECT_EQ(s.tos, 0x2c);
  EXPECT_EQ(s.ttl, 17);
  EXPECT_TRUE(s.dontFragment);
  expectOpensTo(buffer_.data() + s.start, s.length, 0x710, inner, 20, IPPROTO_ICMP);
  // Without DF, the same.
  inner = innerPacket(4, 60, 0x2c, false);
  EXPECT_FALSE(send(sa, seal(sa, inner)).dontFragment);
}

TEST_F(TransportSendCore, NatTOverIpv4FromAnotherPortGetsOurIpv4AndUdpHeaderInPlaceOfTheHosts) {
  Sa& sa = addSa(4, 0x711);
  setNatT(sa, 4600, 4501);  // not the NAT-T socket's port
  auto inner = innerPacket(4, 60, 0x2c, true);
  inner[4] = 0xab;  // the host's Identification 0xab01
  inner[8] = 17;
  const std::uint16_t sum = esp::ipv4HeaderChecksum({inner.data(), 20});
  inner[10] = static_cast<std::uint8_t>(sum >> 8);
  inner[11] = static_cast<std::uint8_t>(sum);
  const proto::CryptoCompletion c = seal(sa, inner);
  const TransportSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kHeaderIncluded);
  EXPECT_TRUE(s.natT);
  EXPECT_EQ(s.to.address, ip(hostB(4)));
  EXPECT_EQ(s.to.port, 0);
  ASSERT_EQ(s.start, c.offset - 28);
  ASSERT_EQ(s.length, c.length + 28);
  const std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[0], 0x45);
  EXPECT_EQ(h[1], 0x2c);          // the host's TOS
  EXPECT_EQ(be16(h + 2), s.length);
  EXPECT_EQ(be16(h + 4), 0xab01);  // the host's Identification
  EXPECT_EQ(h[6] & 0x40, 0x40);    // and DF
  EXPECT_EQ(h[8], 17);             // and TTL
  EXPECT_EQ(h[9], IPPROTO_UDP);
  EXPECT_TRUE(ipv4ChecksumOk(h));
  EXPECT_TRUE(std::equal(h + 12, h + 16, ip(hostA(4)).bytes().begin()));
  EXPECT_TRUE(std::equal(h + 16, h + 20, ip(hostB(4)).bytes().begin()));
  EXPECT_EQ(be16(h + 20), 4600);  // UDP from the SA's source port
  EXPECT_EQ(be16(h + 22), 4501);  // to the peer's
  EXPECT_EQ(be16(h + 24), 8 + c.length);
  EXPECT_EQ(be16(h + 26), 0);  // no UDP checksum over IPv4 (RFC 3948 §2.1)
  expectOpensTo(h + 28, c.length, 0x711, inner, 20, IPPROTO_ICMP);
}

TEST_F(TransportSendCore, NatTOverIpv4BeyondTheMtuIsOurHeaderCutIntoFragments) {
  Sa& sa = addSa(4, 0x712);
  setNatT(sa, kNatTPort, 4501);
  const auto inner = innerPacket(4, 1000);
  const proto::CryptoCompletion c = seal(sa, inner);
  setMtu(sa, static_cast<std::uint16_t>(c.length + 28));
  EXPECT_EQ(send(sa, c).kind, Kind::kNatT);  // IPv4 and UDP in front: exactly the MTU
  setMtu(sa, static_cast<std::uint16_t>(c.length + 27));
  const TransportSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kFragments);
  EXPECT_TRUE(s.natT);
  EXPECT_EQ(s.mtu, c.length + 27);
  EXPECT_EQ(s.start, c.offset - 28);
  EXPECT_EQ(s.length, c.length + 28);
  EXPECT_EQ(s.to.address, ip(hostB(4)));
  const std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[9], IPPROTO_UDP);
  EXPECT_EQ(be16(h + 4), 1);  // the host's Identification: the fragments keep it
  EXPECT_EQ(be16(h + 22), 4501);
  EXPECT_TRUE(ipv4ChecksumOk(h));
}

TEST_F(TransportSendCore, NatTOverIpv6GoesOnTheNatTSocketWithTheHostsTrafficClass) {
  Sa& sa = addSa(6, 0x720);
  setNatT(sa, 4600, 4501);  // IPv6 sends from the socket's port whatever the SA's
  const auto inner = innerPacket(6, 100, 0xb8);
  const proto::CryptoCompletion c = seal(sa, inner);
  const TransportSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kNatT);
  EXPECT_TRUE(s.natT);
  EXPECT_EQ(s.start, c.offset);
  EXPECT_EQ(s.length, c.length);
  EXPECT_EQ(s.to.address, ip(hostB(6)));
  EXPECT_EQ(s.to.port, 4501);
  EXPECT_EQ(s.tos, 0xb8);
  expectOpensTo(buffer_.data() + s.start, s.length, 0x720, inner, 40, IPPROTO_ICMPV6);
}

TEST_F(TransportSendCore, NatTOverIpv6BeyondTheMtuIsOurIpv6AndUdpHeaderWithItsChecksumInFragments) {
  Sa& sa = addSa(6, 0x721);
  setNatT(sa, 4600, 4501);
  auto inner = innerPacket(6, 1300, 0xb8);
  inner[7] = 33;  // the host's hop limit
  const proto::CryptoCompletion c = seal(sa, inner);
  setMtu(sa, static_cast<std::uint16_t>(c.length + 48));
  EXPECT_EQ(send(sa, c).kind, Kind::kNatT);  // IPv6 and UDP in front: exactly the MTU
  setMtu(sa, static_cast<std::uint16_t>(c.length + 47));
  const TransportSend s = send(sa, c);
  ASSERT_EQ(s.kind, Kind::kFragments);
  EXPECT_TRUE(s.natT);
  EXPECT_EQ(s.mtu, c.length + 47);
  ASSERT_EQ(s.start, c.offset - 48);
  ASSERT_EQ(s.length, c.length + 48);
  EXPECT_EQ(s.to.address, ip(hostB(6)));
  const std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[0], 0x6b);  // traffic class 0xb8
  EXPECT_EQ(h[1] & 0xf0, 0x80);
  EXPECT_EQ(be16(h + 4), 8 + c.length);
  EXPECT_EQ(h[6], IPPROTO_UDP);
  EXPECT_EQ(h[7], 33);
  EXPECT_TRUE(std::equal(h + 8, h + 24, ip(hostA(6)).bytes().begin()));
  EXPECT_TRUE(std::equal(h + 24, h + 40, ip(hostB(6)).bytes().begin()));
  EXPECT_EQ(be16(h + 40), 4600);
  EXPECT_EQ(be16(h + 42), 4501);
  EXPECT_EQ(be16(h + 44), 8 + c.length);
  EXPECT_NE(be16(h + 46), 0);  // IPv6 has no checksum-less UDP (RFC 8200 §8.1)
  EXPECT_TRUE(udp6ChecksumOk(h, h + 40, 8 + c.length));
  expectOpensTo(h + 48, c.length, 0x721, inner, 40, IPPROTO_ICMPV6);
}

// ---- drops by name -------------------------------------------------------------------

TEST_F(TransportSendCore, ANatTSaWithoutThePortsItNeedsDropsByName) {
  Sa& sa4 = addSa(4, 0x730);
  setNatT(sa4, 0, 4501);  // our own header needs both ports
  proto::CryptoCompletion c = seal(sa4, innerPacket(4));
  EXPECT_EQ(send(sa4, c).drop, &Counters::transport_out_drop_natt);
  setNatT(sa4, kNatTPort, 0);  // nowhere to send
  EXPECT_EQ(send(sa4, c).drop, &Counters::transport_out_drop_natt);
  sas_ = SaTable{};
  Sa& sa6 = addSa(6, 0x731);
  setNatT(sa6, 4600, 0);
  c = seal(sa6, innerPacket(6));
  EXPECT_EQ(send(sa6, c).drop, &Counters::transport_out_drop_natt);
  setNatT(sa6, 0, 4501);  // fits: the socket's own port will do
  EXPECT_EQ(send(sa6, c).kind, Kind::kNatT);
}

TEST_F(TransportSendCore, NoRoomForOurHeaderInFrontOfTheEspDropsByName) {
  Sa& sa = addSa(4, 0x732);
  setNatT(sa, 4600, 4501);
  // The packet read at the least headroom ESP needs: the kept header then
  // starts the buffer, and IPv4 with UDP is 8 bytes longer than it.
  const proto::CryptoCompletion c = seal(sa, innerPacket(4), static_cast<std::uint32_t>(layout_.headroom()));
  ASSERT_EQ(c.offset, 20u);
  EXPECT_EQ(send(sa, c).drop, &Counters::transport_out_drop_natt);
}

TEST_F(TransportSendCore, AFailedSealDropsUnderTheBrokersReason) {
  Sa& sa = addSa(4, 0x733);
  proto::CryptoCompletion c = seal(sa, innerPacket(4));
  c.status = proto::CryptoStatus::kWrongDirection;
  EXPECT_EQ(send(sa, c).drop, &Counters::out_drop_wrong_direction);
  c.status = proto::CryptoStatus::kInternalError;
  EXPECT_EQ(send(sa, c).drop, &Counters::out_drop_crypto);
}

// ---- a completion that lies about where the packet is -----------------------------------

TEST_F(TransportSendCore, ACompletionThatDisagreesWithTheKeptHeaderIsDropped) {
  for (const int v : {4, 6}) {
    SCOPED_TRACE(v);
    sas_ = SaTable{};
    Sa& sa = addSa(v, 0x740);
    const proto::CryptoCompletion c = seal(sa, innerPacket(v, 40));
    ASSERT_EQ(send(sa, c).kind, Kind::kHeaderIncluded);
    auto lie = [&](auto&& change) {
      proto::CryptoCompletion bad = c;
      change(bad);
      return send(sa, bad).drop;
    };
    const auto size = static_cast<std::uint32_t>(buffer_.size());
    EXPECT_EQ(lie([&](auto& b) { b.offset = framed_.transportHeader - 1; }), &Counters::out_drop_crypto);
    EXPECT_EQ(lie([&](auto& b) { b.offset = 0; }), &Counters::out_drop_crypto);
    EXPECT_EQ(lie([&](auto& b) { b.offset = size + 100; }), &Counters::out_drop_crypto);
    EXPECT_EQ(lie([&](auto& b) { b.length = size - b.offset + 1; }), &Counters::out_drop_crypto);
    EXPECT_EQ(lie([&](auto& b) { b.length = 0xffffffffu; }), &Counters::out_drop_crypto);
    EXPECT_EQ(lie([&](auto& b) { b.length = 0; }), &Counters::out_drop_crypto);
    EXPECT_EQ(lie([&](auto& b) { b.length += 4; }), &Counters::out_drop_crypto);
    EXPECT_EQ(lie([&](auto& b) { b.offset += 4; }), &Counters::out_drop_crypto);
    EXPECT_EQ(lie([&](auto& b) { b.offset -= 4; }), &Counters::out_drop_crypto);
  }
}

TEST_F(TransportSendCore, AKeptHeaderOfTheOtherFamilyOrTooShortIsDropped) {
  Sa& sa = addSa(4, 0x741);
  const proto::CryptoCompletion c = seal(sa, innerPacket(4));
  const std::uint16_t kept = framed_.transportHeader;
  buffer_[c.offset - kept] = 0x65;  // now says IPv6
  EXPECT_EQ(send(sa, c).drop, &Counters::out_drop_crypto);
  buffer_[c.offset - kept] = 0x45;
  framed_.transportHeader = 12;  // a context shorter than any IPv4 header
  proto::CryptoCompletion shorter = c;
  EXPECT_EQ(send(sa, shorter).drop, &Counters::out_drop_crypto);
  framed_.transportHeader = kept;
  EXPECT_EQ(send(sa, c).kind, Kind::kHeaderIncluded);
}

}  // namespace
}  // namespace ipsec::forwarder
