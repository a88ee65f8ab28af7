// cryptodrv::AhTransform and the broker's AH sessions (services/crypto's
// SessionTable, kAhSign / kAhVerify) on known answers from scapy: the
// canonical ICV inputs and ICVs of tests/unit/ah/vectors.inc, which
// scapy.layers.ipsec computed (tests/unit/ah/gen_vectors.py).
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>

#include <cstring>
#include <string>
#include <vector>

#include "cryptodrv/ah_transform.h"
#include "cryptodrv/mac.h"
#include "sessions.h"

namespace ipsec::cryptodrv {
namespace {

struct ScapyAhVector {
  const char* name;
  int authAlg;
  const char* keyHex;
  size_t icvLength;
  bool esn;
  uint32_t seqHigh;
  const char* packetHex;
  const char* canonicalHex;
};
#include "../ah/vectors.inc"

std::vector<uint8_t> fromHex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

// The ICV field's offset: AH header offset + 12, found by comparing the
// packet as sent (ICV set) with its canonical form (ICV zero) from the AH
// header on; the vectors have no other differences after the IP headers.
size_t icvOffsetOf(const ScapyAhVector& v) {
  const auto sent = fromHex(v.packetHex);
  const auto canon = fromHex(v.canonicalHex);
  size_t last = 0;
  for (size_t i = 0; i < sent.size(); ++i)
    if (sent[i] != canon[i]) last = i;
  return last + 1 - v.icvLength;  // the ICV's last byte differs (probability 1 - 2^-8 per vector; checked below)
}

struct Case {
  std::vector<uint8_t> key, canonical, icv;
  size_t icvOffset;
};

Case load(const ScapyAhVector& v) {
  Case c;
  c.key = fromHex(v.keyHex);
  c.canonical = fromHex(v.canonicalHex);
  const auto sent = fromHex(v.packetHex);
  c.icvOffset = icvOffsetOf(v);
  c.icv.assign(sent.begin() + c.icvOffset, sent.begin() + c.icvOffset + v.icvLength);
  return c;
}

TransformSpec ahSpec(const ScapyAhVector& v, const std::vector<uint8_t>& key) {
  TransformSpec s;
  s.authAlg = static_cast<uint8_t>(v.authAlg);
  s.authKey = key;
  s.esn = v.esn;
  s.allowLegacy = v.authAlg == SADB_AALG_MD5HMAC;
  return s;
}

TEST(AhTransform, SignsScapysCanonicalPacketsToScapysIcv) {
  for (const auto& v : kScapyAh) {
    SCOPED_TRACE(v.name);
    Case c = load(v);
    std::string error;
    auto t = AhTransform::create(ahSpec(v, c.key), &error);
    ASSERT_TRUE(t) << error;
    EXPECT_EQ(t->icvLength(), v.icvLength);
    auto packet = c.canonical;
    // Whatever the ICV field holds, sign() takes it as zero.
    std::memset(packet.data() + c.icvOffset, 0x5A, v.icvLength);
    ASSERT_EQ(t->sign(packet.data(), packet.size(), c.icvOffset, v.seqHigh), Status::kOk);
    EXPECT_EQ(std::vector<uint8_t>(packet.begin() + c.icvOffset, packet.begin() + c.icvOffset + v.icvLength), c.icv);
  }
}

TEST(AhTransform, VerifiesScapysIcvAndRejectsAnyChange) {
  for (const auto& v : kScapyAh) {
    SCOPED_TRACE(v.name);
    Case c = load(v);
    auto t = AhTransform::create(ahSpec(v, c.key), nullptr);
    ASSERT_TRUE(t);
    auto packet = c.canonical;
    std::memcpy(packet.data() + c.icvOffset, c.icv.data(), c.icv.size());
    const auto before = packet;
    EXPECT_EQ(t->verify(packet.data(), packet.size(), c.icvOffset, v.seqHigh), Status::kOk);
    EXPECT_EQ(packet, before);  // never written
    auto payload = packet;
    payload[payload.size() - 1] ^= 0x80;
    EXPECT_EQ(t->verify(payload.data(), payload.size(), c.icvOffset, v.seqHigh), Status::kBadIcv);
    auto icv = packet;
    icv[c.icvOffset] ^= 1;
    EXPECT_EQ(t->verify(icv.data(), icv.size(), c.icvOffset, v.seqHigh), Status::kBadIcv);
    if (v.esn) {
      EXPECT_EQ(t->verify(packet.data(), packet.size(), c.icvOffset, v.seqHigh + 1), Status::kBadIcv);
    }
  }
}

TEST(AhTransform, AesXcbcIcvIsTheTruncatedRfc3566Mac) {
  // scapy has no AES-XCBC-MAC: check against lib/cryptodrv's XCBC, which
  // rfc_kat_test.cpp holds to RFC 3566's vectors.
  const auto& v = kScapyAh[0];
  Case c = load(v);
  const std::vector<uint8_t> key(16, 0x3C);
  TransformSpec s;
  s.authAlg = SADB_X_AALG_AES_XCBC_MAC;
  s.authKey = key;
  auto t = AhTransform::create(s, nullptr);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->icvLength(), 12);
  auto packet = c.canonical;
  ASSERT_EQ(t->sign(packet.data(), packet.size(), c.icvOffset, 0), Status::kOk);
  auto mac = makeAesXcbcMac(key, nullptr);
  uint8_t full[16];
  ASSERT_TRUE(mac->begin() && mac->update(c.canonical.data(), c.canonical.size()) && mac->finish(full));
  EXPECT_EQ(0, std::memcmp(full, packet.data() + c.icvOffset, 12));
  EXPECT_EQ(t->verify(packet.data(), packet.size(), c.icvOffset, 0), Status::kOk);
}

TEST(AhTransform, RefusesEncryptionBadKeysUnknownAlgorithmsAndLegacy) {
  const std::vector<uint8_t> key20(20, 1), key16(16, 1);
  std::string error;
  TransformSpec s;
  s.authAlg = SADB_AALG_SHA1HMAC;
  s.authKey = key16;
  EXPECT_FALSE(AhTransform::create(s, &error));
  EXPECT_NE(error.find("20 bytes"), std::string::npos) << error;
  s.authKey = key20;
  s.encAlg = SADB_X_EALG_AESCBC;
  EXPECT_FALSE(AhTransform::create(s, &error));
  s.encAlg = SADB_EALG_NONE;
  EXPECT_TRUE(AhTransform::create(s, &error));
  s.authAlg = SADB_AALG_NONE;
  EXPECT_FALSE(AhTransform::create(s, &error));
  s.authAlg = SADB_AALG_MD5HMAC;
  s.authKey = key16;
  EXPECT_FALSE(AhTransform::create(s, &error));
  EXPECT_NE(error.find("legacy"), std::string::npos) << error;
  s.allowLegacy = true;
  EXPECT_TRUE(AhTransform::create(s, &error));
}

TEST(AhTransform, RejectsAnIcvFieldOutsideThePacket) {
  const std::vector<uint8_t> key(32, 2);
  TransformSpec s;
  s.authAlg = SADB_X_AALG_SHA2_256HMAC;
  s.authKey = key;
  auto t = AhTransform::create(s, nullptr);
  ASSERT_TRUE(t);
  std::vector<uint8_t> p(60, 0);
  EXPECT_EQ(t->sign(p.data(), p.size(), 45, 0), Status::kBadLength);
  EXPECT_EQ(t->verify(p.data(), p.size(), 61, 0), Status::kBadLength);
  EXPECT_EQ(t->sign(p.data(), p.size(), 44, 0), Status::kOk);
}

// The broker's session table, as a worker calls it.
struct Broker {
  DriverRegistry drivers = DriverRegistry::withDefaultDrivers();
  crypto::SessionTable table{drivers, 1};
};

proto::CryptoRequest request(proto::CryptoOp op, uint32_t offset, uint32_t length, uint16_t icvOffset,
                             uint32_t seqHigh) {
  proto::CryptoRequest r{};
  r.session = 3;
  r.sessionGeneration = 7;
  r.op = op;
  r.segmentCount = 1;
  r.offset = offset;
  r.length = length;
  r.seqHigh = seqHigh;
  r.icvOffset = icvOffset;
  return r;
}

TEST(BrokerAh, SignsAndVerifiesScapyVectorsThroughTheSessionTable) {
  for (const auto& v : kScapyAh) {
    SCOPED_TRACE(v.name);
    Broker b;
    Case c = load(v);
    uint8_t layout[3] = {9, 9, 9};
    // This host signs under one session and verifies under another: a
    // session runs only its own direction (sessions.h).
    ASSERT_EQ(b.table.createAh(3, 7, ahSpec(v, c.key), crypto::SessionDirection::kOutbound, layout), "");
    EXPECT_EQ(layout[0], 0);
    EXPECT_EQ(layout[1], v.icvLength);
    ASSERT_EQ(b.table.createAh(4, 7, ahSpec(v, c.key), crypto::SessionDirection::kInbound, layout), "");
    std::vector<uint8_t> buffer(4096, 0);
    const uint32_t off = 128;
    std::memcpy(buffer.data() + off, c.canonical.data(), c.canonical.size());
    auto sign = request(proto::CryptoOp::kAhSign, off, static_cast<uint32_t>(c.canonical.size()),
                        static_cast<uint16_t>(c.icvOffset), v.seqHigh);
    ASSERT_EQ(b.table.process(0, buffer.data(), sign), proto::CryptoStatus::kOk);
    EXPECT_EQ(0, std::memcmp(buffer.data() + off + c.icvOffset, c.icv.data(), c.icv.size()));
    auto verify = sign;
    verify.op = proto::CryptoOp::kAhVerify;
    verify.session = 4;
    EXPECT_EQ(b.table.process(0, buffer.data(), verify), proto::CryptoStatus::kOk);
    buffer[off + c.canonical.size() - 1] ^= 4;
    EXPECT_EQ(b.table.process(0, buffer.data(), verify), proto::CryptoStatus::kBadIcv);
    EXPECT_EQ(verify.segmentFailMask, 1u);
  }
}

TEST(BrokerAh, AppliesSeqHighPlusOneToASegmentWhoseSequenceNumberWrapped) {
  // Two copies of the ESN vector (sequence number 0xFFFFFFF0) as segments;
  // the second gets sequence number 1 and must be MACed with seqHigh + 1.
  const ScapyAhVector* esn = nullptr;
  for (const auto& v : kScapyAh)
    if (v.esn && std::string(v.name).find("v4_tunnel") == 0) esn = &v;
  ASSERT_NE(esn, nullptr);
  Broker b;
  Case c = load(*esn);
  uint8_t layout[3];
  ASSERT_EQ(b.table.createAh(3, 7, ahSpec(*esn, c.key), crypto::SessionDirection::kOutbound, layout), "");
  const uint32_t stride = static_cast<uint32_t>(c.canonical.size());  // all but the last segment are stride long
  std::vector<uint8_t> buffer(4096, 0);
  std::memcpy(buffer.data(), c.canonical.data(), c.canonical.size());
  std::memcpy(buffer.data() + stride, c.canonical.data(), c.canonical.size());
  uint8_t* seq2 = buffer.data() + stride + c.icvOffset - 4;
  seq2[0] = seq2[1] = seq2[2] = 0;
  seq2[3] = 1;
  auto r = request(proto::CryptoOp::kAhSign, 0, static_cast<uint32_t>(stride + c.canonical.size()),
                   static_cast<uint16_t>(c.icvOffset), esn->seqHigh);
  r.segmentCount = 2;
  r.segmentStride = stride;
  ASSERT_EQ(b.table.process(0, buffer.data(), r), proto::CryptoStatus::kOk);
  EXPECT_EQ(0, std::memcmp(buffer.data() + c.icvOffset, c.icv.data(), c.icv.size()));
  // Independently: the second segment verifies with seqHigh + 1 alone.
  auto t = AhTransform::create(ahSpec(*esn, c.key), nullptr);
  EXPECT_EQ(t->verify(buffer.data() + stride, c.canonical.size(), c.icvOffset, esn->seqHigh + 1), Status::kOk);
  EXPECT_EQ(t->verify(buffer.data() + stride, c.canonical.size(), c.icvOffset, esn->seqHigh), Status::kBadIcv);
}

TEST(BrokerAh, RefusesOpsThatDoNotFitTheSessionKind) {
  Broker b;
  const auto& v = kScapyAh[0];
  Case c = load(v);
  uint8_t layout[3];
  ASSERT_EQ(b.table.createAh(3, 7, ahSpec(v, c.key), crypto::SessionDirection::kOutbound, layout), "");
  std::vector<uint8_t> buffer(4096, 0);
  auto seal = request(proto::CryptoOp::kSeal, 0, 200, 0, 0);
  EXPECT_EQ(b.table.process(0, buffer.data(), seal), proto::CryptoStatus::kBadOp);
  // An ESP session refuses the AH ops.
  const std::vector<uint8_t> key(20, 9);
  TransformSpec esp;
  esp.encAlg = SADB_X_EALG_AES_GCM_ICV16;
  esp.encKey = key;
  ASSERT_EQ(b.table.create(3, 8, esp, crypto::SessionDirection::kOutbound, 0, 1000, layout), "");
  auto sign = request(proto::CryptoOp::kAhSign, 0, 200, 40, 0);
  sign.sessionGeneration = 8;
  EXPECT_EQ(b.table.process(0, buffer.data(), sign), proto::CryptoStatus::kBadOp);
  // A stale generation is a bad session, whatever the op.
  sign.sessionGeneration = 7;
  EXPECT_EQ(b.table.process(0, buffer.data(), sign), proto::CryptoStatus::kBadSession);
}

TEST(BrokerAh, ReportsAnIcvOffsetOutsideTheSegmentAsABadDescriptor) {
  Broker b;
  const auto& v = kScapyAh[0];
  Case c = load(v);
  uint8_t layout[3];
  ASSERT_EQ(b.table.createAh(3, 7, ahSpec(v, c.key), crypto::SessionDirection::kOutbound, layout), "");
  std::vector<uint8_t> buffer(4096, 0);
  auto r = request(proto::CryptoOp::kAhSign, 0, 100, 95, 0);
  EXPECT_EQ(b.table.process(0, buffer.data(), r), proto::CryptoStatus::kBadDescriptor);
  EXPECT_EQ(r.segmentFailMask, 1u);
}

TEST(BrokerAh, CreateAhRefusesWhatAhTransformRefuses) {
  Broker b;
  const std::vector<uint8_t> key(7, 1);
  TransformSpec s;
  s.authAlg = SADB_X_AALG_SHA2_512HMAC;
  s.authKey = key;
  uint8_t layout[3];
  EXPECT_NE(b.table.createAh(1, 1, s, crypto::SessionDirection::kOutbound, layout), "");
}

}  // namespace
}  // namespace ipsec::cryptodrv
