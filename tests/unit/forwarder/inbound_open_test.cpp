// The forwarder's inbound packet core after the broker (services/forwarder/
// inbound_open.cpp) driven with bytes: packets built by the outbound side of
// the project (lib/esp's encapsulate, lib/ipcomp's compressor) and sealed by
// lib/cryptodrv's transform (the broker's own), opened by it as the broker
// would answer, then judged by the core in a buffer laid out as a pool buffer
// is. One transport packet is RFC 3602's own (../shared/vectors), so that not
// only our encoder meets our decoder. No socket, no ring, no process.
#include "inbound_open.h"

#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <capnp/message.h>
#include <fstream>
#include <functional>
#include <memory>
#include <vector>

#include "core_tables.h"
#include "core_packets.h"
#include "cryptodrv/driver.h"
#include "esp/esp.h"
#include "esp/transport.h"
#include "ipcomp/ipcomp.h"

namespace ipsec::forwarder {
namespace {

using core_tables::addPolicy;
using core_tables::installSa;
using Kind = OpenedVerdict::Kind;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }
esp::Prefix host(const char* s) { return {ip(s), static_cast<std::uint8_t>(ip(s).isV4() ? 32 : 128)}; }

std::vector<std::uint8_t> fromHex(const std::string& hex) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<std::uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// A drop's counter name, for failure messages.
std::string dropName(DropReason reason) {
  std::string name = "(none)";
  Counters probe;
  countDrop(probe, reason);
  probe.forEach([&](std::string_view n, std::uint64_t value) {
    if (value != 0) name = n;
  });
  return name;
}

using core_packets::kKey;

using core_packets::innerPacket;

// A pool buffer with an opened (or to-be-opened) ESP packet at espOffset.
struct Buffer {
  std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(4096);
  std::uint32_t espOffset = 0, espLength = 0;
  std::vector<std::uint8_t> at(const OpenedVerdict& v) const {
    return {bytes.begin() + v.offset, bytes.begin() + v.offset + v.length};
  }
};

constexpr std::uint32_t kInnerAt = 512;  // where a packet to frame is placed (room for headers in front)

class InboundOpen : public core_packets::GcmCore {
 protected:
  InboundTables tables() { return {sas_, spd_, ipcomp_, natt_, counters_, true}; }

  Sa& install(std::uint32_t index, std::uint32_t spi, std::uint8_t mode, const esp::IpAddress& src,
              const esp::IpAddress& dst, std::uint8_t satype = SADB_SATYPE_ESP) {
    core_tables::SaValues v;
    v.index = index;
    v.satype = satype;
    v.spi = spi;
    v.mode = mode;
    v.src = src;
    v.dst = dst;
    v.layout = satype == SADB_SATYPE_AH ? esp::EspLayout{0, 16, 4} : layout_;
    EXPECT_FALSE(installSa(sas_, v));
    return *sas_.find({index, 1});
  }

  void installIpcomp(std::uint32_t index, std::uint16_t cpi, const esp::IpAddress& src, const esp::IpAddress& dst) {
    ASSERT_TRUE(core_tables::installIpcompSa(ipcomp_, index, cpi, src, dst));
  }

  void inboundPolicy(std::uint32_t id, const char* src, const char* dst, std::initializer_list<Request> requests) {
    EXPECT_FALSE(addPolicy(spd_, {id, IPSEC_DIR_INBOUND, IPSEC_POLICY_IPSEC, host(src), host(dst), requests}));
  }

  // Seals the ESP packet framed at buf[offset, offset + length) as the broker
  // would (a fresh IV per sequence number).
  void sealAt(Buffer& b, std::size_t offset, std::size_t length, std::uint32_t seq) {
    std::array<std::uint8_t, 8> iv{0, 0, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(seq)};
    ASSERT_EQ(sealer_->sealWithIv(b.bytes.data() + offset, length, 0, iv.data()), cryptodrv::Status::kOk);
    b.espOffset = static_cast<std::uint32_t>(offset);
    b.espLength = static_cast<std::uint32_t>(length);
  }

  // A tunnel-mode ESP packet carrying `payload` with next header `next`;
  // `tamper` may change the plaintext (padding, trailer) before it is sealed.
  Buffer tunnelPacket(std::uint32_t spi, std::uint32_t seq, const std::vector<std::uint8_t>& payload,
                      std::uint8_t next, const std::function<void(std::uint8_t*, std::size_t)>& tamper = {}) {
    Buffer b;
    std::copy(payload.begin(), payload.end(), b.bytes.begin() + kInnerAt);
    const auto r = esp::encapsulate(b.bytes, kInnerAt, payload.size(), spi, seq, layout_, next);
    EXPECT_TRUE(r.ok());
    if (tamper) tamper(b.bytes.data() + r.offset, r.length);
    sealAt(b, r.offset, r.length, seq);
    return b;
  }
  Buffer tunnelPacket(std::uint32_t spi, std::uint32_t seq, const std::vector<std::uint8_t>& inner) {
    return tunnelPacket(spi, seq, inner, (inner[0] >> 4) == 4 ? esp::kNextHeaderIpv4 : esp::kNextHeaderIpv6);
  }

  // The host's IPv4 packet in transport-mode ESP, laid out as the raw IPv4
  // ESP socket delivers it: the IP header at 0, ESP behind it.
  Buffer transportPacket(std::uint32_t spi, std::uint32_t seq, const std::vector<std::uint8_t>& packet) {
    Buffer framed;
    std::copy(packet.begin(), packet.end(), framed.bytes.begin() + kInnerAt);
    const auto split = esp::transportSplit(packet);
    EXPECT_TRUE(split);
    const auto r = esp::encapsulateTransport(framed.bytes, kInnerAt, packet.size(), spi, seq, layout_, *split);
    EXPECT_TRUE(r.ok());
    sealAt(framed, r.espOffset, r.espLength, seq);
    Buffer b;
    std::copy(framed.bytes.begin() + r.headerOffset, framed.bytes.begin() + r.espOffset + r.espLength, b.bytes.begin());
    b.espOffset = static_cast<std::uint32_t>(r.espOffset - r.headerOffset);
    b.espLength = framed.espLength;
    return b;
  }

  // The broker's open, in place.
  void open(Buffer& b) {
    ASSERT_EQ(opener_->open(b.bytes.data() + b.espOffset, b.espLength, 0), cryptodrv::Status::kOk);
  }

  OpenedVerdict judge(Buffer& b, Sa& sa, const OpenedFrom& from = {}) {
    open(b);
    return judgeOpened(tables(), b.bytes, b.espOffset, b.espLength, sa, from);
  }

  SaTable sas_;
  Spd spd_;
  IpcompSas ipcomp_;
  NattPeers natt_;
  Counters counters_;
  // Tunnel ends, and the inner hosts of innerPacket(4) / innerPacket(6).
  const esp::IpAddress a4_ = ip("192.0.2.1"), b4_ = ip("192.0.2.2");
  const esp::IpAddress a6_ = ip("2001:db8:1::1"), b6_ = ip("2001:db8:1::2");
  static constexpr const char* kHostA4 = "198.51.100.1";
  static constexpr const char* kHostB4 = "203.0.113.1";
  const Request espTunnel4_{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, a4_, b4_};
};

// ---- delivered ------------------------------------------------------------------

TEST_F(InboundOpen, AnIpv4TunnelPacketIsDeliveredWhereItsInnerPacketLies) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  inboundPolicy(1, kHostA4, kHostB4, {espTunnel4_});
  Buffer b = tunnelPacket(0x100, 1, innerPacket(4));
  const OpenedVerdict v = judge(b, sa);
  ASSERT_EQ(v.kind, Kind::kDeliver) << (v.drop ? "dropped" : "");
  EXPECT_FALSE(v.transport);
  EXPECT_EQ(b.at(v), innerPacket(4));
}

TEST_F(InboundOpen, AnIpv6TunnelPacketIsDelivered) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a6_, b6_);
  inboundPolicy(1, "2001:db8:a::1", "2001:db8:b::1", {{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, a6_, b6_}});
  Buffer b = tunnelPacket(0x100, 1, innerPacket(6));
  const OpenedVerdict v = judge(b, sa);
  ASSERT_EQ(v.kind, Kind::kDeliver);
  EXPECT_EQ(b.at(v), innerPacket(6));
}

TEST_F(InboundOpen, ATransportPacketGetsItsHeaderBackAndIsDeliveredAsTransport) {
  Sa& sa = install(0, 0x200, IPSEC_MODE_TRANSPORT, ip(kHostA4), ip(kHostB4));
  inboundPolicy(1, kHostA4, kHostB4, {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}});
  Buffer b = transportPacket(0x200, 1, innerPacket(4, 40));
  const OpenedVerdict v = judge(b, sa);
  ASSERT_EQ(v.kind, Kind::kDeliver) << (v.drop == &Counters::esp_in_drop_bad_inner);
  EXPECT_TRUE(v.transport);
  EXPECT_EQ(b.at(v), innerPacket(4, 40));  // protocol, length and checksum restored
}

TEST_F(InboundOpen, AnIpv6TransportPacketGetsAHeaderFromTheSocketsAddressesAndHopLimit) {
  Sa& sa = install(0, 0x200, IPSEC_MODE_TRANSPORT, ip("2001:db8:a::1"), ip("2001:db8:b::1"));
  inboundPolicy(1, "2001:db8:a::1", "2001:db8:b::1", {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}});
  const auto packet = innerPacket(6, 16);
  const Buffer framed = transportPacket(0x200, 1, packet);
  // The raw IPv6 socket hands over ESP alone: the header comes from msg_name, pktinfo and the hop limit.
  Buffer b;
  std::copy(framed.bytes.begin() + framed.espOffset, framed.bytes.begin() + framed.espOffset + framed.espLength,
            b.bytes.begin());
  b.espLength = framed.espLength;
  OpenedFrom from;
  from.peer.address = ip("2001:db8:a::1");
  from.hopLimit = 64;
  const OpenedVerdict v = judge(b, sa, from);
  ASSERT_EQ(v.kind, Kind::kDeliver);
  EXPECT_TRUE(v.transport);
  EXPECT_EQ(b.at(v), packet);
}

TEST_F(InboundOpen, ATransportPacketInUdpGetsAFreshHeaderAndItsUdpChecksumFixed) {
  Sa& sa = install(0, 0x200, IPSEC_MODE_TRANSPORT, a4_, b4_);
  natt_.set(sa.ref, NatT{true, sa.ref.generation, 1 /* UDP_ENCAP_ESPINUDP */, 4500, 4500, 0, false, {}});
  inboundPolicy(1, "192.0.2.1", "192.0.2.2", {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}});
  // A UDP datagram between the SA's ends, its checksum as the peer computed it behind its NAT.
  std::vector<std::uint8_t> udp{0x45, 0, 0, 40, 0, 1, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
                                0x13, 0x88, 0, 53, 0, 20, 0xab, 0xcd, 'q', 'u', 'e', 'r', 'y', '-', 'd', 'n', 's', '!', '!', '!'};
  const std::uint16_t sum = esp::ipv4HeaderChecksum({udp.data(), 20});
  udp[10] = static_cast<std::uint8_t>(sum >> 8);
  udp[11] = static_cast<std::uint8_t>(sum);
  const Buffer framed = transportPacket(0x200, 1, udp);
  auto inUdp = [&](const Buffer& f) {  // the UDP socket hands over the ESP packet alone
    Buffer b;
    std::copy(f.bytes.begin() + f.espOffset, f.bytes.begin() + f.espOffset + f.espLength, b.bytes.begin());
    b.espLength = f.espLength;
    return b;
  };
  Buffer b = inUdp(framed);
  OpenedFrom from;
  from.udp = true;
  from.peer = {a4_, 4500};
  const OpenedVerdict v = judge(b, sa, from);
  ASSERT_EQ(v.kind, Kind::kDeliver);
  const auto got = b.at(v);
  ASSERT_EQ(got.size(), udp.size());
  EXPECT_TRUE(std::equal(got.begin() + 28, got.end(), udp.begin() + 28));
  EXPECT_EQ(got[26] | got[27], 0);  // no original addresses: UDP over IPv4 goes without a checksum
  EXPECT_EQ(counters_.natt_in_oa_zeroed, 1u);
  // A UDP header cut short cannot be fixed: dropped.
  udp.resize(24);
  udp[3] = 24;
  const std::uint16_t sum2 = (udp[10] = udp[11] = 0, esp::ipv4HeaderChecksum({udp.data(), 20}));
  udp[10] = static_cast<std::uint8_t>(sum2 >> 8);
  udp[11] = static_cast<std::uint8_t>(sum2);
  Buffer cut = inUdp(transportPacket(0x200, 2, udp));
  EXPECT_EQ(judge(cut, sa, from).drop, &Counters::transport_in_drop_natt);
}

TEST_F(InboundOpen, AnSaOfModeAnyCarryingAnIpPacketTakesTheTunnelPath) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_ANY, a4_, b4_);
  inboundPolicy(1, kHostA4, kHostB4, {espTunnel4_});
  Buffer b = tunnelPacket(0x100, 1, innerPacket(4));
  const OpenedVerdict v = judge(b, sa);
  ASSERT_EQ(v.kind, Kind::kDeliver);
  EXPECT_FALSE(v.transport);
  EXPECT_EQ(b.at(v), innerPacket(4));
}

// RFC 3602 §4 case 5: AES-CBC transport mode, as the RFC prints the packet on
// the wire (IPv4 header, ESP); the core must deliver the RFC's original packet.
TEST_F(InboundOpen, Rfc3602TransportPacketIsDeliveredAsTheRfcsOriginal) {
  std::ifstream in(IPSEC_ESP_KAT_FILE);
  ASSERT_TRUE(in) << IPSEC_ESP_KAT_FILE;
  const auto kat = nlohmann::json::parse(in);
  const nlohmann::json* vector = nullptr;
  for (const auto& v : kat["vectors"]) {
    if (v["id"] == "rfc3602-case5") vector = &v;
  }
  ASSERT_TRUE(vector);
  const auto key = fromHex((*vector)["key"]);
  const auto wire = fromHex((*vector)["expected_ip_packet"]);
  const auto original = fromHex((*vector)["plaintext_ip_packet"]);
  std::string error;
  auto cbc = cryptodrv::makeTransform({SADB_X_EALG_AESCBC, SADB_AALG_NONE, key, {}, false, false}, &error);
  ASSERT_TRUE(cbc) << error;
  const std::uint32_t spi = static_cast<std::uint32_t>(std::stoul((*vector)["spi"].get<std::string>(), nullptr, 16));
  const esp::IpAddress src = esp::IpAddress::v4(std::span<const std::uint8_t, 4>(wire.data() + 12, 4));
  const esp::IpAddress dst = esp::IpAddress::v4(std::span<const std::uint8_t, 4>(wire.data() + 16, 4));
  core_tables::SaValues values;
  values.spi = spi;
  values.mode = IPSEC_MODE_TRANSPORT;
  values.src = src;
  values.dst = dst;
  values.layout = {cbc->ivLength(), cbc->icvLength(), cbc->padAlign()};
  ASSERT_FALSE(installSa(sas_, values));
  Sa& sa = *sas_.find({0, 1});
  EXPECT_FALSE(addPolicy(spd_, {1, IPSEC_DIR_INBOUND, IPSEC_POLICY_IPSEC, {src, 32}, {dst, 32},
                                {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}}}));
  Buffer b;
  std::copy(wire.begin(), wire.end(), b.bytes.begin());
  b.espOffset = 20;
  b.espLength = static_cast<std::uint32_t>(wire.size() - 20);
  ASSERT_EQ(checkInboundEsp(sas_, natt_, {b.bytes.data() + 20, b.espLength}, dst, false).drop, nullptr);
  ASSERT_EQ(cbc->open(b.bytes.data() + b.espOffset, b.espLength, 0), cryptodrv::Status::kOk);
  const OpenedVerdict v = judgeOpened(tables(), b.bytes, b.espOffset, b.espLength, sa, {});
  ASSERT_EQ(v.kind, Kind::kDeliver);
  EXPECT_EQ(b.at(v), original);
}

// ---- bundles --------------------------------------------------------------------

TEST_F(InboundOpen, EspTransportInsideATunnelIsOpenedAgainThenDeliveredWithBothSas) {
  install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  install(1, 0x200, IPSEC_MODE_TRANSPORT, ip(kHostA4), ip(kHostB4));
  Sa& tunnel = *sas_.find({0, 1});  // found again: the second install may move the first
  inboundPolicy(1, kHostA4, kHostB4,
                {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}, espTunnel4_});
  // The host's packet in the transport SA's ESP, that packet in the tunnel SA's.
  const Buffer hosts = transportPacket(0x200, 1, innerPacket(4, 24));
  const std::vector<std::uint8_t> carried(hosts.bytes.begin(), hosts.bytes.begin() + hosts.espOffset + hosts.espLength);
  Buffer b = tunnelPacket(0x100, 1, carried);
  const OpenedVerdict outer = judge(b, tunnel);
  ASSERT_EQ(outer.kind, Kind::kOpenAgain);
  EXPECT_EQ(outer.length, carried.size());
  EXPECT_EQ(outer.again.dst, ip(kHostB4));
  EXPECT_EQ(outer.again.end - outer.again.espOffset, hosts.espLength);
  // The shell's second pass: the inbound check, the broker, the core again.
  Buffer& inner = b;
  inner.espOffset = outer.again.espOffset;
  inner.espLength = outer.again.end - outer.again.espOffset;
  const InboundEsp check = checkInboundEsp(sas_, natt_, {inner.bytes.data() + inner.espOffset, inner.espLength},
                                           outer.again.dst, false);
  ASSERT_EQ(check.drop, nullptr);
  OpenedFrom from;
  from.peeled = StepKind::kEspTunnel;
  from.peeledSa = tunnel.ref;
  const OpenedVerdict v = judge(inner, *check.sa, from);
  ASSERT_EQ(v.kind, Kind::kDeliver) << dropName(v.drop);
  EXPECT_TRUE(v.transport);
  EXPECT_EQ(b.at(v), innerPacket(4, 24));
  EXPECT_EQ(counters_.bundle_in_packets, 1u);
}

TEST_F(InboundOpen, TheTransportSaAloneIsRefusedWhenThePolicyWantsItsTunnel) {
  install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  Sa& transport = install(1, 0x200, IPSEC_MODE_TRANSPORT, ip(kHostA4), ip(kHostB4));
  inboundPolicy(1, kHostA4, kHostB4,
                {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}, espTunnel4_});
  Buffer b = transportPacket(0x200, 1, innerPacket(4, 24));
  const OpenedVerdict v = judge(b, transport);
  EXPECT_EQ(v.kind, Kind::kDrop);
  EXPECT_EQ(v.drop, &Counters::bundle_in_drop_missing_tunnel);
  EXPECT_TRUE(v.saDropOther);
}

TEST_F(InboundOpen, EspInsideAhIsOpenedAgainAndThenWantsTheAhSa) {
  install(0, 0x300, IPSEC_MODE_TRANSPORT, ip(kHostA4), ip(kHostB4), SADB_SATYPE_AH);
  install(1, 0x200, IPSEC_MODE_TRANSPORT, ip(kHostA4), ip(kHostB4));
  Sa& ah = *sas_.find({0, 1});  // found again: the second install may move the first
  inboundPolicy(1, kHostA4, kHostB4,
                {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}},
                 {IPPROTO_AH, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}});
  // The host's packet with ESP, as AH's verify and strip leave it, somewhere in the buffer.
  const Buffer hosts = transportPacket(0x200, 1, innerPacket(4, 24));
  const std::uint32_t length = hosts.espOffset + hosts.espLength;
  Buffer b;
  std::copy(hosts.bytes.begin(), hosts.bytes.begin() + length, b.bytes.begin() + 100);
  const OpenedVerdict afterAh = judgeAhVerified(tables(), b.bytes, 100, length, ah, false, 0);
  ASSERT_EQ(afterAh.kind, Kind::kOpenAgain);
  EXPECT_EQ(afterAh.again.espOffset, 120u);
  EXPECT_EQ(afterAh.again.end, 100 + length);
  b.espOffset = afterAh.again.espOffset;
  b.espLength = afterAh.again.end - afterAh.again.espOffset;
  Sa& esp = *checkInboundEsp(sas_, natt_, {b.bytes.data() + b.espOffset, b.espLength}, afterAh.again.dst, false).sa;
  Buffer withoutAh = b;
  OpenedFrom from;
  from.peeled = StepKind::kAhTransport;
  from.peeledSa = ah.ref;
  const OpenedVerdict v = judge(b, esp, from);
  ASSERT_EQ(v.kind, Kind::kDeliver) << dropName(v.drop);
  EXPECT_EQ(b.at(v), innerPacket(4, 24));
  EXPECT_EQ(counters_.bundle_in_packets, 1u);
  // The same ESP packet without AH in front: a layer missing.
  const OpenedVerdict alone = judge(withoutAh, esp);
  EXPECT_EQ(alone.drop, &Counters::bundle_in_drop_missing_ah);
}

TEST_F(InboundOpen, EspAfterAhToAnotherDestinationIsTheBundlesDropNotTheSas) {
  Sa& ah = install(0, 0x300, IPSEC_MODE_TRANSPORT, ip(kHostA4), ip("203.0.113.9"), SADB_SATYPE_AH);
  const Buffer hosts = transportPacket(0x200, 1, innerPacket(4, 24));
  Buffer b = hosts;
  const OpenedVerdict v = judgeAhVerified(tables(), b.bytes, 0, hosts.espOffset + hosts.espLength, ah, false, 0);
  EXPECT_EQ(v.drop, &Counters::bundle_in_drop_bad_inner);
  EXPECT_FALSE(v.saDropOther);
}

TEST_F(InboundOpen, AhAloneIsRefusedWhenThePolicyRequiresEspInside) {
  Sa& ah = install(0, 0x300, IPSEC_MODE_TRANSPORT, ip(kHostA4), ip(kHostB4), SADB_SATYPE_AH);
  inboundPolicy(1, kHostA4, kHostB4,
                {{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}},
                 {IPPROTO_AH, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}}});
  auto packet = innerPacket(4);
  EXPECT_EQ(judgeAhVerified(tables(), packet, 0, static_cast<std::uint32_t>(packet.size()), ah, false, 0).drop,
            &Counters::bundle_in_drop_missing_esp);
}

// ---- IPComp ---------------------------------------------------------------------

TEST_F(InboundOpen, IpcompInsideEspIsInflatedAndDelivered) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);  // the IPComp table is another: sa stays put
  installIpcomp(1, 0x4242, a4_, b4_);
  inboundPolicy(1, kHostA4, kHostB4,
                {{IPPROTO_COMP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_USE, 0, a4_, b4_}, espTunnel4_});
  const auto inner = innerPacket(4, 600);  // 600 bytes of 'x': compresses well
  std::vector<std::uint8_t> buf(2048);
  std::copy(inner.begin(), inner.end(), buf.begin() + kInnerAt);
  ipcomp::Compressor compressor;
  const auto c = compressor.compress(buf, kInnerAt, inner.size(), esp::kNextHeaderIpv4, 0x4242);
  ASSERT_TRUE(c.compressed());
  const std::vector<std::uint8_t> ipcompPacket(buf.begin() + c.offset, buf.begin() + c.offset + c.length);
  Buffer b = tunnelPacket(0x100, 1, ipcompPacket, ipcomp::kProtoIpcomp);
  const OpenedVerdict v = judge(b, sa);
  ASSERT_EQ(v.kind, Kind::kDeliver) << (v.drop ? "dropped" : "");
  EXPECT_EQ(b.at(v), inner);
  EXPECT_EQ(counters_.ipcomp_in_decompressed, 1u);
}

TEST_F(InboundOpen, APacketBelowTheIpcompThresholdCameUncompressedAndIsDelivered) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  installIpcomp(1, 0x4242, a4_, b4_);
  inboundPolicy(1, kHostA4, kHostB4,
                {{IPPROTO_COMP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_USE, 0, a4_, b4_}, espTunnel4_});
  auto inner = innerPacket(4, 4);
  std::vector<std::uint8_t> buf(2048);
  std::copy(inner.begin(), inner.end(), buf.begin() + kInnerAt);
  ipcomp::Compressor compressor;
  ASSERT_TRUE(compressor.compress(buf, kInnerAt, inner.size(), esp::kNextHeaderIpv4, 0x4242).sendUncompressed());
  Buffer b = tunnelPacket(0x100, 1, inner);
  const OpenedVerdict v = judge(b, sa);
  ASSERT_EQ(v.kind, Kind::kDeliver);
  EXPECT_EQ(b.at(v), inner);
  EXPECT_EQ(counters_.ipcomp_in_decompressed, 0u);
}

TEST_F(InboundOpen, IpcompUnderAnUnknownCpiIsDropped) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  installIpcomp(1, 0x4242, a4_, b4_);
  const auto inner = innerPacket(4, 600);
  std::vector<std::uint8_t> buf(2048);
  std::copy(inner.begin(), inner.end(), buf.begin() + kInnerAt);
  ipcomp::Compressor compressor;
  const auto c = compressor.compress(buf, kInnerAt, inner.size(), esp::kNextHeaderIpv4, 0x4343);
  ASSERT_TRUE(c.compressed());
  Buffer b = tunnelPacket(0x100, 1, {buf.begin() + c.offset, buf.begin() + c.offset + c.length}, ipcomp::kProtoIpcomp);
  EXPECT_EQ(judge(b, sa).drop, &Counters::ipcomp_in_drop_no_sa);
}

// ---- TFC, ECN, dummies ----------------------------------------------------------

TEST_F(InboundOpen, TfcPaddingIsCutAtTheInnerPacketsOwnLength) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  inboundPolicy(1, kHostA4, kHostB4, {espTunnel4_});
  auto padded = innerPacket(4);
  padded.resize(padded.size() + 200, 0);  // zeros after the packet, inside the encryption (RFC 4303 §2.7)
  Buffer b = tunnelPacket(0x100, 1, padded, esp::kNextHeaderIpv4);
  const OpenedVerdict v = judge(b, sa);
  ASSERT_EQ(v.kind, Kind::kDeliver);
  EXPECT_EQ(b.at(v), innerPacket(4));
  EXPECT_EQ(counters_.esp_in_tfc_stripped, 1u);
}

TEST_F(InboundOpen, CongestionMarkedOnTheOuterHeaderIsCopiedToAnEctInnerPacket) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  inboundPolicy(1, kHostA4, kHostB4, {espTunnel4_});
  Buffer b = tunnelPacket(0x100, 1, innerPacket(4, 8, 0x02));  // ECT(0)
  OpenedFrom from;
  from.tos = 0x03;  // CE
  const OpenedVerdict v = judge(b, sa, from);
  ASSERT_EQ(v.kind, Kind::kDeliver);
  const auto got = b.at(v);
  EXPECT_EQ(got[1], 0x03);
  EXPECT_EQ(esp::ipv4HeaderChecksum({got.data(), 20}), (got[10] << 8) | got[11]);  // checksum follows the mark
}

TEST_F(InboundOpen, CongestionMarkedOnTheOuterHeaderDropsANotEctInnerPacket) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  inboundPolicy(1, kHostA4, kHostB4, {espTunnel4_});
  Buffer b = tunnelPacket(0x100, 1, innerPacket(4, 8, 0x00));
  OpenedFrom from;
  from.tos = 0x03;
  const OpenedVerdict v = judge(b, sa, from);
  EXPECT_EQ(v.kind, Kind::kDrop);
  EXPECT_EQ(v.drop, &Counters::esp_in_drop_ecn);
}

TEST_F(InboundOpen, ADummyPacketIsCountedAsOneAndNotAsTheSasDrop) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  Buffer b = tunnelPacket(0x100, 1, std::vector<std::uint8_t>(32, 0xab), esp::kNextHeaderDummy);
  const OpenedVerdict v = judge(b, sa);
  EXPECT_EQ(v.kind, Kind::kDummy);
  EXPECT_EQ(v.drop, &Counters::esp_in_dummy);
}

// ---- each drop --------------------------------------------------------------------

TEST_F(InboundOpen, WrongPaddingIsBadPadding) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  // 36 + 2 bytes of trailer pad to 40 for GCM's 4-byte alignment: two pad bytes, the second made wrong.
  Buffer b = tunnelPacket(0x100, 1, innerPacket(4), esp::kNextHeaderIpv4, [&](std::uint8_t* esp, std::size_t len) {
    esp[len - layout_.icvLength - 3] ^= 0xff;
  });
  EXPECT_EQ(judge(b, sa).drop, &Counters::esp_in_drop_bad_padding);
}

TEST_F(InboundOpen, AnUpperLayerProtocolInATunnelIsBadNextHeader) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  Buffer b = tunnelPacket(0x100, 1, innerPacket(4), IPPROTO_TCP);
  EXPECT_EQ(judge(b, sa).drop, &Counters::esp_in_drop_bad_next_header);
}

TEST_F(InboundOpen, ANextHeaderThatDisagreesWithTheInnerVersionIsInnerMismatch) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  Buffer b = tunnelPacket(0x100, 1, innerPacket(6), esp::kNextHeaderIpv4);
  EXPECT_EQ(judge(b, sa).drop, &Counters::esp_in_drop_inner_mismatch);
}

TEST_F(InboundOpen, AMalformedInnerPacketIsBadInner) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  auto inner = innerPacket(4);
  inner[0] = 0x4f;  // a 60-byte header in a 36-byte packet
  Buffer b = tunnelPacket(0x100, 1, inner, esp::kNextHeaderIpv4);
  const OpenedVerdict v = judge(b, sa);
  EXPECT_EQ(v.drop, &Counters::esp_in_drop_bad_inner);
  EXPECT_TRUE(v.saDropOther);
}

TEST_F(InboundOpen, AnInnerPacketNoPolicyAsksForIsAPolicyRefusal) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  Buffer none = tunnelPacket(0x100, 1, innerPacket(4));
  EXPECT_EQ(judge(none, sa).drop, &Counters::esp_in_drop_policy);
  // A policy for this flow, but through another tunnel.
  inboundPolicy(1, kHostA4, kHostB4, {{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, a4_, ip("192.0.2.3")}});
  Buffer other = tunnelPacket(0x100, 2, innerPacket(4));
  const OpenedVerdict v = judge(other, sa);
  EXPECT_EQ(v.drop, &Counters::esp_in_drop_policy);
  EXPECT_EQ(v.flow.dst, ip(kHostB4));
}

TEST_F(InboundOpen, ATransportPacketWhosePolicyAsksOnlyForATunnelIsAPolicyRefusal) {
  Sa& sa = install(0, 0x200, IPSEC_MODE_TRANSPORT, ip(kHostA4), ip(kHostB4));
  inboundPolicy(1, kHostA4, kHostB4, {espTunnel4_});
  Buffer b = transportPacket(0x200, 1, innerPacket(4, 40));
  EXPECT_EQ(judge(b, sa).drop, &Counters::esp_in_drop_policy);
}

TEST_F(InboundOpen, ADescriptorOutsideTheBufferIsTheBrokersFault) {
  Sa& sa = install(0, 0x100, IPSEC_MODE_TUNNEL, a4_, b4_);
  std::vector<std::uint8_t> buffer(256);
  EXPECT_EQ(judgeOpened(tables(), buffer, 200, 100, sa, {}).drop, &Counters::esp_in_drop_crypto);
  EXPECT_EQ(judgeOpened(tables(), buffer, 300, 0, sa, {}).drop, &Counters::esp_in_drop_crypto);
}

}  // namespace
}  // namespace ipsec::forwarder
