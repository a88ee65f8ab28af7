// A seal request's counter IVs (services/crypto/sessions.cpp,
// reserveCounterIvs): a super-packet's segments take one block of the
// session's grant with a single atomic add. What must hold whatever the
// batching: each segment's wire IV is its own counter value, segments past
// keydb's grant fail as exhausted (counted, buffer untouched) while those
// below it are sealed, and two workers sealing under one session at once
// never hand out the same IV (DESIGN.md §3, nonce safety). Real AES-GCM
// sessions from the default drivers; the buffers stay alive for every check.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "cryptodrv/driver.h"
#include "sessions.h"

namespace ipsec::crypto {
namespace {

// One ESP packet per segment: header, 8-byte IV, 64 bytes of payload with its
// trailer, 16-byte ICV (AES-GCM-16).
constexpr std::uint32_t kPacket = 8 + 8 + 64 + 16;

cryptodrv::TransformSpec gcm(const std::vector<std::uint8_t>& key) {
  cryptodrv::TransformSpec s;
  s.encAlg = SADB_X_EALG_AES_GCM_ICV16;
  s.encKey = key;
  return s;
}

proto::CryptoRequest superPacket(std::uint16_t segments) {
  proto::CryptoRequest r{};
  r.session = 1;
  r.sessionGeneration = 1;
  r.op = proto::CryptoOp::kSeal;
  r.segmentCount = segments;
  r.segmentStride = kPacket;
  r.length = kPacket * segments;
  return r;
}

// The counter in a sealed segment's IV field (ESP header + 8, big-endian).
std::uint64_t wireIv(const std::uint8_t* segment) {
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n = n << 8 | segment[8 + i];
  return n;
}

struct Table {
  std::vector<std::uint8_t> key = std::vector<std::uint8_t>(20, 7);  // AES-128 || salt
  cryptodrv::DriverRegistry drivers = cryptodrv::DriverRegistry::withDefaultDrivers();
  SessionTable table{drivers, 2};

  Session& session() {
    Session* found = nullptr;
    table.forEach([&](std::uint32_t, Session& s) { found = &s; });
    return *found;
  }
};

TEST(BrokerIvBlock, ASuperPacketsSegmentsTakeConsecutiveIvsAndThoseBeyondTheGrantFail) {
  Table t;
  std::uint8_t layout[3];
  ASSERT_EQ(t.table.create(1, 1, gcm(t.key), SessionDirection::kOutbound, 10, 13, layout), "");
  std::vector<std::uint8_t> buffer(kPacket * 5, 0x5a);
  const std::vector<std::uint8_t> before = buffer;
  auto r = superPacket(5);
  EXPECT_EQ(t.table.process(0, buffer.data(), r), proto::CryptoStatus::kSeqExhausted);
  EXPECT_EQ(r.segmentFailMask, 0b11000u);
  for (std::uint32_t i = 0; i < 3; ++i) EXPECT_EQ(wireIv(buffer.data() + i * kPacket), 10 + i) << "segment " << i;
  EXPECT_TRUE(std::equal(buffer.begin() + 3 * kPacket, buffer.end(), before.begin() + 3 * kPacket))
      << "a segment with no IV left was written";
  EXPECT_EQ(t.session().sealed, 3u);
  EXPECT_EQ(t.session().ivExhausted, 2u);

  // The grant is spent: the next request fails whole, and is counted.
  std::vector<std::uint8_t> one(kPacket, 0x5a);
  auto single = superPacket(1);
  EXPECT_EQ(t.table.process(0, one.data(), single), proto::CryptoStatus::kSeqExhausted);
  EXPECT_EQ(single.segmentFailMask, 1u);
  EXPECT_EQ(t.session().ivExhausted, 3u);
  // A new grant is used from where the counter stands, never below it.
  t.table.grantIv(1, 1, 100);
  auto after = superPacket(1);
  EXPECT_EQ(t.table.process(0, one.data(), after), proto::CryptoStatus::kOk);
  EXPECT_GE(wireIv(one.data()), 13u);
}

TEST(BrokerIvBlock, TwoWorkersSealingSuperPacketsAtOnceNeverShareAnIv) {
  constexpr std::uint16_t kSegments = 8;
  constexpr int kRequests = 200;
  Table t;
  std::uint8_t layout[3];
  ASSERT_EQ(t.table.create(1, 1, gcm(t.key), SessionDirection::kOutbound, 0, 1u << 20, layout), "");
  std::vector<std::uint64_t> ivs[2];
  auto seal = [&](unsigned worker) {
    std::vector<std::uint8_t> buffer(kPacket * kSegments);
    for (int n = 0; n < kRequests; ++n) {
      auto r = superPacket(kSegments);
      std::shared_lock lock(t.table.mutex());
      if (t.table.process(worker, buffer.data(), r) != proto::CryptoStatus::kOk) return;
      for (std::uint32_t i = 0; i < kSegments; ++i) ivs[worker].push_back(wireIv(buffer.data() + i * kPacket));
    }
  };
  std::thread other(seal, 1);
  seal(0);
  other.join();
  ASSERT_EQ(ivs[0].size() + ivs[1].size(), 2u * kRequests * kSegments) << "a seal failed";
  std::set<std::uint64_t> all(ivs[0].begin(), ivs[0].end());
  all.insert(ivs[1].begin(), ivs[1].end());
  EXPECT_EQ(all.size(), 2u * kRequests * kSegments) << "an IV was used twice under one key";
  EXPECT_EQ(*all.rbegin(), 2u * kRequests * kSegments - 1) << "IVs were skipped: the grant runs out early";
}

}  // namespace
}  // namespace ipsec::crypto
