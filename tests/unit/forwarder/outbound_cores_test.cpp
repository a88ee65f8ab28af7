// The forwarder's outbound packet cores after the route (services/forwarder/
// transport_frame.cpp, ah_sign.cpp, bundle_frame.cpp) driven with bytes: a
// host's packet routed by the first stage (esp_out.cpp), framed by the core
// in a buffer laid out as a pool buffer is, sealed by lib/cryptodrv's
// AES-GCM transform and signed by its HMAC-SHA256 AH transform (the broker's
// own), each after-seal stage fed the completion, and the result read back
// by hand here — header fields at their RFC offsets, the ESP opened by a
// second transform, the AH ICV checked by a second AH transform over a copy
// whose mutable fields this file zeroes itself — so lib/esp's and lib/ah's
// own parsers are not what judges their output. No socket, no ring.
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <capnp/message.h>
#include <memory>
#include <vector>

#include "ah_sign.h"
#include "bundle_frame.h"
#include "core_packets.h"
#include "core_tables.h"
#include "cryptodrv/ah_transform.h"
#include "esp/pmtu.h"
#include "esp_out.h"
#include "transport_frame.h"

namespace ipsec::forwarder {
namespace {

using Kind = FrameVerdict::Kind;
using core_packets::innerPacket;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }
esp::Prefix host(const char* s) { return {ip(s), static_cast<std::uint8_t>(ip(s).isV4() ? 32 : 128)}; }

constexpr std::uint32_t kInnerAt = 512;  // where the TUN read puts a packet
constexpr std::size_t kIcv = 16;         // AES-GCM-16 and HMAC-SHA256-128 alike
const std::array<std::uint8_t, 32> kAhKey{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 9,  10, 11,
                                          12,   13,   14,   15,   16,   17,   18,   19,   20, 21, 22,
                                          23,   24,   25,   26,   27,   28,   29,   30,   31, 32};

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }
std::uint32_t be32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

// RFC 1071 over an IPv4 header, written here rather than taken from lib/esp.
bool ipv4ChecksumOk(const std::uint8_t* h) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < 20; i += 2) sum += be16(h + i);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum == 0xffff;
}

const char* hostA(int v) { return v == 4 ? "198.51.100.1" : "2001:db8:a::1"; }
const char* hostB(int v) { return v == 4 ? "203.0.113.1" : "2001:db8:b::1"; }
const char* gwA(int v) { return v == 4 ? "192.0.2.1" : "2001:db8:1::1"; }
const char* gwB(int v) { return v == 4 ? "192.0.2.2" : "2001:db8:1::2"; }

class OutboundCores : public core_packets::GcmCore {
 protected:
  void SetUp() override {
    GcmCore::SetUp();
    std::string error;
    cryptodrv::TransformSpec spec;
    spec.authAlg = SADB_X_AALG_SHA2_256HMAC;
    spec.authKey = kAhKey;
    signer_ = cryptodrv::AhTransform::create(spec, &error);
    verifier_ = cryptodrv::AhTransform::create(spec, &error);
    ASSERT_TRUE(signer_ && verifier_) << error;
  }

  OutboundTables tables() { return {sas_, tunnels_, natt_, ipcomp_, espEnabled_, ahEnabled_, true}; }

  Sa& addSa(std::uint32_t index, std::uint8_t satype, std::uint32_t spi, std::uint8_t mode, const char* src,
            const char* dst) {
    core_tables::SaValues v;
    v.index = index;
    v.satype = satype;
    v.spi = spi;
    v.mode = mode;
    v.src = ip(src);
    v.dst = ip(dst);
    v.layout = satype == SADB_SATYPE_AH ? esp::EspLayout{0, kIcv, 4} : layout_;
    EXPECT_FALSE(core_tables::installSa(sas_, v));
    return *sas_.find({index, 1});
  }

  void addPolicy(int version, std::initializer_list<Request> requests) {
    EXPECT_FALSE(core_tables::addPolicy(
        spd_, {1, IPSEC_DIR_OUTBOUND, IPSEC_POLICY_IPSEC, host(hostA(version)), host(hostB(version)), requests}));
  }

  // SaParams as keydb installs an SA's tunnel options.
  void setTunnelOptions(const Sa& sa, std::uint16_t mtu, std::uint16_t tfcPad, std::uint8_t dfPolicy = 0) {
    capnp::MallocMessageBuilder b;
    auto p = b.initRoot<proto::SaParams>();
    p.setMtu(mtu);
    p.setTfcPad(tfcPad);
    p.setDfPolicy(dfPolicy);
    tunnels_.install(sa.ref, p.asReader());
  }

  // The packet as the TUN read leaves it, routed by the first stage, then
  // framed by the core the route names.
  FrameVerdict frame(const std::vector<std::uint8_t>& inner) {
    std::fill(buffer_.begin(), buffer_.end(), 0xee);
    std::copy(inner.begin(), inner.end(), buffer_.begin() + kInnerAt);
    const auto len = static_cast<std::uint32_t>(inner.size());
    const OutboundRoute r = routeOutbound(spd_, sas_, {buffer_.data() + kInnerAt, len}, espEnabled_);
    if (r.kind == OutboundRoute::Kind::kBundle) {
      return frameBundle(tables(), *r.policy, r.flow, buffer_, kInnerAt, len, {ah_, 0x1234});
    }
    if (r.kind == OutboundRoute::Kind::kEsp && r.transport) {
      const TunnelFacts facts = tables().facts(*r.sa);
      return frameEspTransport(tables(), *r.sa, r.policy, {&facts, 0}, buffer_, kInnerAt, len);
    }
    ADD_FAILURE() << "route kind " << static_cast<int>(r.kind);
    return {};
  }

  // The broker's answer to a verdict's request, and the shell's taking of the number.
  proto::CryptoCompletion answer(const FrameVerdict& v) {
    EXPECT_EQ(v.kind, Kind::kCrypto);
    proto::CryptoCompletion c{};
    c.op = v.op;
    c.status = proto::CryptoStatus::kOk;
    c.offset = v.offset;
    c.length = v.length;
    c.icvOffset = v.icvOffset;
    if (v.kind != Kind::kCrypto) return c;
    if (v.op == proto::CryptoOp::kSeal) {
      std::array<std::uint8_t, 8> iv{0, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(v.sa->spi),
                                     static_cast<std::uint8_t>(v.seq)};
      EXPECT_EQ(sealer_->sealWithIv(buffer_.data() + v.offset, v.length, 0, iv.data()), cryptodrv::Status::kOk);
    } else {
      EXPECT_EQ(signer_->sign(buffer_.data() + v.offset, v.length, v.icvOffset, 0), cryptodrv::Status::kOk);
    }
    ++v.sa->seqNext;
    return c;
  }

  FrameVerdict afterSeal(const FrameVerdict& first, const proto::CryptoCompletion& c) {
    const SealedStage s{first.sa->ref, first.next, first.nextSa, first.transportHeader, first.outerTos,
                        first.outerDf};
    return frameAfterSeal(tables(), s, buffer_, c, {ah_, 0x1234});
  }

  // ESP at esp[0, len) opened by the peer's transform: checks SPI and
  // sequence number, returns the payload, next header in `nextHeader`.
  std::vector<std::uint8_t> openEsp(std::uint8_t* esp, std::size_t len, std::uint32_t spi, std::uint32_t seq,
                                    std::uint8_t& nextHeader) {
    EXPECT_EQ(be32(esp), spi);
    EXPECT_EQ(be32(esp + 4), seq);
    EXPECT_EQ(opener_->open(esp, len, 0), cryptodrv::Status::kOk);
    nextHeader = esp[len - kIcv - 1];
    const std::size_t padLen = esp[len - kIcv - 2];
    const std::size_t begin = 8 + layout_.ivLength;
    if (len < begin + padLen + 2 + kIcv) return {};
    return {esp + begin, esp + len - kIcv - 2 - padLen};
  }

  // The AH ICV checked by the second transform over a copy whose mutable
  // fields (RFC 4302 §3.3.3.1: IPv4 TOS, flags/offset, TTL, checksum; IPv6
  // class, flow label, hop limit) are zeroed here. No extension headers.
  void expectIcvVerifies(const std::uint8_t* packet, std::size_t len, std::size_t ahAt) {
    std::vector<std::uint8_t> copy(packet, packet + len);
    if ((copy[0] >> 4) == 4) {
      copy[1] = 0;
      copy[6] = copy[7] = 0;
      copy[8] = 0;
      copy[10] = copy[11] = 0;
    } else {
      copy[0] = 0x60;
      copy[1] = copy[2] = copy[3] = 0;
      copy[7] = 0;
    }
    EXPECT_EQ(verifier_->verify(copy.data(), copy.size(), ahAt + 12, 0), cryptodrv::Status::kOk);
    copy[len - 1] ^= 1;  // and nothing else would
    EXPECT_EQ(verifier_->verify(copy.data(), copy.size(), ahAt + 12, 0), cryptodrv::Status::kBadIcv);
  }

  SaTable sas_;
  Spd spd_;
  IpcompSas ipcomp_;
  NattPeers natt_;
  TunnelOptionsTable tunnels_;
  AhBuffer ah_;
  bool espEnabled_ = true, ahEnabled_ = true;
  std::unique_ptr<cryptodrv::AhTransform> signer_, verifier_;
  std::vector<std::uint8_t> buffer_ = std::vector<std::uint8_t>(4096);
};

const Request kEspTransport{IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}};
const Request kAhTransport{IPPROTO_AH, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}};
Request tunnelRequest(std::uint8_t proto, int v, std::uint8_t level = IPSEC_LEVEL_REQUIRE) {
  return {proto, IPSEC_MODE_TUNNEL, level, 0, ip(gwA(v)), ip(gwB(v))};
}

// ---- ESP transport ----------------------------------------------------------------

TEST_F(OutboundCores, EspTransportKeepsTheIpv4HeaderAndSealsThePayload) {
  addPolicy(4, {kEspTransport});
  Sa& sa = addSa(0, SADB_SATYPE_ESP, 0x200, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  const auto inner = innerPacket(4, 60, 0x20, true);
  const FrameVerdict v = frame(inner);
  ASSERT_EQ(v.kind, Kind::kCrypto);
  EXPECT_EQ(v.sa, &sa);
  EXPECT_EQ(v.transportHeader, 20);
  EXPECT_EQ(v.queued[0], &Counters::transport_out_packets);
  EXPECT_EQ(sa.seqNext, 1u);  // the shell takes the number, not the core
  const proto::CryptoCompletion c = answer(v);
  const std::uint8_t* h = buffer_.data() + c.offset - v.transportHeader;
  EXPECT_EQ(h[0], 0x45);
  EXPECT_EQ(h[1], 0x20);     // TOS kept
  EXPECT_EQ(h[6], 0x40);     // DF kept
  EXPECT_EQ(h[9], IPPROTO_ESP);
  EXPECT_EQ(be16(h + 2), c.length + 20);
  EXPECT_TRUE(ipv4ChecksumOk(h));
  EXPECT_TRUE(std::equal(h + 12, h + 20, inner.begin() + 12));  // addresses
  std::uint8_t next = 0;
  const auto payload = openEsp(buffer_.data() + c.offset, c.length, 0x200, 1, next);
  EXPECT_EQ(next, IPPROTO_ICMP);
  EXPECT_EQ(payload, std::vector<std::uint8_t>(inner.begin() + 20, inner.end()));
}

TEST_F(OutboundCores, EspTransportKeepsTheIpv6HeaderAndSealsThePayload) {
  addPolicy(6, {kEspTransport});
  addSa(0, SADB_SATYPE_ESP, 0x201, IPSEC_MODE_TRANSPORT, hostA(6), hostB(6));
  const auto inner = innerPacket(6, 100, 0x48);
  const FrameVerdict v = frame(inner);
  ASSERT_EQ(v.kind, Kind::kCrypto);
  EXPECT_EQ(v.transportHeader, 40);
  const proto::CryptoCompletion c = answer(v);
  const std::uint8_t* h = buffer_.data() + c.offset - 40;
  EXPECT_EQ(h[6], IPPROTO_ESP);
  EXPECT_EQ(be16(h + 4), c.length);
  EXPECT_TRUE(std::equal(h, h + 4, inner.begin()));  // version, class, flow label
  EXPECT_TRUE(std::equal(h + 8, h + 40, inner.begin() + 8));
  std::uint8_t next = 0;
  const auto payload = openEsp(buffer_.data() + c.offset, c.length, 0x201, 1, next);
  EXPECT_EQ(next, IPPROTO_ICMPV6);
  EXPECT_EQ(payload, std::vector<std::uint8_t>(inner.begin() + 40, inner.end()));
}

TEST_F(OutboundCores, EspTransportRefusesFragmentsAndGarbageByName) {
  addPolicy(4, {kEspTransport});
  addSa(0, SADB_SATYPE_ESP, 0x200, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  auto fragment = innerPacket(4, 60);
  fragment[6] = 0x20;  // MF
  std::uint16_t sum = esp::ipv4HeaderChecksum({fragment.data(), 20});
  fragment[10] = static_cast<std::uint8_t>(sum >> 8);
  fragment[11] = static_cast<std::uint8_t>(sum);
  FrameVerdict v = frame(fragment);
  EXPECT_EQ(v.kind, Kind::kDrop);
  EXPECT_EQ(v.drop, &Counters::transport_out_drop_fragment);
  // The split itself refuses what routing let through: a length field past the bytes.
  Sa& sa = *sas_.find({0, 1});
  std::vector<std::uint8_t> bad = innerPacket(4, 60);
  bad[0] = 0x4f;  // IHL 60 bytes of options that are not there
  std::copy(bad.begin(), bad.end(), buffer_.begin() + kInnerAt);
  v = frameEspTransport(tables(), sa, nullptr, {}, buffer_, kInnerAt, 24);
  EXPECT_EQ(v.kind, Kind::kDrop);
  EXPECT_EQ(v.drop, &Counters::out_drop_bad_inner);
}

TEST_F(OutboundCores, EspTransportAboveTheMtuIsTooBigWithDfAndSealedWithout) {
  addPolicy(4, {kEspTransport});
  Sa& sa = addSa(0, SADB_SATYPE_ESP, 0x200, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  setTunnelOptions(sa, 1000, 0);
  const std::size_t most = esp::maxTransportLength(&layout_, 1000, 20, 0);
  FrameVerdict v = frame(innerPacket(4, most - 28 + 1, 0, true));
  ASSERT_EQ(v.kind, Kind::kTooBig);
  EXPECT_EQ(v.drop, &Counters::pmtu_out_drop_too_big);
  EXPECT_EQ(v.mtu, most);
  EXPECT_EQ(frame(innerPacket(4, most - 28, 0, true)).kind, Kind::kCrypto);
  EXPECT_EQ(frame(innerPacket(4, most - 28 + 1, 0, false)).kind, Kind::kCrypto);  // fragmented once sealed
}

TEST_F(OutboundCores, IpcompInsideEspTransportCompressesThePayloadBehindTheHostsHeader) {
  const Request comp{IPPROTO_COMP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}};
  addPolicy(4, {comp, kEspTransport});
  addSa(0, SADB_SATYPE_ESP, 0x200, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  ASSERT_TRUE(core_tables::installIpcompSa(ipcomp_, 5, 0x4242, ip(hostA(4)), ip(hostB(4)), 0, IPSEC_MODE_TRANSPORT));
  const auto inner = innerPacket(4, 600);  // 'x' after the ICMP header: compresses
  const FrameVerdict v = frame(inner);
  ASSERT_EQ(v.kind, Kind::kCrypto);
  EXPECT_EQ(v.ipcompEvent, &Counters::ipcomp_out_compressed);
  EXPECT_EQ(v.transportHeader, 20);
  const proto::CryptoCompletion c = answer(v);
  std::uint8_t next = 0;
  const auto payload = openEsp(buffer_.data() + c.offset, c.length, 0x200, 1, next);
  EXPECT_EQ(next, 108);  // IPComp (RFC 3173)
  ASSERT_GE(payload.size(), 4u);
  EXPECT_EQ(payload[0], IPPROTO_ICMP);  // IPComp's next header: the host's protocol
  EXPECT_EQ(be16(payload.data() + 2), 0x4242);
  EXPECT_LT(payload.size(), inner.size() - 20);
  // Without its SA a required IPComp drops by name.
  std::copy(inner.begin(), inner.end(), buffer_.begin() + kInnerAt);
  IpcompSas none;
  const FrameVerdict d = frameEspTransport({sas_, tunnels_, natt_, none, true, true, true}, *v.sa,
                                           spd_.lookup(IPSEC_DIR_OUTBOUND, *esp::parseInnerPacket(inner)), {},
                                           buffer_, kInnerAt, static_cast<std::uint32_t>(inner.size()));
  EXPECT_EQ(d.drop, &Counters::ipcomp_out_drop_no_sa);
}

// ---- AH alone -----------------------------------------------------------------------

TEST_F(OutboundCores, AhTunnelOverIpv4WrapsTheInnerPacketAndTheIcvVerifies) {
  addPolicy(4, {tunnelRequest(IPPROTO_AH, 4)});
  addSa(0, SADB_SATYPE_AH, 0x300, IPSEC_MODE_TUNNEL, gwA(4), gwB(4));
  const auto inner = innerPacket(4, 50, 0xb8, true);
  const FrameVerdict v = frame(inner);
  ASSERT_EQ(v.kind, Kind::kCrypto);
  EXPECT_EQ(v.op, proto::CryptoOp::kAhSign);
  EXPECT_TRUE(v.tookIpv4Id);
  const proto::CryptoCompletion c = answer(v);
  const AhSigned s = finishAhSigned(buffer_, c, ah_, true);
  ASSERT_EQ(s.kind, AhSigned::Kind::kSend);
  EXPECT_EQ(s.dst, ip(gwB(4)));
  const std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[0], 0x45);
  EXPECT_EQ(h[1], 0xb8);        // TOS from the inner packet (RFC 6040 normal mode), restored after the MAC
  EXPECT_EQ(be16(h + 4), 0x1234);  // our Identification
  EXPECT_EQ(h[6], 0x40);        // DF copied from the inner packet (the default policy)
  EXPECT_EQ(h[8], 64);
  EXPECT_EQ(h[9], IPPROTO_AH);
  EXPECT_EQ(be16(h + 2), s.length);
  EXPECT_TRUE(ipv4ChecksumOk(h));
  EXPECT_EQ(h[20], IPPROTO_IPIP);
  EXPECT_EQ((h[21] + 2) * 4, 12 + 16);
  EXPECT_EQ(be32(h + 24), 0x300u);
  EXPECT_EQ(be32(h + 28), 1u);
  EXPECT_TRUE(std::equal(inner.begin(), inner.end(), h + 48));
  EXPECT_EQ(s.length, 48 + inner.size());
  expectIcvVerifies(h, s.length, 20);
}

TEST_F(OutboundCores, AhTransportOverIpv6InsertsAhPaddedToEightBytes) {
  addPolicy(6, {kAhTransport});
  addSa(0, SADB_SATYPE_AH, 0x301, IPSEC_MODE_TRANSPORT, hostA(6), hostB(6));
  const auto inner = innerPacket(6, 30, 0x10);
  const FrameVerdict v = frame(inner);
  ASSERT_EQ(v.kind, Kind::kCrypto);
  EXPECT_FALSE(v.tookIpv4Id);
  const proto::CryptoCompletion c = answer(v);
  const AhSigned s = finishAhSigned(buffer_, c, ah_, true);
  ASSERT_EQ(s.kind, AhSigned::Kind::kSend);
  EXPECT_EQ(s.dst, ip(hostB(6)));
  const std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[6], IPPROTO_AH);
  EXPECT_EQ(h[7], 64);  // the host's hop limit, restored
  EXPECT_TRUE(std::equal(h, h + 4, inner.begin()));
  EXPECT_EQ(h[40], IPPROTO_ICMPV6);
  const std::size_t ahLen = (h[41] + 2) * 4;
  EXPECT_EQ(ahLen, 32u);  // 12 + 16, padded to 8 (RFC 4302 §2.2)
  EXPECT_EQ(be16(h + 4), inner.size() - 40 + ahLen);
  EXPECT_TRUE(std::equal(inner.begin() + 40, inner.end(), h + 40 + ahLen));
  expectIcvVerifies(h, s.length, 40);
}

TEST_F(OutboundCores, AhTunnelTooBigQuotesWhatFitsAndAPacketWithoutDfIsSignedThenFragmented) {
  addPolicy(4, {tunnelRequest(IPPROTO_AH, 4)});
  Sa& sa = addSa(0, SADB_SATYPE_AH, 0x300, IPSEC_MODE_TUNNEL, gwA(4), gwB(4));
  setTunnelOptions(sa, 1000, 0);
  const std::size_t fits = 1000 - 20 - 28;
  FrameVerdict v = frame(innerPacket(4, fits - 28 + 1, 0, true));
  ASSERT_EQ(v.kind, Kind::kTooBig);
  EXPECT_EQ(v.mtu, fits);
  v = frame(innerPacket(4, fits - 28 + 1, 0, false));
  ASSERT_EQ(v.kind, Kind::kCrypto);
  const AhSigned s = finishAhSigned(buffer_, answer(v), ah_, true);
  EXPECT_EQ(s.kind, AhSigned::Kind::kFragments);
  EXPECT_EQ(s.mtu, 1000u);
  EXPECT_EQ(buffer_[s.start + 6] & 0x40, 0);  // no DF on what must be fragmented
}

TEST_F(OutboundCores, AhHoldsForItsSaAndDropsByName) {
  addPolicy(4, {kAhTransport});
  FrameVerdict v = frame(innerPacket(4));
  EXPECT_EQ(v.kind, Kind::kHold);
  ASSERT_NE(v.acquire, nullptr);
  EXPECT_EQ(v.acquire->proto, IPPROTO_AH);
  Sa& sa = addSa(0, SADB_SATYPE_AH, 0x301, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  ahEnabled_ = false;
  EXPECT_EQ(frame(innerPacket(4)).drop, &Counters::ah_out_drop_disabled);
  ahEnabled_ = true;
  sa.seqNext = sa.seqLimit;
  v = frame(innerPacket(4));
  EXPECT_EQ(v.drop, &Counters::out_drop_seq_wait);
  EXPECT_EQ(v.spent, &sa);
}

TEST_F(OutboundCores, AhWithAnotherRequestInAShapeNotRunIsRefused) {
  const Request comp{IPPROTO_COMP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_USE, 0, {}, {}};
  addPolicy(4, {kAhTransport, comp});
  EXPECT_EQ(frame(innerPacket(4)).drop, &Counters::ah_out_drop_bundle);
}

// ---- bundles ------------------------------------------------------------------------

TEST_F(OutboundCores, EspThenAhInTransportModeSignsTheSealedPacket) {
  addPolicy(4, {kEspTransport, kAhTransport});
  addSa(0, SADB_SATYPE_ESP, 0x400, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  addSa(1, SADB_SATYPE_AH, 0x401, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  Sa& esp = *sas_.find({0, 1});  // found again: installing may move the table's entries
  Sa& ah = *sas_.find({1, 1});
  const auto inner = innerPacket(4, 80, 0x04);
  const FrameVerdict first = frame(inner);
  ASSERT_EQ(first.kind, Kind::kCrypto);
  EXPECT_EQ(first.sa, &esp);
  EXPECT_EQ(first.next, StepKind::kAhTransport);
  EXPECT_EQ(first.nextSa, ah.ref);
  const FrameVerdict second = afterSeal(first, answer(first));
  ASSERT_EQ(second.kind, Kind::kCrypto);
  EXPECT_EQ(second.sa, &ah);
  EXPECT_EQ(second.op, proto::CryptoOp::kAhSign);
  EXPECT_EQ(second.queued[0], &Counters::bundle_out_packets);
  const AhSigned s = finishAhSigned(buffer_, answer(second), ah_, true);
  ASSERT_EQ(s.kind, AhSigned::Kind::kSend);
  std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[9], IPPROTO_AH);
  EXPECT_EQ(h[1], 0x04);
  EXPECT_TRUE(ipv4ChecksumOk(h));
  EXPECT_EQ(h[20], IPPROTO_ESP);  // IP | AH | ESP
  expectIcvVerifies(h, s.length, 20);
  std::uint8_t next = 0;
  const auto payload = openEsp(h + 48, s.length - 48, 0x400, 1, next);
  EXPECT_EQ(next, IPPROTO_ICMP);
  EXPECT_EQ(payload, std::vector<std::uint8_t>(inner.begin() + 20, inner.end()));
}

TEST_F(OutboundCores, IpcompThenEspThenAhCompressesSealsAndSigns) {
  const Request comp{IPPROTO_COMP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}};
  addPolicy(4, {comp, kEspTransport, kAhTransport});
  addSa(0, SADB_SATYPE_ESP, 0x400, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  addSa(1, SADB_SATYPE_AH, 0x401, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  ASSERT_TRUE(core_tables::installIpcompSa(ipcomp_, 5, 0x4343, ip(hostA(4)), ip(hostB(4)), 0, IPSEC_MODE_TRANSPORT));
  const auto inner = innerPacket(4, 600);
  const FrameVerdict first = frame(inner);
  ASSERT_EQ(first.kind, Kind::kCrypto);
  EXPECT_EQ(first.ipcompEvent, &Counters::ipcomp_out_compressed);
  EXPECT_EQ(first.next, StepKind::kAhTransport);
  const FrameVerdict second = afterSeal(first, answer(first));
  ASSERT_EQ(second.kind, Kind::kCrypto);
  const AhSigned s = finishAhSigned(buffer_, answer(second), ah_, true);
  ASSERT_EQ(s.kind, AhSigned::Kind::kSend);
  std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[9], IPPROTO_AH);
  EXPECT_EQ(h[20], IPPROTO_ESP);  // IP | AH | ESP | IPComp | payload
  expectIcvVerifies(h, s.length, 20);
  std::uint8_t next = 0;
  const auto payload = openEsp(h + 48, s.length - 48, 0x400, 1, next);
  EXPECT_EQ(next, 108);
  ASSERT_GE(payload.size(), 4u);
  EXPECT_EQ(payload[0], IPPROTO_ICMP);
  EXPECT_EQ(be16(payload.data() + 2), 0x4343);
  EXPECT_LT(s.length, inner.size());  // compressed more than AH and ESP added
}

TEST_F(OutboundCores, AnEspTunnelInsideAhHasAhBetweenTheTunnelsEnds) {
  addPolicy(6, {tunnelRequest(IPPROTO_ESP, 6), kAhTransport});
  addSa(0, SADB_SATYPE_ESP, 0x500, IPSEC_MODE_TUNNEL, gwA(6), gwB(6));
  addSa(1, SADB_SATYPE_AH, 0x501, IPSEC_MODE_TRANSPORT, gwA(6), gwB(6));
  const auto inner = innerPacket(6, 64, 0x2a);
  const FrameVerdict first = frame(inner);
  ASSERT_EQ(first.kind, Kind::kCrypto);
  EXPECT_EQ(first.outerTos, 0x2a);
  EXPECT_EQ(first.transportHeader, 0);
  const FrameVerdict second = afterSeal(first, answer(first));
  ASSERT_EQ(second.kind, Kind::kCrypto);
  const AhSigned s = finishAhSigned(buffer_, answer(second), ah_, true);
  ASSERT_EQ(s.kind, AhSigned::Kind::kSend);
  EXPECT_EQ(s.dst, ip(gwB(6)));
  std::uint8_t* h = buffer_.data() + s.start;
  EXPECT_EQ(h[0], 0x62);  // traffic class 0x2a, restored after the MAC
  EXPECT_EQ(h[1], 0xa0);
  EXPECT_EQ(h[6], IPPROTO_AH);
  EXPECT_TRUE(std::equal(h + 8, h + 24, ip(gwA(6)).bytes().begin()));
  EXPECT_EQ(h[40], IPPROTO_ESP);
  expectIcvVerifies(h, s.length, 40);
  std::uint8_t next = 0;
  const auto payload = openEsp(h + 72, s.length - 72, 0x500, 1, next);
  EXPECT_EQ(next, 41);  // IPv6 inside
  EXPECT_EQ(payload, inner);
}

TEST_F(OutboundCores, AnEspTunnelInsideAhCountsAhInTheTunnelsOverhead) {
  addPolicy(4, {tunnelRequest(IPPROTO_ESP, 4), kAhTransport});
  setTunnelOptions(addSa(0, SADB_SATYPE_ESP, 0x500, IPSEC_MODE_TUNNEL, gwA(4), gwB(4)), 1000, 0);
  addSa(1, SADB_SATYPE_AH, 0x501, IPSEC_MODE_TRANSPORT, gwA(4), gwB(4));
  const std::size_t fits = esp::maxInnerLength(layout_, 1000, 20 + 12 + kIcv);
  const FrameVerdict v = frame(innerPacket(4, fits - 28 + 1, 0, true));
  ASSERT_EQ(v.kind, Kind::kTooBig);
  EXPECT_EQ(v.mtu, fits);
  EXPECT_EQ(frame(innerPacket(4, fits - 28, 0, true)).kind, Kind::kCrypto);
}

TEST_F(OutboundCores, EspTransportInsideAnEspTunnelIsSealedTwiceAndPaddedByTheTunnel) {
  addPolicy(4, {kEspTransport, tunnelRequest(IPPROTO_ESP, 4)});
  addSa(0, SADB_SATYPE_ESP, 0x600, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  addSa(1, SADB_SATYPE_ESP, 0x601, IPSEC_MODE_TUNNEL, gwA(4), gwB(4));
  Sa& transport = *sas_.find({0, 1});
  Sa& tunnel = *sas_.find({1, 1});
  setTunnelOptions(tunnel, 0, 300);
  const auto inner = innerPacket(4, 40, 0xb8, true);
  const FrameVerdict first = frame(inner);
  ASSERT_EQ(first.kind, Kind::kCrypto);
  EXPECT_EQ(first.sa, &transport);
  EXPECT_EQ(first.next, StepKind::kEspTunnel);
  EXPECT_EQ(first.outerTos, 0xb8);
  EXPECT_TRUE(first.outerDf);
  const FrameVerdict second = afterSeal(first, answer(first));
  ASSERT_EQ(second.kind, Kind::kCrypto);
  EXPECT_EQ(second.sa, &tunnel);
  EXPECT_TRUE(second.tunnelOwn);
  EXPECT_TRUE(second.tfcPadded);
  EXPECT_EQ(second.outerTos, 0xb8);
  EXPECT_TRUE(second.outerDf);
  const proto::CryptoCompletion c = answer(second);
  std::uint8_t next = 0;
  const auto carried = openEsp(buffer_.data() + c.offset, c.length, 0x601, 1, next);
  EXPECT_EQ(next, 4);
  ASSERT_EQ(carried.size(), 300u);  // TFC: zeros after the host's packet, inside the encryption
  const std::size_t hostLength = be16(carried.data() + 2);
  EXPECT_TRUE(std::all_of(carried.begin() + static_cast<std::ptrdiff_t>(hostLength), carried.end(),
                          [](std::uint8_t b) { return b == 0; }));
  EXPECT_EQ(carried[9], IPPROTO_ESP);  // the host's header, then its transport ESP
  std::vector<std::uint8_t> hostPacket(carried.begin(), carried.begin() + static_cast<std::ptrdiff_t>(hostLength));
  const auto payload = openEsp(hostPacket.data() + 20, hostLength - 20, 0x600, 1, next);
  EXPECT_EQ(next, IPPROTO_ICMP);
  EXPECT_EQ(payload, std::vector<std::uint8_t>(inner.begin() + 20, inner.end()));
}

TEST_F(OutboundCores, EspInEspJudgesTheTunnelsMtuWithRoomForTheTransportEsp) {
  addPolicy(4, {kEspTransport, tunnelRequest(IPPROTO_ESP, 4)});
  addSa(0, SADB_SATYPE_ESP, 0x600, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  setTunnelOptions(addSa(1, SADB_SATYPE_ESP, 0x601, IPSEC_MODE_TUNNEL, gwA(4), gwB(4)), 1000, 0);
  const std::size_t limit =
      esp::maxInnerLength(layout_, 1000, 20) - (esp::kEspHeaderLength + layout_.ivLength + layout_.maxTailroom());
  const FrameVerdict v = frame(innerPacket(4, limit - 28 + 1, 0, true));
  ASSERT_EQ(v.kind, Kind::kTooBig);
  EXPECT_EQ(v.mtu, limit);
  EXPECT_EQ(frame(innerPacket(4, limit - 28, 0, true)).kind, Kind::kCrypto);
}

TEST_F(OutboundCores, AUseLegWithoutItsSaLetsThePacketGoWithTheOtherAlone) {
  const Request ahUse{IPPROTO_AH, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_USE, 0, {}, {}};
  addPolicy(4, {kEspTransport, ahUse});
  Sa& esp = addSa(0, SADB_SATYPE_ESP, 0x400, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  FrameVerdict v = frame(innerPacket(4));
  ASSERT_EQ(v.kind, Kind::kCrypto);  // ESP alone, AH's ACQUIRE out
  EXPECT_EQ(v.sa, &esp);
  EXPECT_EQ(v.next, StepKind::kNone);
  ASSERT_NE(v.acquire, nullptr);
  EXPECT_EQ(v.acquire->proto, IPPROTO_AH);
  EXPECT_NE(std::find(v.queued.begin(), v.queued.end(), &Counters::bundle_out_without_optional), v.queued.end());
}

TEST_F(OutboundCores, ARequiredMissingLegHoldsThePacketForItsAcquire) {
  addPolicy(4, {kEspTransport, kAhTransport});
  addSa(0, SADB_SATYPE_ESP, 0x400, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  const FrameVerdict v = frame(innerPacket(4));
  EXPECT_EQ(v.kind, Kind::kHold);
  ASSERT_NE(v.acquire, nullptr);
  EXPECT_EQ(v.acquire->proto, IPPROTO_AH);
}

TEST_F(OutboundCores, AnSaWithNatTravelsNoAhAroundItsTunnel) {
  addPolicy(4, {tunnelRequest(IPPROTO_ESP, 4), kAhTransport});
  addSa(0, SADB_SATYPE_ESP, 0x500, IPSEC_MODE_TUNNEL, gwA(4), gwB(4));
  addSa(1, SADB_SATYPE_AH, 0x501, IPSEC_MODE_TRANSPORT, gwA(4), gwB(4));
  const Sa& esp = *sas_.find({0, 1});
  NatT nat;
  nat.present = true;
  nat.generation = esp.ref.generation;
  nat.type = 2;  // UDP_ENCAP_ESPINUDP
  nat.sport = nat.dport = 4500;
  natt_.set(esp.ref, nat);
  EXPECT_EQ(frame(innerPacket(4)).drop, &Counters::out_drop_sa_mode);
}

// ---- after the first seal: every refusal by name --------------------------------------

TEST_F(OutboundCores, TheStepAfterASealDropsWhenItsSaIsGoneSpentOrTheDescriptorLies) {
  addPolicy(4, {kEspTransport, kAhTransport});
  addSa(0, SADB_SATYPE_ESP, 0x400, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  addSa(1, SADB_SATYPE_AH, 0x401, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  Sa& ah = *sas_.find({1, 1});
  const FrameVerdict first = frame(innerPacket(4));
  ASSERT_EQ(first.kind, Kind::kCrypto);
  const proto::CryptoCompletion c = answer(first);
  proto::CryptoCompletion lying = c;
  lying.offset = static_cast<std::uint32_t>(buffer_.size());
  lying.length = 8;
  EXPECT_EQ(afterSeal(first, lying).drop, &Counters::out_drop_crypto);
  lying = c;
  lying.offset = static_cast<std::uint32_t>(buffer_.size()) + 100;  // past it: no length fits
  EXPECT_EQ(afterSeal(first, lying).drop, &Counters::out_drop_crypto);
  lying = c;
  lying.offset = 3;  // would put the kept header before the buffer's start
  EXPECT_EQ(afterSeal(first, lying).drop, &Counters::out_drop_crypto);
  FrameVerdict other = first;
  other.next = StepKind::kIpcomp;  // no plan puts IPComp after a seal
  EXPECT_EQ(afterSeal(other, c).drop, &Counters::out_drop_crypto);
  ah.seqNext = ah.seqLimit;
  const FrameVerdict spent = afterSeal(first, c);
  EXPECT_EQ(spent.drop, &Counters::bundle_out_drop_seq_wait);
  EXPECT_EQ(spent.spent, &ah);
  sas_.remove(ah.ref);
  EXPECT_EQ(afterSeal(first, c).drop, &Counters::bundle_out_drop_sa_gone);
}

TEST_F(OutboundCores, ASignedPacketIsSentOnlyWhenTheCompletionIsOursAndGood) {
  addPolicy(4, {kAhTransport});
  addSa(0, SADB_SATYPE_AH, 0x301, IPSEC_MODE_TRANSPORT, hostA(4), hostB(4));
  const FrameVerdict v = frame(innerPacket(4));
  ASSERT_EQ(v.kind, Kind::kCrypto);
  const proto::CryptoCompletion c = answer(v);
  proto::CryptoCompletion bad = c;
  bad.status = proto::CryptoStatus::kWrongDirection;
  EXPECT_EQ(finishAhSigned(buffer_, bad, ah_, true).drop, &Counters::out_drop_wrong_direction);
  bad.status = proto::CryptoStatus::kInternalError;
  EXPECT_EQ(finishAhSigned(buffer_, bad, ah_, true).drop, &Counters::out_drop_crypto);
  EXPECT_EQ(finishAhSigned(buffer_, c, ah_, false).drop, &Counters::out_drop_crypto);  // SA gone
  bad = c;
  bad.offset += 4;
  EXPECT_EQ(finishAhSigned(buffer_, bad, ah_, true).drop, &Counters::out_drop_crypto);
  bad = c;
  bad.length += 4;
  EXPECT_EQ(finishAhSigned(buffer_, bad, ah_, true).drop, &Counters::out_drop_crypto);
  EXPECT_EQ(finishAhSigned(buffer_, c, ah_, true).kind, AhSigned::Kind::kSend);
}

}  // namespace
}  // namespace ipsec::forwarder
