// Known answers for the forwarder's outbound cores made by an independent
// implementation: scapy (scapy.layers.ipsec) sealed and signed each inner
// packet of vectors/sealed_vectors.json under a fixed key, SPI, sequence
// number and IV (vectors/make_sealed_vectors.py regenerates them; this test
// does not need scapy). Here the same inner packet goes as the TUN read leaves
// it through routeOutbound and the core the route names (tunnel_frame.cpp,
// transport_frame.cpp, bundle_frame.cpp with ah_sign.cpp), is sealed by
// lib/cryptodrv's AES-GCM transform with the vector's IV or signed by its
// HMAC-SHA-256 AH transform (the broker's own), and gets its outer header as
// the shell writes it; the packet must be scapy's to the byte. The outer
// IPv4 Identification is the shell's counter: the test gives ours and scapy
// the same one (0x1234), so nothing is normalised. No socket, no ring.
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ah_sign.h"
#include "bundle_frame.h"
#include "core_tables.h"
#include "cryptodrv/ah_transform.h"
#include "cryptodrv/driver.h"
#include "esp/pmtu.h"
#include "esp_out.h"
#include "transport_frame.h"
#include "tunnel_frame.h"
#include "tunnel_send.h"

namespace ipsec::forwarder {
namespace {

using Kind = FrameVerdict::Kind;

constexpr std::uint32_t kInnerAt = 512;      // where the TUN read puts a packet
constexpr std::uint16_t kOuterIpId = 0x1234;  // the shell's Identification counter, given to scapy too

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }
esp::Prefix host(const char* s) { return {ip(s), static_cast<std::uint8_t>(ip(s).isV4() ? 32 : 128)}; }
const char* hostA(int v) { return v == 4 ? "198.51.100.1" : "2001:db8:a::1"; }
const char* hostB(int v) { return v == 4 ? "203.0.113.1" : "2001:db8:b::1"; }
const char* gwA(int v) { return v == 4 ? "192.0.2.1" : "2001:db8:1::1"; }
const char* gwB(int v) { return v == 4 ? "192.0.2.2" : "2001:db8:1::2"; }

std::vector<std::uint8_t> fromHex(const std::string& hex) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// One vector of the file, its hex turned into bytes.
struct SealedVector {
  std::vector<std::uint8_t> key, iv, inner, outer;
  std::uint32_t spi = 0;
  std::uint64_t seq = 0;
};

SealedVector loadVector(const std::string& name) {
  std::ifstream in(IPSEC_SEALED_VECTORS_FILE);
  EXPECT_TRUE(in) << IPSEC_SEALED_VECTORS_FILE;
  const auto file = nlohmann::json::parse(in, nullptr, false);
  if (file.is_discarded()) {
    ADD_FAILURE() << IPSEC_SEALED_VECTORS_FILE << " is not JSON";
    return {};
  }
  for (const auto& v : file["vectors"]) {
    if (v["name"] != name) continue;
    return {fromHex(v["key"]), fromHex(v["iv"]), fromHex(v["inner"]), fromHex(v["outer"]), v["spi"], v["seq"]};
  }
  ADD_FAILURE() << "no vector " << name << " in " << IPSEC_SEALED_VECTORS_FILE;
  return {};
}

std::string toHex(const std::vector<std::uint8_t>& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (const std::uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 0xf];
  }
  return out;
}

// Our packet against scapy's, compared as hex so that a failure prints both
// readably, with where they first differ.
void expectScapysPacket(const std::vector<std::uint8_t>& ours, const std::vector<std::uint8_t>& scapys) {
  const auto at = std::mismatch(ours.begin(), ours.end(), scapys.begin(), scapys.end());
  EXPECT_EQ(toHex(ours), toHex(scapys)) << "lengths " << ours.size() << " and scapy's " << scapys.size()
                                        << "; first difference at byte " << at.first - ours.begin();
}

class SealedVectors : public testing::Test {
 protected:
  OutboundTables tables() { return {sas_, tunnels_, natt_, ipcomp_, true, true, true}; }

  // The SA and the outbound policy between the hosts, with one request.
  Sa& install(const SealedVector& v, std::uint8_t satype, const Request& request, const char* src,
              const char* dst, int version) {
    core_tables::SaValues values;
    values.satype = satype;
    values.spi = v.spi;
    values.mode = request.mode;
    values.src = ip(src);
    values.dst = ip(dst);
    values.layout = satype == SADB_SATYPE_AH ? esp::EspLayout{0, 16, 4} : esp::EspLayout{8, 16, 4};
    values.seqNext = v.seq;
    EXPECT_FALSE(core_tables::installSa(sas_, values));
    EXPECT_FALSE(core_tables::addPolicy(
        spd_, {1, IPSEC_DIR_OUTBOUND, IPSEC_POLICY_IPSEC, host(hostA(version)), host(hostB(version)), {request}}));
    return *sas_.find({0, 1});
  }

  // The inner packet as the TUN read leaves it in a pool buffer, routed by the first stage.
  OutboundRoute route(const SealedVector& v) {
    std::fill(buffer_.begin(), buffer_.end(), 0xee);
    std::copy(v.inner.begin(), v.inner.end(), buffer_.begin() + kInnerAt);
    return routeOutbound(spd_, sas_, {buffer_.data() + kInnerAt, v.inner.size()}, true);
  }

  // The broker's seal with the vector's key and IV.
  void seal(const SealedVector& v, std::uint32_t offset, std::uint32_t length) {
    std::string error;
    const auto gcm = cryptodrv::makeTransform({SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, v.key, {}, false, false},
                                              &error);
    ASSERT_TRUE(gcm) << error;
    ASSERT_EQ(v.iv.size(), gcm->ivLength());
    EXPECT_EQ(gcm->sealWithIv(buffer_.data() + offset, length, 0, v.iv.data()), cryptodrv::Status::kOk);
  }

  // An ESP tunnel: the framing core, the seal, and the send the core decides
  // (tunnel_send.cpp finishTunnelSeal): over IPv4 our outer header; over IPv6
  // ESP alone, the kernel's raw socket writing the header, written here with
  // the same fields (ours when the packet is fragmented).
  std::vector<std::uint8_t> sealTunnel(const SealedVector& v) {
    const OutboundRoute r = route(v);
    EXPECT_EQ(r.kind, OutboundRoute::Kind::kEsp);
    if (r.kind != OutboundRoute::Kind::kEsp || r.transport) return {};
    const TunnelFacts facts = tables().facts(*r.sa);
    const TunnelFrame f = frameTunnel({*r.sa, *r.policy, facts, ipcomp_, true}, buffer_, kInnerAt,
                                      static_cast<std::uint32_t>(v.inner.size()));
    EXPECT_EQ(f.kind, TunnelFrame::Kind::kSeal);
    EXPECT_EQ(f.seq, v.seq);
    if (f.kind != TunnelFrame::Kind::kSeal) return {};
    seal(v, f.offset, f.length);
    proto::CryptoCompletion c{};
    c.status = proto::CryptoStatus::kOk;
    c.offset = f.offset;
    c.length = f.length;
    const TunnelSendFacts lent{nullptr, tunnels_.pathMtu(*r.sa), f.outerTos, f.outerDf, 4500, kOuterIpId};
    const TunnelSend send = finishTunnelSeal(*r.sa, lent, buffer_, c);
    if (r.sa->dst.isV4()) {
      EXPECT_EQ(send.kind, TunnelSend::Kind::kHeaderIncluded);
      if (send.kind != TunnelSend::Kind::kHeaderIncluded) return {};
      return {buffer_.begin() + send.start, buffer_.begin() + send.start + send.length};
    }
    EXPECT_EQ(send.kind, TunnelSend::Kind::kRawEsp);
    EXPECT_EQ(send.tos, f.outerTos);
    esp::OuterHeader h;
    h.src = r.sa->src;
    h.dst = r.sa->dst;
    h.tos = f.outerTos;
    h.dontFragment = f.outerDf;
    h.id = kOuterIpId;
    const auto start = esp::writeOuterHeader(buffer_, f.offset, f.length, h);
    EXPECT_TRUE(start);
    if (!start) return {};
    return {buffer_.begin() + *start, buffer_.begin() + f.offset + f.length};
  }

  SaTable sas_;
  Spd spd_;
  IpcompSas ipcomp_;
  NattPeers natt_;
  TunnelOptionsTable tunnels_;
  std::vector<std::uint8_t> buffer_ = std::vector<std::uint8_t>(4096);
};

Request tunnelRequest(std::uint8_t proto, int v) {
  return {proto, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, ip(gwA(v)), ip(gwB(v))};
}

TEST_F(SealedVectors, AnEspTunnelOverIpv4IsTheBytesScapySeals) {
  const SealedVector v = loadVector("esp_tunnel_gcm128_v4");
  install(v, SADB_SATYPE_ESP, tunnelRequest(IPPROTO_ESP, 4), gwA(4), gwB(4), 4);
  const auto packet = sealTunnel(v);
  expectScapysPacket(packet, v.outer);
}

TEST_F(SealedVectors, AnEspTunnelOverIpv6IsTheBytesScapySeals) {
  const SealedVector v = loadVector("esp_tunnel_gcm128_v6");
  install(v, SADB_SATYPE_ESP, tunnelRequest(IPPROTO_ESP, 6), gwA(6), gwB(6), 6);
  const auto packet = sealTunnel(v);
  expectScapysPacket(packet, v.outer);
}

TEST_F(SealedVectors, EspTransportOverIpv4IsTheBytesScapySeals) {
  const SealedVector v = loadVector("esp_transport_gcm128_v4");
  Sa& sa = install(v, SADB_SATYPE_ESP, {IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}},
                   hostA(4), hostB(4), 4);
  const OutboundRoute r = route(v);
  ASSERT_EQ(r.kind, OutboundRoute::Kind::kEsp);
  ASSERT_TRUE(r.transport);
  const TunnelFacts facts = tables().facts(sa);
  const FrameVerdict f = frameEspTransport(tables(), sa, r.policy, {&facts, 0}, buffer_, kInnerAt,
                                           static_cast<std::uint32_t>(v.inner.size()));
  ASSERT_EQ(f.kind, Kind::kCrypto);
  EXPECT_EQ(f.seq, v.seq);
  seal(v, f.offset, f.length);
  const std::vector<std::uint8_t> packet(buffer_.begin() + f.offset - f.transportHeader,
                                         buffer_.begin() + f.offset + f.length);
  expectScapysPacket(packet, v.outer);
}

TEST_F(SealedVectors, AnAhTunnelOverIpv4IsTheBytesScapySigns) {
  const SealedVector v = loadVector("ah_tunnel_sha256_v4");
  install(v, SADB_SATYPE_AH, tunnelRequest(IPPROTO_AH, 4), gwA(4), gwB(4), 4);
  const OutboundRoute r = route(v);
  ASSERT_EQ(r.kind, OutboundRoute::Kind::kBundle);
  AhBuffer ah;
  const FrameVerdict f = frameBundle(tables(), *r.policy, r.flow, buffer_, kInnerAt,
                                     static_cast<std::uint32_t>(v.inner.size()), {ah, kOuterIpId});
  ASSERT_EQ(f.kind, Kind::kCrypto);
  ASSERT_EQ(f.op, proto::CryptoOp::kAhSign);
  EXPECT_EQ(f.seq, v.seq);
  std::string error;
  cryptodrv::TransformSpec spec;
  spec.authAlg = SADB_X_AALG_SHA2_256HMAC;
  spec.authKey = v.key;
  const auto signer = cryptodrv::AhTransform::create(spec, &error);
  ASSERT_TRUE(signer) << error;
  ASSERT_EQ(signer->sign(buffer_.data() + f.offset, f.length, f.icvOffset, 0), cryptodrv::Status::kOk);
  proto::CryptoCompletion c{};
  c.op = f.op;
  c.status = proto::CryptoStatus::kOk;
  c.offset = f.offset;
  c.length = f.length;
  c.icvOffset = f.icvOffset;
  const AhSigned s = finishAhSigned(buffer_, c, ah, true);
  ASSERT_EQ(s.kind, AhSigned::Kind::kSend);
  const std::vector<std::uint8_t> packet(buffer_.begin() + s.start, buffer_.begin() + s.start + s.length);
  expectScapysPacket(packet, v.outer);
}

}  // namespace
}  // namespace ipsec::forwarder
