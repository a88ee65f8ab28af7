// The broker's session table runs an op only in the session's direction
// (seal and AH sign only outbound, open and AH verify never outbound; keydb
// names it at creation and may change it), and refuses a session with the
// errno the PF_KEY client should hear: ENOMEM when lib/securemem's process key slab can give
// no more locked memory, EINVAL for what no driver runs. The slab is
// exhausted for real: a forked child drops CAP_IPC_LOCK (root ignores
// RLIMIT_MEMLOCK otherwise), sets RLIMIT_MEMLOCK to 0 and takes every free
// slot, so the next key allocation has nowhere to go.
#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <sys/capability.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "cryptodrv/driver.h"
#include "securemem/key_slab.h"
#include "sessions.h"

namespace ipsec::crypto {
namespace {

using cryptodrv::TransformSpec;
using securemem::KeySlab;

const std::vector<std::uint8_t> kGcmKey(20, 7);    // AES-128 key || 4-byte salt
const std::vector<std::uint8_t> kHmacKey(32, 9);   // HMAC-SHA-256

struct Table {
  cryptodrv::DriverRegistry drivers = cryptodrv::DriverRegistry::withDefaultDrivers();
  SessionTable table{drivers, 2};
};

TransformSpec gcm(const std::vector<std::uint8_t>& key) {
  TransformSpec s;
  s.encAlg = SADB_X_EALG_AES_GCM_ICV16;
  s.encKey = key;
  return s;
}

TransformSpec hmac(const std::vector<std::uint8_t>& key) {
  TransformSpec s;
  s.authAlg = SADB_X_AALG_SHA2_256HMAC;
  s.authKey = key;
  return s;
}

TEST(BrokerSessions, AGoodSessionHasNoErrorCode) {
  Table t;
  std::uint8_t layout[3];
  int code = -1;
  EXPECT_EQ(t.table.create(1, 1, gcm(kGcmKey), SessionDirection::kInbound, 0, 1000, layout, &code), "");
  EXPECT_EQ(code, 0);
  code = -1;
  EXPECT_EQ(t.table.createAh(2, 1, hmac(kHmacKey), SessionDirection::kInbound, layout, &code), "");
  EXPECT_EQ(code, 0);
}

TEST(BrokerSessions, AKeyOrAlgorithmNoDriverRunsIsEinval) {
  Table t;
  std::uint8_t layout[3];
  int code = 0;
  const std::vector<std::uint8_t> shortKey(7, 1);
  EXPECT_NE(t.table.create(1, 1, gcm(shortKey), SessionDirection::kInbound, 0, 1000, layout, &code), "");
  EXPECT_EQ(code, EINVAL);
  code = 0;
  EXPECT_NE(t.table.createAh(1, 1, hmac(shortKey), SessionDirection::kInbound, layout, &code), "");
  EXPECT_EQ(code, EINVAL);
  code = 0;
  TransformSpec unknown;
  unknown.encAlg = 250;
  EXPECT_NE(t.table.create(1, 1, unknown, SessionDirection::kInbound, 0, 1000, layout, &code), "");
  EXPECT_EQ(code, EINVAL);
  code = 0;
  EXPECT_NE(t.table.create(SessionTable::kMaxSessions, 1, gcm(kGcmKey), SessionDirection::kInbound, 0, 1000, layout, &code), "");
  EXPECT_EQ(code, EINVAL);
}

// One ESP packet in a buffer: header, 8-byte IV gap, 64 bytes of payload
// with its trailer, 16-byte ICV (AES-GCM-16): 96 bytes.
constexpr std::uint32_t kPacket = 8 + 8 + 64 + 16;

proto::CryptoRequest espRequest(std::uint32_t session, proto::CryptoOp op) {
  proto::CryptoRequest r{};
  r.session = session;
  r.sessionGeneration = 1;
  r.op = op;
  r.segmentCount = 1;
  r.length = kPacket;
  return r;
}

TEST(BrokerSessions, SealsOnlyUnderAnOutboundSessionAndOpensOnlyUnderTheOthers) {
  Table t;
  std::uint8_t layout[3];
  ASSERT_EQ(t.table.create(1, 1, gcm(kGcmKey), SessionDirection::kOutbound, 0, 1000, layout), "");
  ASSERT_EQ(t.table.create(2, 1, gcm(kGcmKey), SessionDirection::kInbound, 0, 1000, layout), "");
  ASSERT_EQ(t.table.create(3, 1, gcm(kGcmKey), SessionDirection::kUnknown, 0, 1000, layout), "");
  std::vector<std::uint8_t> packet(kPacket, 0);
  packet[3] = 0x42;  // SPI
  packet[7] = 1;     // sequence number
  const std::vector<std::uint8_t> plain = packet;
  for (std::uint32_t session : {2u, 3u}) {
    auto seal = espRequest(session, proto::CryptoOp::kSeal);
    EXPECT_EQ(t.table.process(0, packet.data(), seal), proto::CryptoStatus::kWrongDirection) << session;
    EXPECT_EQ(seal.segmentFailMask, 1u);
    EXPECT_EQ(packet, plain) << "a refused seal wrote to the buffer";
  }
  EXPECT_EQ(t.table.refusals().sealRefusedDirection, 2u);
  auto seal = espRequest(1, proto::CryptoOp::kSeal);
  ASSERT_EQ(t.table.process(0, packet.data(), seal), proto::CryptoStatus::kOk);
  const std::vector<std::uint8_t> sealed = packet;
  auto openOut = espRequest(1, proto::CryptoOp::kOpen);
  EXPECT_EQ(t.table.process(0, packet.data(), openOut), proto::CryptoStatus::kWrongDirection);
  EXPECT_EQ(packet, sealed) << "a refused open wrote to the buffer";
  EXPECT_EQ(t.table.refusals().openRefusedDirection, 1u);
  // Inbound and unknown both open what the outbound session sealed.
  for (std::uint32_t session : {2u, 3u}) {
    packet = sealed;
    auto open = espRequest(session, proto::CryptoOp::kOpen);
    EXPECT_EQ(t.table.process(0, packet.data(), open), proto::CryptoStatus::kOk) << session;
    EXPECT_EQ(0, std::memcmp(packet.data() + 16, plain.data() + 16, 64));
  }
  std::uint64_t sealRefused = 0, openRefused = 0;
  t.table.forEach([&](std::uint32_t, Session& s) {
    sealRefused += s.sealRefusedDirection;
    openRefused += s.openRefusedDirection;
  });
  EXPECT_EQ(sealRefused, 2u);
  EXPECT_EQ(openRefused, 1u);
}

// With ESN, a super-packet's segments may straddle a wrap of the low 32
// bits: a later segment whose ESP sequence number is below the first one's
// is sealed and opened under seqHigh + 1 (ring_abi.h), as the peer, which
// sees each packet alone, expects.
TEST(BrokerSessions, AnEsnSegmentPastTheLowHalfsWrapTakesTheNextHighHalf) {
  Table t;
  std::uint8_t layout[3];
  TransformSpec spec = gcm(kGcmKey);
  spec.esn = true;
  ASSERT_EQ(t.table.create(1, 1, spec, SessionDirection::kOutbound, 0, 1000, layout), "");
  ASSERT_EQ(t.table.create(2, 1, spec, SessionDirection::kInbound, 0, 1000, layout), "");
  std::vector<std::uint8_t> buffer(2 * kPacket, 0);
  for (std::uint32_t i = 0; i < 2; ++i) buffer[i * kPacket + 3] = 0x42;  // SPI
  std::fill_n(buffer.begin() + 4, 4, 0xff);  // segment 0: low half 0xffffffff, segment 1: 0
  auto seal = espRequest(1, proto::CryptoOp::kSeal);
  seal.segmentCount = 2;
  seal.segmentStride = kPacket;
  seal.length = 2 * kPacket;
  seal.seqHigh = 5;
  ASSERT_EQ(t.table.process(0, buffer.data(), seal), proto::CryptoStatus::kOk);
  auto openAlone = [&](std::uint32_t segment, std::uint32_t seqHigh) {
    std::vector<std::uint8_t> packet(buffer.begin() + segment * kPacket, buffer.begin() + (segment + 1) * kPacket);
    auto open = espRequest(2, proto::CryptoOp::kOpen);
    open.seqHigh = seqHigh;
    return t.table.process(0, packet.data(), open);
  };
  EXPECT_EQ(openAlone(0, 5), proto::CryptoStatus::kOk);
  EXPECT_EQ(openAlone(1, 6), proto::CryptoStatus::kOk) << "the wrapped segment was not sealed under seqHigh + 1";
  EXPECT_EQ(openAlone(1, 5), proto::CryptoStatus::kBadIcv);
  auto open = espRequest(2, proto::CryptoOp::kOpen);
  open.segmentCount = 2;
  open.segmentStride = kPacket;
  open.length = 2 * kPacket;
  open.seqHigh = 5;
  EXPECT_EQ(t.table.process(0, buffer.data(), open), proto::CryptoStatus::kOk);
  EXPECT_EQ(open.segmentFailMask, 0u);
}

TEST(BrokerSessions, SetDirectionTurnsAnUnknownSessionOutboundAndIgnoresAStaleGeneration) {
  Table t;
  std::uint8_t layout[3];
  ASSERT_EQ(t.table.create(3, 1, gcm(kGcmKey), SessionDirection::kUnknown, 0, 1000, layout), "");
  std::vector<std::uint8_t> packet(kPacket, 0);
  auto seal = espRequest(3, proto::CryptoOp::kSeal);
  EXPECT_EQ(t.table.process(0, packet.data(), seal), proto::CryptoStatus::kWrongDirection);
  t.table.setDirection(3, 2, SessionDirection::kOutbound);  // another SA's generation
  EXPECT_EQ(t.table.process(0, packet.data(), seal), proto::CryptoStatus::kWrongDirection);
  t.table.setDirection(3, 1, SessionDirection::kOutbound);
  EXPECT_EQ(t.table.process(0, packet.data(), seal), proto::CryptoStatus::kOk);
  auto open = espRequest(3, proto::CryptoOp::kOpen);
  EXPECT_EQ(t.table.process(0, packet.data(), open), proto::CryptoStatus::kWrongDirection);
}

TEST(BrokerSessions, SignsAhOnlyOutboundAndVerifiesOnlyOtherwise) {
  Table t;
  std::uint8_t layout[3];
  ASSERT_EQ(t.table.createAh(1, 1, hmac(kHmacKey), SessionDirection::kOutbound, layout), "");
  ASSERT_EQ(t.table.createAh(2, 1, hmac(kHmacKey), SessionDirection::kInbound, layout), "");
  std::vector<std::uint8_t> packet(100, 0);
  auto ah = [](std::uint32_t session, proto::CryptoOp op) {
    proto::CryptoRequest r{};
    r.session = session;
    r.sessionGeneration = 1;
    r.op = op;
    r.segmentCount = 1;
    r.length = 100;
    r.icvOffset = 32;
    return r;
  };
  auto signIn = ah(2, proto::CryptoOp::kAhSign);
  EXPECT_EQ(t.table.process(0, packet.data(), signIn), proto::CryptoStatus::kWrongDirection);
  EXPECT_EQ(packet, std::vector<std::uint8_t>(100, 0));
  auto sign = ah(1, proto::CryptoOp::kAhSign);
  ASSERT_EQ(t.table.process(0, packet.data(), sign), proto::CryptoStatus::kOk);
  auto verifyOut = ah(1, proto::CryptoOp::kAhVerify);
  EXPECT_EQ(t.table.process(0, packet.data(), verifyOut), proto::CryptoStatus::kWrongDirection);
  auto verify = ah(2, proto::CryptoOp::kAhVerify);
  EXPECT_EQ(t.table.process(0, packet.data(), verify), proto::CryptoStatus::kOk);
  EXPECT_EQ(t.table.refusals().ahSignRefusedDirection, 1u);
  EXPECT_EQ(t.table.refusals().ahVerifyRefusedDirection, 1u);
}

// Exit codes of the child below: 0 as expected, others name the step that failed.
enum ChildResult : int {
  kOk = 0, kCapability = 10, kRlimit, kNotExhausted, kEspCreated, kEspNotEnomem, kNotCreatedAfterRelease,
};

int exhaustAndCreate() {
  cap_t caps = cap_get_proc();
  const cap_value_t lock = CAP_IPC_LOCK;
  if (!caps || cap_set_flag(caps, CAP_EFFECTIVE, 1, &lock, CAP_CLEAR) != 0 || cap_set_proc(caps) != 0)
    return kCapability;
  cap_free(caps);
  // A chunk for each size class while memory may still be locked, so that
  // giving slots back below makes room again.
  auto& slab = KeySlab::process();
  for (std::size_t size = KeySlab::kMinSlot; size <= KeySlab::kMaxSlot; size <<= 1) {
    std::uint8_t* p = slab.allocate(size);
    if (p == nullptr) return kRlimit;
    slab.deallocate(p, size);
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0) return kRlimit;
  limit.rlim_cur = 0;
  if (setrlimit(RLIMIT_MEMLOCK, &limit) != 0) return kRlimit;
  // Every free slot of every size class taken: the slab must grow for the
  // next key, and cannot.
  std::vector<std::pair<std::uint8_t*, std::size_t>> taken;
  taken.reserve(1 << 16);
  for (std::size_t size = KeySlab::kMinSlot; size <= KeySlab::kMaxSlot; size <<= 1) {
    while (std::uint8_t* p = slab.allocate(size)) {
      taken.emplace_back(p, size);
      if (taken.size() >= (1 << 16)) return kNotExhausted;  // the limit does not bind
    }
  }
  Table t;
  std::uint8_t layout[3];
  int code = 0;
  if (t.table.create(1, 1, gcm(kGcmKey), SessionDirection::kInbound, 0, 1000, layout, &code).empty()) return kEspCreated;
  if (code != ENOMEM) {
    std::fprintf(stderr, "ESP refusal code %d\n", code);
    return kEspNotEnomem;
  }
  // (AH needs no slot: its HMAC keys live in OpenSSL's MAC contexts.)
  // Memory given back: the same session is created.
  for (auto [p, size] : taken) slab.deallocate(p, size);
  code = -1;
  if (!t.table.create(1, 1, gcm(kGcmKey), SessionDirection::kInbound, 0, 1000, layout, &code).empty() || code != 0)
    return kNotCreatedAfterRelease;
  return kOk;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kMlockIsIntercepted = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kMlockIsIntercepted = true;
#else
constexpr bool kMlockIsIntercepted = false;
#endif
#else
constexpr bool kMlockIsIntercepted = false;
#endif

TEST(BrokerSessions, ASessionRefusedForLackOfLockedKeyMemoryIsEnomem) {
  // The sanitizer runtimes replace mlock with a no-op that succeeds, so
  // RLIMIT_MEMLOCK cannot bind there (the slab would grow for ever).
  if (kMlockIsIntercepted) GTEST_SKIP() << "mlock is a no-op under Address- and ThreadSanitizer";
  std::fflush(nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(exhaustAndCreate());
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), kOk);
}

}  // namespace
}  // namespace ipsec::crypto
