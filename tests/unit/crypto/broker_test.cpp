// The broker's keydb channel (services/crypto/broker.cpp) on a real
// socketpair, the test playing keydb: a barrier is echoed after everything
// keydb sent before it is applied — a session's setDirection included — so
// keydb may tell policy the broker has an outbound mark (the direction
// barrier of issue 10). One real ring region, as ipsec-crypto has; the
// worker threads are not started (only the control thread is under test).
#include <utility>  // before asio

#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <sodium.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <string>
#include <vector>

#include "broker.h"
#include "control/wire.h"
#include "proto/crypto.capnp.h"
#include "ring/doorbell.h"
#include "request_check.h"
#include "ring/pool.h"
#include "ring/region.h"

namespace ipsec::crypto {
namespace {

control::UniqueFd dupFd(int fd) { return control::UniqueFd(::dup(fd)); }

const std::uint8_t kGcmKey[20] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7};  // AES-128 || salt

struct BrokerOnASocketpair {
  boost::asio::io_context io;
  control::UniqueFd keydb;
  std::optional<control::Inbox> inbox;
  ring::Region region = ring::Region::create();
  ring::Doorbell requestBell = ring::Doorbell::create(), completionBell = ring::Doorbell::create();
  std::unique_ptr<Broker> broker;

  BrokerOnASocketpair() {
    if (sodium_init() < 0) throw std::runtime_error("sodium_init");
    auto [brokerEnd, keydbEnd] = control::makeSeqpacketPair();
    keydb = std::move(keydbEnd);
    std::vector<RingFds> rings;
    rings.push_back({dupFd(region.fd()), dupFd(requestBell.fd()), dupFd(completionBell.fd())});
    broker = std::make_unique<Broker>(io, std::move(brokerEnd), std::move(rings));
    broker->start();
  }
  ~BrokerOnASocketpair() { broker->stop(); }
  void fromKeydb(capnp::MallocMessageBuilder& b) { ASSERT_EQ(control::sendMessage(keydb.get(), b), 0); }
  void pump() {
    for (int idle = 0, rounds = 0; idle < 2 && rounds < 1000; ++rounds) {
      io.restart();
      idle = io.poll() == 0 ? idle + 1 : 0;
    }
  }
  control::ReceivedMessage toKeydb() {
    if (!inbox) inbox.emplace(keydb.get());
    return inbox->receive(200);
  }
  std::uint64_t stat(const std::string& name) {
    capnp::MallocMessageBuilder b;
    auto s = b.initRoot<proto::Stats>();
    broker->fillStats(s);
    for (auto c : s.asReader().getCounters()) {
      if (c.getName() == name) return c.getValue();
    }
    return ~std::uint64_t{0};
  }
};

void createSession(BrokerOnASocketpair& t, std::uint32_t index) {
  capnp::MallocMessageBuilder b;
  auto c = b.initRoot<proto::KeydbToCrypto>().initCreateSession();
  c.initSa().setIndex(index);
  c.getSa().setGeneration(1);
  auto p = c.initParams();
  p.setSatype(SADB_SATYPE_ESP);
  p.setEncAlg(SADB_X_EALG_AES_GCM_ICV16);
  p.setAuthAlg(SADB_AALG_NONE);
  c.initKeys().setEncrypt(capnp::Data::Reader(kGcmKey, sizeof kGcmKey));
  c.setIvNext(1);
  c.setIvLimit(1000);
  c.setDirection(proto::Direction::UNKNOWN);
  t.fromKeydb(b);
}

// The refusals kept per reason reach the counters named by the reasons' own
// tables (ring::counterName, crypto::counterName), every one of them.
TEST(BrokerStats, EveryRefusalReasonHasItsCounter) {
  BrokerOnASocketpair t;
  for (std::size_t i = 1; i < ring::kDescriptorErrorCount; ++i) {
    const std::string name = std::string("drop_descriptor_") + ring::counterName(static_cast<ring::DescriptorError>(i));
    EXPECT_EQ(t.stat(name), 0u) << name;
  }
  for (std::size_t i = 1; i < kLayoutErrorCount; ++i) {
    const std::string name = std::string("drop_") + counterName(static_cast<LayoutError>(i));
    EXPECT_EQ(t.stat(name), 0u) << name;
  }
}

TEST(BrokerBarrier, IsEchoedAfterTheSetDirectionsBeforeItAreApplied) {
  BrokerOnASocketpair t;
  createSession(t, 3);
  t.pump();
  auto created = t.toKeydb();
  ASSERT_TRUE(created.reader) << created.error;
  ASSERT_EQ(created.reader->getRoot<proto::CryptoToKeydb>().which(), proto::CryptoToKeydb::SESSION_RESULT);
  ASSERT_TRUE(created.reader->getRoot<proto::CryptoToKeydb>().getSessionResult().getOk());
  EXPECT_EQ(t.stat("sessions_outbound"), 0u);

  // setDirection and the barrier in one burst, as keydb sends them.
  capnp::MallocMessageBuilder d;
  auto sd = d.initRoot<proto::KeydbToCrypto>().initSetDirection();
  sd.initSa().setIndex(3);
  sd.getSa().setGeneration(1);
  sd.setDirection(proto::Direction::OUTBOUND);
  t.fromKeydb(d);
  capnp::MallocMessageBuilder barrier;
  barrier.initRoot<proto::KeydbToCrypto>().setBarrier(0x1234567890);
  t.fromKeydb(barrier);
  t.pump();
  auto echo = t.toKeydb();
  ASSERT_TRUE(echo.reader) << echo.error;
  auto msg = echo.reader->getRoot<proto::CryptoToKeydb>();
  ASSERT_EQ(msg.which(), proto::CryptoToKeydb::BARRIER);
  EXPECT_EQ(msg.getBarrier(), 0x1234567890u);
  // When keydb reads the echo, the session seals.
  EXPECT_EQ(t.stat("sessions_outbound"), 1u);
  EXPECT_FALSE(t.toKeydb().reader);  // one echo per barrier
}

}  // namespace
}  // namespace ipsec::crypto
