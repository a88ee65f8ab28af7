// keydb as a service: a real Keydb on real socketpairs whose other ends the
// test holds, playing policy (SAD requests), the crypto broker (session
// results) and the forwarder (installs), with real Cap'n Proto messages.
// The event loop runs on the test thread (pump()), so each step is exact.
#include <utility>  // before asio

#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <sodium.h>

#include <boost/asio/io_context.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include "control/wire.h"
#include "keydb.h"

namespace ipsec::keydb {
namespace {

using control::ReceivedMessage;

class KeydbHarness {
 public:
  KeydbHarness() {
    if (sodium_init() < 0) throw std::runtime_error("sodium_init");  // keys live in sodium_malloc memory
    auto [policyEnd, policyPeer] = control::makeSeqpacketPair();
    auto [cryptoEnd, cryptoPeer] = control::makeSeqpacketPair();
    auto [fwdEnd, fwdPeer] = control::makeSeqpacketPair();
    policy_ = std::move(policyPeer);
    crypto_ = std::move(cryptoPeer);
    forwarder_ = std::move(fwdPeer);
    keydb_ = std::make_unique<Keydb>(io_, std::move(policyEnd), std::move(cryptoEnd), std::move(fwdEnd));
    keydb_->start();
    pump();
  }
  ~KeydbHarness() {
    keydb_->stop();  // before the peers close: a lost policy channel would exit
    pump();
  }

  Keydb& keydb() { return *keydb_; }
  void pump() {
    for (int idle = 0, rounds = 0; idle < 2 && rounds < 1000; ++rounds) {
      io_.restart();
      idle = io_.poll() == 0 ? idle + 1 : 0;
    }
  }
  void fromPolicy(capnp::MallocMessageBuilder& b) { send(policy_.get(), b); }
  void fromCrypto(capnp::MallocMessageBuilder& b) { send(crypto_.get(), b); }
  void fromForwarder(capnp::MallocMessageBuilder& b) { send(forwarder_.get(), b); }
  // Runs keydb's loop (its 1 s lifetime tick included) until it sends policy
  // a message or `ms` pass.
  ReceivedMessage waitForPolicy(int ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    for (;;) {
      pump();
      auto m = toPolicy(50);
      if (m.reader || std::chrono::steady_clock::now() >= until) return m;
    }
  }
  // Keydb's channels coalesce a burst of messages into shared datagrams.
  ReceivedMessage toPolicy(int ms = 1000) { return inbox(policyIn_, policy_).receive(ms); }
  ReceivedMessage toCrypto(int ms = 1000) { return inbox(cryptoIn_, crypto_).receive(ms); }
  ReceivedMessage toForwarder(int ms = 1000) { return inbox(forwarderIn_, forwarder_).receive(ms); }
  // The broker went away (its end of the channel closed).
  void loseBroker() {
    crypto_.reset();
    cryptoIn_.reset();
    pump();
  }
  // Has keydb closed its end of the broker's channel? (Reads what is left.)
  bool brokerChannelClosedByKeydb() {
    while (toCrypto(0).reader) {
    }
    char byte;
    return ::recv(crypto_.get(), &byte, 1, MSG_DONTWAIT) == 0;
  }
  // ipsecd restarted the data plane: new crypto and forwarder channels.
  void restartDataPlane() {
    auto [cryptoEnd, cryptoPeer] = control::makeSeqpacketPair();
    auto [fwdEnd, fwdPeer] = control::makeSeqpacketPair();
    crypto_ = std::move(cryptoPeer);
    forwarder_ = std::move(fwdPeer);
    cryptoIn_.reset();
    forwarderIn_.reset();
    std::vector<control::UniqueFd> fds;
    fds.push_back(std::move(cryptoEnd));
    fds.push_back(std::move(fwdEnd));
    ASSERT_TRUE(keydb_->onDataPlaneRestarted(fds));
    pump();
  }

 private:
  void send(int fd, capnp::MallocMessageBuilder& b) {
    ASSERT_EQ(control::sendMessage(fd, b), 0);
    pump();
  }
  static control::Inbox& inbox(std::optional<control::Inbox>& in, const control::UniqueFd& fd) {
    if (!in) in.emplace(fd.get());
    return *in;
  }
  boost::asio::io_context io_;
  control::UniqueFd policy_, crypto_, forwarder_;
  std::optional<control::Inbox> policyIn_, cryptoIn_, forwarderIn_;
  std::unique_ptr<Keydb> keydb_;
};

const std::uint8_t kSrc[] = {192, 0, 2, 1}, kDst[] = {192, 0, 2, 2};
const std::uint8_t kKey[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};

// An ADD as policy sends it.
void addRequest(capnp::MallocMessageBuilder& b, std::uint64_t id, std::uint8_t satype, std::uint32_t spi,
                std::uint8_t enc, std::uint8_t auth, bool keys) {
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);
  auto add = req.initAdd();
  auto p = add.initParams();
  p.setSatype(satype);
  p.setSpi(spi);
  p.setSrc(capnp::Data::Reader(kSrc, 4));
  p.setDst(capnp::Data::Reader(kDst, 4));
  p.setMode(IPSEC_MODE_TUNNEL);
  p.setEncAlg(enc);
  p.setAuthAlg(auth);
  p.setState(SADB_SASTATE_MATURE);
  auto k = add.initKeys();
  if (keys) k.setAuth(capnp::Data::Reader(kKey, 20));
}

// errorCode: the broker's errno for a refusal (0: none given, read as EINVAL).
void sessionResult(KeydbHarness& h, proto::SaRef::Reader ref, bool ok, std::uint16_t errorCode = 0) {
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::CryptoToKeydb>().initSessionResult();
  r.setSa(ref);
  r.setOk(ok);
  r.setError(ok ? "" : "no such transform");
  r.setErrorCode(errorCode);
  r.setIcvLength(12);
  h.fromCrypto(b);
}

// An AES-GCM ESP SA added and made live (session accepted, installed,
// answered), as an UPDATE finds it.
struct LiveSa {
  std::uint32_t index = 0, generation = 0;
  std::uint64_t ivLimit = 0, seqLimit = 0;
};

void addLiveEspSa(KeydbHarness& h, std::uint32_t spi, LiveSa& out, std::uint32_t reqid = 0,
                  capnp::Data::Reader dst = capnp::Data::Reader(kDst, 4),
                  const std::function<void(proto::SaParams::Builder)>& tweak = {}) {
  capnp::MallocMessageBuilder b;
  addRequest(b, 1, SADB_SATYPE_ESP, spi, SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, false);
  b.getRoot<proto::PolicyToKeydb>().getAdd().getParams().setReqid(reqid);
  b.getRoot<proto::PolicyToKeydb>().getAdd().getParams().setDst(dst);
  if (tweak) tweak(b.getRoot<proto::PolicyToKeydb>().getAdd().getParams());
  h.fromPolicy(b);
  auto s = h.toCrypto();
  ASSERT_TRUE(s.reader);
  auto c = s.reader->getRoot<proto::KeydbToCrypto>().getCreateSession();
  out = {c.getSa().getIndex(), c.getSa().getGeneration(), c.getIvLimit(), 0};
  sessionResult(h, c.getSa(), true);
  auto i = h.toForwarder();
  ASSERT_TRUE(i.reader);
  out.seqLimit = i.reader->getRoot<proto::KeydbToForwarder>().getInstall().getSeqLimit();
  ASSERT_TRUE(h.toPolicy().reader);
}

TEST(KeydbService, AnAhSaGetsACryptoSessionWithItsKeyAndThenAForwarderInstall) {
  KeydbHarness h;
  capnp::MallocMessageBuilder b;
  addRequest(b, 1, SADB_SATYPE_AH, 0x2001, SADB_EALG_NONE, SADB_X_AALG_SHA2_256HMAC, true);
  h.fromPolicy(b);
  auto s = h.toCrypto();
  ASSERT_TRUE(s.reader) << s.error;
  auto msg = s.reader->getRoot<proto::KeydbToCrypto>();
  ASSERT_EQ(msg.which(), proto::KeydbToCrypto::CREATE_SESSION);
  auto c = msg.getCreateSession();
  EXPECT_EQ(c.getParams().getSatype(), SADB_SATYPE_AH);
  ASSERT_EQ(c.getKeys().getAuth().size(), 20u);
  EXPECT_FALSE(h.toPolicy(50).reader);  // the reply waits for the broker
  sessionResult(h, c.getSa(), true);
  auto in = h.toForwarder();
  ASSERT_TRUE(in.reader) << in.error;
  auto fm = in.reader->getRoot<proto::KeydbToForwarder>();
  ASSERT_EQ(fm.which(), proto::KeydbToForwarder::INSTALL);
  EXPECT_EQ(fm.getInstall().getParams().getSatype(), SADB_SATYPE_AH);
  EXPECT_EQ(fm.getInstall().getParams().getIcvLength(), 12);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  auto reply = r.reader->getRoot<proto::KeydbToPolicy>().getReply();
  EXPECT_EQ(reply.getRequestId(), 1u);
  EXPECT_EQ(reply.getErrno(), 0);
}

TEST(KeydbService, AnAhSaTheBrokerRefusesFailsTheAddAndIsGoneAsAnEspSaWouldBe) {
  KeydbHarness h;
  capnp::MallocMessageBuilder b;
  addRequest(b, 1, SADB_SATYPE_AH, 0x2001, SADB_EALG_NONE, SADB_X_AALG_SHA2_256HMAC, true);
  h.fromPolicy(b);
  auto s = h.toCrypto();
  ASSERT_TRUE(s.reader);
  sessionResult(h, s.reader->getRoot<proto::KeydbToCrypto>().getCreateSession().getSa(), false);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), EINVAL);
  // Nothing of it is left: the same ADD may be tried again.
  capnp::MallocMessageBuilder again;
  addRequest(again, 2, SADB_SATYPE_AH, 0x2001, SADB_EALG_NONE, SADB_X_AALG_SHA2_256HMAC, true);
  h.fromPolicy(again);
  bool created = false;  // after the failed one's DESTROY_SESSION
  for (int i = 0; i < 4 && !created; ++i) {
    auto m = h.toCrypto(200);
    if (!m.reader) break;
    created = m.reader->getRoot<proto::KeydbToCrypto>().which() == proto::KeydbToCrypto::CREATE_SESSION;
  }
  EXPECT_TRUE(created);
  EXPECT_FALSE(h.toPolicy(50).reader);  // no EEXIST: it waits for its session
}

TEST(KeydbService, AnIpcompSaIsInstalledWithoutASessionAndAnsweredAtOnce) {
  KeydbHarness h;
  capnp::MallocMessageBuilder b;
  addRequest(b, 1, SADB_X_SATYPE_IPCOMP, 0x3001, SADB_X_CALG_DEFLATE, SADB_AALG_NONE, false);
  h.fromPolicy(b);
  auto in = h.toForwarder();
  ASSERT_TRUE(in.reader) << in.error;
  auto fm = in.reader->getRoot<proto::KeydbToForwarder>();
  ASSERT_EQ(fm.which(), proto::KeydbToForwarder::INSTALL);
  EXPECT_EQ(fm.getInstall().getParams().getSpi(), 0x3001u);
  EXPECT_EQ(fm.getInstall().getParams().getEncAlg(), SADB_X_CALG_DEFLATE);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), 0);
  EXPECT_FALSE(h.toCrypto(50).reader);  // no session for IPComp
}

TEST(KeydbService, AddsFasterThanTheForwarderReadsAreQueuedNotFatal) {
  // 5000 installs: far more than the socket buffer and the channels' default
  // queue of 1024 hold while the forwarder is busy elsewhere.
  constexpr std::uint32_t kSas = 5000;
  KeydbHarness h;
  for (std::uint32_t i = 0; i < kSas; ++i) {
    capnp::MallocMessageBuilder b;
    addRequest(b, i + 1, SADB_X_SATYPE_IPCOMP, 0x100 + i, SADB_X_CALG_DEFLATE, SADB_AALG_NONE, false);
    h.fromPolicy(b);
    auto r = h.toPolicy();
    ASSERT_TRUE(r.reader) << "SA " << i << ": " << r.error;
    ASSERT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), 0) << "SA " << i;
  }
  std::set<std::uint32_t> installed;
  for (int idle = 0; installed.size() < kSas && idle < 50;) {
    h.pump();
    auto in = h.toForwarder(20);
    if (!in.reader) {
      ++idle;
      continue;
    }
    idle = 0;
    auto fm = in.reader->getRoot<proto::KeydbToForwarder>();
    ASSERT_EQ(fm.which(), proto::KeydbToForwarder::INSTALL);
    installed.insert(fm.getInstall().getParams().getSpi());
  }
  EXPECT_EQ(installed.size(), kSas);
}

TEST(KeydbService, IpcompWithKeysAnotherAlgorithmOrAWideCpiIsEinval) {
  KeydbHarness h;
  struct Case {
    std::uint32_t cpi;
    std::uint8_t calg;
    bool keys;
  } cases[] = {{0x3001, SADB_X_CALG_DEFLATE, true}, {0x3001, SADB_X_CALG_LZS, false}, {0x10000, SADB_X_CALG_DEFLATE, false}};
  std::uint64_t id = 1;
  for (const auto& c : cases) {
    capnp::MallocMessageBuilder b;
    addRequest(b, id, SADB_X_SATYPE_IPCOMP, c.cpi, c.calg, SADB_AALG_NONE, c.keys);
    h.fromPolicy(b);
    auto r = h.toPolicy();
    ASSERT_TRUE(r.reader);
    auto reply = r.reader->getRoot<proto::KeydbToPolicy>().getReply();
    EXPECT_EQ(reply.getRequestId(), id);
    EXPECT_EQ(reply.getErrno(), EINVAL);
    ++id;
  }
  EXPECT_FALSE(h.toForwarder(50).reader);
}


// MOBIKE-style UPDATE of a live SA with a new source address and the same key:
// the new session and install start above everything granted before.
TEST(KeydbService, AnUpdateWithANewSourceReinstallsAboveEveryEarlierGrant) {
  KeydbHarness h;
  LiveSa old;
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1001, old));
  const std::uint64_t ivLimit1 = old.ivLimit, seqLimit1 = old.seqLimit;

  capnp::MallocMessageBuilder u;
  addRequest(u, 2, SADB_SATYPE_ESP, 0x1001, SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, false);
  u.getRoot<proto::PolicyToKeydb>().getAdd().setUpdate(true);
  const std::uint8_t moved[] = {198, 51, 100, 9};
  u.getRoot<proto::PolicyToKeydb>().getAdd().getParams().setSrc(capnp::Data::Reader(moved, 4));
  h.fromPolicy(u);
  std::uint64_t ivNext2 = 0;
  for (int i = 0; i < 4 && ivNext2 == 0; ++i) {  // DESTROY_SESSION of the old one comes first
    auto m = h.toCrypto(200);
    ASSERT_TRUE(m.reader);
    auto k = m.reader->getRoot<proto::KeydbToCrypto>();
    if (k.which() != proto::KeydbToCrypto::CREATE_SESSION) continue;
    ivNext2 = k.getCreateSession().getIvNext();
    EXPECT_GE(ivNext2, ivLimit1);
    sessionResult(h, k.getCreateSession().getSa(), true);
  }
  ASSERT_NE(ivNext2, 0u);
  bool installed = false;
  for (int i = 0; i < 4 && !installed; ++i) {  // REMOVE of the old entry comes first
    auto m = h.toForwarder(200);
    ASSERT_TRUE(m.reader);
    auto f = m.reader->getRoot<proto::KeydbToForwarder>();
    if (f.which() != proto::KeydbToForwarder::INSTALL) continue;
    installed = true;
    EXPECT_GE(f.getInstall().getSeqNext(), seqLimit1);
    ASSERT_EQ(f.getInstall().getParams().getSrc().size(), 4u);
    EXPECT_EQ(f.getInstall().getParams().getSrc()[3], 9);
  }
  EXPECT_TRUE(installed);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), 0);
}

// UPDATE of a live SA: the old forwarder entry and broker session keep
// working until the successor's install, which names the old entry (the
// forwarder moves its replay window over); then the old session goes. No
// REMOVE: the install replaces it.
TEST(KeydbService, AnUpdateKeepsTheOldSaWorkingUntilItsSuccessorReplacesIt) {
  KeydbHarness h;
  LiveSa old;
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1001, old));
  const std::uint32_t oldIndex = old.index, oldGeneration = old.generation;

  capnp::MallocMessageBuilder u;
  addRequest(u, 2, SADB_SATYPE_ESP, 0x1001, SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, false);
  u.getRoot<proto::PolicyToKeydb>().getAdd().setUpdate(true);
  h.fromPolicy(u);
  auto s2 = h.toCrypto();
  ASSERT_TRUE(s2.reader);
  auto k2 = s2.reader->getRoot<proto::KeydbToCrypto>();
  ASSERT_EQ(k2.which(), proto::KeydbToCrypto::CREATE_SESSION);  // no DESTROY_SESSION before it
  EXPECT_FALSE(h.toForwarder(100).reader);                       // and no REMOVE: the old entry works on
  sessionResult(h, k2.getCreateSession().getSa(), true);
  auto f = h.toForwarder();
  ASSERT_TRUE(f.reader);
  auto in = f.reader->getRoot<proto::KeydbToForwarder>();
  ASSERT_EQ(in.which(), proto::KeydbToForwarder::INSTALL);
  EXPECT_EQ(in.getInstall().getReplaces().getIndex(), oldIndex);
  EXPECT_EQ(in.getInstall().getReplaces().getGeneration(), oldGeneration);
  auto d = h.toCrypto();
  ASSERT_TRUE(d.reader);
  auto destroy = d.reader->getRoot<proto::KeydbToCrypto>();
  ASSERT_EQ(destroy.which(), proto::KeydbToCrypto::DESTROY_SESSION);
  EXPECT_EQ(destroy.getDestroySession().getGeneration(), oldGeneration);
  EXPECT_FALSE(h.toForwarder(100).reader);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), 0);
}

void usageReport(KeydbHarness& h, const LiveSa& sa, std::uint64_t bytes, std::uint64_t packets,
                 std::uint64_t firstUse);
std::uint64_t unixNow();

// An UPDATE of SPI 0x1001 as policy sends it: the same key, a new source and
// new soft byte limit, so the old SA's parameters can be told from the new.
const std::uint8_t kUpdatedSrc[] = {198, 51, 100, 9};
// A GETSPI of an ESP SPI in [min, max] from kSrc to kDst, as policy sends it;
// returns keydb's errno (-1: no answer).
int getSpi(KeydbHarness& h, std::uint64_t id, std::uint32_t min, std::uint32_t max) {
  capnp::MallocMessageBuilder b;
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);
  auto spi = req.initGetSpi();
  spi.setSatype(SADB_SATYPE_ESP);
  spi.setSrc(capnp::Data::Reader(kSrc, 4));
  spi.setDst(capnp::Data::Reader(kDst, 4));
  spi.setMin(min);
  spi.setMax(max);
  h.fromPolicy(b);
  auto r = h.toPolicy();
  return r.reader ? r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno() : -1;
}

void sendUpdate(KeydbHarness& h, std::uint64_t id, std::uint32_t spi = 0x1001) {
  capnp::MallocMessageBuilder u;
  addRequest(u, id, SADB_SATYPE_ESP, spi, SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, false);
  u.getRoot<proto::PolicyToKeydb>().getAdd().setUpdate(true);
  u.getRoot<proto::PolicyToKeydb>().getAdd().getParams().setSrc(capnp::Data::Reader(kUpdatedSrc, 4));
  u.getRoot<proto::PolicyToKeydb>().getAdd().getParams().initSoft().setBytes(5000);
  h.fromPolicy(u);
}

// GET of (ESP, spi, kDst) as policy sends it; the reply.
ReceivedMessage getSa(KeydbHarness& h, std::uint64_t id, std::uint32_t spi = 0x1001) {
  capnp::MallocMessageBuilder get;
  auto g = get.initRoot<proto::PolicyToKeydb>();
  g.setRequestId(id);
  auto n = g.initGet();
  n.setSatype(SADB_SATYPE_ESP);
  n.setSpi(spi);
  n.setDst(capnp::Data::Reader(kDst, 4));
  h.fromPolicy(get);
  return h.toPolicy();
}

// Every message keydb sent the forwarder or the broker until they go quiet:
// their kinds.
std::vector<proto::KeydbToForwarder::Which> drainForwarder(KeydbHarness& h) {
  std::vector<proto::KeydbToForwarder::Which> out;
  for (auto m = h.toForwarder(100); m.reader; m = h.toForwarder(100)) {
    out.push_back(m.reader->getRoot<proto::KeydbToForwarder>().which());
  }
  return out;
}
std::vector<proto::KeydbToCrypto::Which> drainCrypto(KeydbHarness& h) {
  std::vector<proto::KeydbToCrypto::Which> out;
  for (auto m = h.toCrypto(100); m.reader; m = h.toCrypto(100)) {
    out.push_back(m.reader->getRoot<proto::KeydbToCrypto>().which());
  }
  return out;
}

// The forwarder asking for more sequence numbers, the broker for more IVs.
void seqRequest(KeydbHarness& h, const LiveSa& sa) {
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::ForwarderToKeydb>().initSeqRequest();
  r.initSa().setIndex(sa.index);
  r.getSa().setGeneration(sa.generation);
  h.fromForwarder(b);
}
void ivRequest(KeydbHarness& h, const LiveSa& sa) {
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::CryptoToKeydb>().initIvRequest();
  r.initSa().setIndex(sa.index);
  r.getSa().setGeneration(sa.generation);
  h.fromCrypto(b);
}

// If the successor's session is refused, the UPDATE fails with the broker's
// errno and the old SA is back as it was (Linux's xfrm_state_update and
// FreeBSD's key_update leave the SA a failed UPDATE names): GET shows its
// parameters, usage and add time, its forwarder entry (and replay window)
// and broker session were never touched, it still gets sequence number and
// IV grants under its ref, and a later UPDATE replaces it.
void expectRefusedUpdateLeavesTheOldSa(std::uint16_t errorCode, int expectedErrno) {
  KeydbHarness h;
  LiveSa old;
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1001, old, 0, capnp::Data::Reader(kDst, 4),
                                       [](proto::SaParams::Builder p) { p.initSoft().setBytes(1000); }));
  usageReport(h, old, 700, 7, unixNow());
  auto before = getSa(h, 10);
  ASSERT_TRUE(before.reader);
  const auto beforeRecord = before.reader->getRoot<proto::KeydbToPolicy>().getReply().getSas()[0];
  const std::uint64_t addTime = beforeRecord.getCurrent().getAddTime();

  sendUpdate(h, 2);
  auto s2 = h.toCrypto();
  ASSERT_TRUE(s2.reader);
  auto create = s2.reader->getRoot<proto::KeydbToCrypto>();
  ASSERT_EQ(create.which(), proto::KeydbToCrypto::CREATE_SESSION);
  // The old SA asks for more while it waits: no answer yet (the successor's
  // blocks start where its grants end), and they ask only once.
  seqRequest(h, old);
  ivRequest(h, old);
  EXPECT_TRUE(drainForwarder(h).empty());
  sessionResult(h, create.getCreateSession().getSa(), false, errorCode);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), expectedErrno);

  // Nothing removed or destroyed; the unanswered requests answered.
  EXPECT_EQ(drainForwarder(h), std::vector{proto::KeydbToForwarder::SEQ_GRANT});
  EXPECT_EQ(drainCrypto(h), std::vector{proto::KeydbToCrypto::IV_GRANT});

  auto after = getSa(h, 11);
  ASSERT_TRUE(after.reader);
  auto reply = after.reader->getRoot<proto::KeydbToPolicy>().getReply();
  ASSERT_EQ(reply.getErrno(), 0);
  ASSERT_EQ(reply.getSas().size(), 1u);
  auto p = reply.getSas()[0].getParams();
  EXPECT_EQ(p.getSrc(), capnp::Data::Reader(kSrc, 4));
  EXPECT_EQ(p.getSoft().getBytes(), 1000u);
  EXPECT_EQ(p.getState(), SADB_SASTATE_MATURE);
  EXPECT_EQ(reply.getSas()[0].getCurrent().getBytes(), 700u);
  EXPECT_EQ(reply.getSas()[0].getCurrent().getAddTime(), addTime);

  // Grants still go to the old ref, above everything granted before.
  seqRequest(h, old);
  auto g = h.toForwarder();
  ASSERT_TRUE(g.reader);
  auto grant = g.reader->getRoot<proto::KeydbToForwarder>();
  ASSERT_EQ(grant.which(), proto::KeydbToForwarder::SEQ_GRANT);
  EXPECT_EQ(grant.getSeqGrant().getSa().getIndex(), old.index);
  EXPECT_EQ(grant.getSeqGrant().getSa().getGeneration(), old.generation);
  EXPECT_GT(grant.getSeqGrant().getSeqLimit(), old.seqLimit);
  ivRequest(h, old);
  auto ig = h.toCrypto();
  ASSERT_TRUE(ig.reader);
  auto ivGrant = ig.reader->getRoot<proto::KeydbToCrypto>();
  ASSERT_EQ(ivGrant.which(), proto::KeydbToCrypto::IV_GRANT);
  EXPECT_EQ(ivGrant.getIvGrant().getSa().getIndex(), old.index);
  EXPECT_EQ(ivGrant.getIvGrant().getSa().getGeneration(), old.generation);
  EXPECT_GT(ivGrant.getIvGrant().getIvLimit(), old.ivLimit);

  // A second UPDATE replaces it as any would: the install names the old
  // entry, then the old session goes.
  sendUpdate(h, 3);
  auto s3 = h.toCrypto();
  ASSERT_TRUE(s3.reader);
  auto create3 = s3.reader->getRoot<proto::KeydbToCrypto>();
  ASSERT_EQ(create3.which(), proto::KeydbToCrypto::CREATE_SESSION);
  EXPECT_GE(create3.getCreateSession().getIvNext(), ivGrant.getIvGrant().getIvLimit());
  sessionResult(h, create3.getCreateSession().getSa(), true);
  auto f = h.toForwarder();
  ASSERT_TRUE(f.reader);
  auto in = f.reader->getRoot<proto::KeydbToForwarder>();
  ASSERT_EQ(in.which(), proto::KeydbToForwarder::INSTALL);
  EXPECT_EQ(in.getInstall().getReplaces().getIndex(), old.index);
  EXPECT_EQ(in.getInstall().getReplaces().getGeneration(), old.generation);
  EXPECT_GE(in.getInstall().getSeqNext(), grant.getSeqGrant().getSeqLimit());
  auto d = h.toCrypto();
  ASSERT_TRUE(d.reader);
  ASSERT_EQ(d.reader->getRoot<proto::KeydbToCrypto>().which(), proto::KeydbToCrypto::DESTROY_SESSION);
  EXPECT_EQ(d.reader->getRoot<proto::KeydbToCrypto>().getDestroySession().getIndex(), old.index);
  auto ok = h.toPolicy();
  ASSERT_TRUE(ok.reader);
  EXPECT_EQ(ok.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), 0);
  auto now = getSa(h, 12);
  ASSERT_TRUE(now.reader);
  EXPECT_EQ(now.reader->getRoot<proto::KeydbToPolicy>().getReply().getSas()[0].getParams().getSrc(),
            capnp::Data::Reader(kUpdatedSrc, 4));
}

TEST(KeydbService, AnUpdateWhoseSessionIsRefusedLeavesTheOldSaAsItWas) {
  expectRefusedUpdateLeavesTheOldSa(0, EINVAL);
}

TEST(KeydbService, AnUpdateRefusedForLackOfBrokerKeyMemoryIsEnomemAndLeavesTheOldSa) {
  expectRefusedUpdateLeavesTheOldSa(ENOMEM, ENOMEM);
}

// GETSPI then an UPDATE the broker refuses: the larval SA stays (Linux checks
// the new state before xfrm_state_update looks at the larval one) and a
// corrected UPDATE then completes it.
TEST(KeydbService, ARefusedUpdateOfALarvalSaLeavesItLarval) {
  KeydbHarness h;
  ASSERT_EQ(getSpi(h, 1, 0x6000, 0x6000), 0);

  sendUpdate(h, 2, 0x6000);
  auto s = h.toCrypto();
  ASSERT_TRUE(s.reader);
  sessionResult(h, s.reader->getRoot<proto::KeydbToCrypto>().getCreateSession().getSa(), false, EINVAL);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), EINVAL);
  EXPECT_TRUE(drainForwarder(h).empty());  // a larval SA has nothing in the data plane
  EXPECT_TRUE(drainCrypto(h).empty());
  auto g = getSa(h, 3, 0x6000);
  ASSERT_TRUE(g.reader);
  auto reply = g.reader->getRoot<proto::KeydbToPolicy>().getReply();
  ASSERT_EQ(reply.getErrno(), 0);
  EXPECT_EQ(reply.getSas()[0].getParams().getState(), SADB_SASTATE_LARVAL);
  EXPECT_EQ(h.keydb().sadSize(), 1u);

  sendUpdate(h, 4, 0x6000);
  auto s2 = h.toCrypto();
  ASSERT_TRUE(s2.reader);
  sessionResult(h, s2.reader->getRoot<proto::KeydbToCrypto>().getCreateSession().getSa(), true);
  auto f = h.toForwarder();
  ASSERT_TRUE(f.reader);
  auto in = f.reader->getRoot<proto::KeydbToForwarder>();
  ASSERT_EQ(in.which(), proto::KeydbToForwarder::INSTALL);
  EXPECT_FALSE(in.getInstall().hasReplaces());  // no entry of the larval SA to take over
  auto ok = h.toPolicy();
  ASSERT_TRUE(ok.reader);
  EXPECT_EQ(ok.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), 0);
  EXPECT_TRUE(drainCrypto(h).empty());  // no session of the larval SA to destroy
}

// While an UPDATE waits for its session the old SA has no name, and the 1 s
// tick passes over its due time; once back it is judged and scheduled again:
// a hard add time reached meanwhile ends it then.
TEST(KeydbService, AnSaBackFromARefusedUpdateStillHasItsTimeLimits) {
  KeydbHarness h;
  LiveSa old;
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1001, old, 0, capnp::Data::Reader(kDst, 4),
                                       [](proto::SaParams::Builder p) { p.initHard().setAddTime(2); }));
  sendUpdate(h, 2);
  auto s = h.toCrypto();
  ASSERT_TRUE(s.reader);
  EXPECT_FALSE(h.waitForPolicy(2600).reader);  // its due time passes while it waits
  sessionResult(h, s.reader->getRoot<proto::KeydbToCrypto>().getCreateSession().getSa(), false, EINVAL);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), EINVAL);
  auto e = h.waitForPolicy(2500);
  ASSERT_TRUE(e.reader) << e.error;
  ASSERT_EQ(e.reader->getRoot<proto::KeydbToPolicy>().which(), proto::KeydbToPolicy::EXPIRE);
  EXPECT_TRUE(e.reader->getRoot<proto::KeydbToPolicy>().getExpire().getHard());
  bool removed = false;
  for (auto m = h.toForwarder(200); m.reader; m = h.toForwarder(100)) {
    auto f = m.reader->getRoot<proto::KeydbToForwarder>();
    if (f.which() == proto::KeydbToForwarder::REMOVE && f.getRemove().getIndex() == old.index) removed = true;
  }
  EXPECT_TRUE(removed);
  EXPECT_EQ(h.keydb().sadSize(), 0u);
}

// A second UPDATE while the first still waits: the first is answered EINTR,
// and if the second is refused the SA both replaced is back.
TEST(KeydbService, AnUpdateOverAWaitingUpdateStillLeavesTheOriginalSaIfRefused) {
  KeydbHarness h;
  LiveSa old;
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1001, old));
  sendUpdate(h, 2);
  auto s2 = h.toCrypto();
  ASSERT_TRUE(s2.reader);
  sendUpdate(h, 3);
  auto r2 = h.toPolicy();
  ASSERT_TRUE(r2.reader);
  EXPECT_EQ(r2.reader->getRoot<proto::KeydbToPolicy>().getReply().getRequestId(), 2u);
  EXPECT_EQ(r2.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), EINTR);
  // The broker hears that the first successor's session is to go, then the
  // second's request; nothing about the original.
  std::optional<std::pair<std::uint32_t, std::uint32_t>> second;  // index, generation
  for (auto m = h.toCrypto(100); m.reader; m = h.toCrypto(100)) {
    auto k = m.reader->getRoot<proto::KeydbToCrypto>();
    if (k.which() == proto::KeydbToCrypto::DESTROY_SESSION) {
      EXPECT_NE(k.getDestroySession().getIndex(), old.index);
    } else if (k.which() == proto::KeydbToCrypto::CREATE_SESSION) {
      second = {k.getCreateSession().getSa().getIndex(), k.getCreateSession().getSa().getGeneration()};
    }
  }
  ASSERT_TRUE(second);
  capnp::MallocMessageBuilder ref;
  auto r = ref.initRoot<proto::SaRef>();
  r.setIndex(second->first);
  r.setGeneration(second->second);
  sessionResult(h, r.asReader(), false, ENOMEM);
  auto r3 = h.toPolicy();
  ASSERT_TRUE(r3.reader);
  EXPECT_EQ(r3.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), ENOMEM);
  for (auto m = h.toForwarder(100); m.reader; m = h.toForwarder(100)) {
    auto f = m.reader->getRoot<proto::KeydbToForwarder>();
    EXPECT_NE(f.which(), proto::KeydbToForwarder::INSTALL);
    if (f.which() == proto::KeydbToForwarder::REMOVE) {
      EXPECT_NE(f.getRemove().getIndex(), old.index);
    }
  }
  auto g = getSa(h, 4);
  ASSERT_TRUE(g.reader);
  auto reply = g.reader->getRoot<proto::KeydbToPolicy>().getReply();
  ASSERT_EQ(reply.getErrno(), 0);
  EXPECT_EQ(reply.getSas()[0].getParams().getSrc(), capnp::Data::Reader(kSrc, 4));
}

// The broker's errno reaches the client: ENOMEM (no locked key memory left
// in the broker) as ENOMEM; none given, or one a PF_KEY reply cannot carry
// (sadb_msg_errno is a u8), as EINVAL. The SA is gone either way.
TEST(KeydbService, ARefusedSessionAnswersTheAddWithTheBrokersErrno) {
  struct Case {
    std::uint16_t errorCode;
    int expected;
  } cases[] = {{ENOMEM, ENOMEM}, {0, EINVAL}, {EINVAL, EINVAL}, {300, EINVAL}};
  for (const auto& c : cases) {
    KeydbHarness h;
    capnp::MallocMessageBuilder b;
    addRequest(b, 1, SADB_SATYPE_ESP, 0x1001, SADB_X_EALG_AES_GCM_ICV16, SADB_AALG_NONE, false);
    h.fromPolicy(b);
    auto s = h.toCrypto();
    ASSERT_TRUE(s.reader);
    sessionResult(h, s.reader->getRoot<proto::KeydbToCrypto>().getCreateSession().getSa(), false, c.errorCode);
    auto r = h.toPolicy();
    ASSERT_TRUE(r.reader);
    EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), c.expected) << c.errorCode;
    for (auto m = h.toForwarder(50); m.reader; m = h.toForwarder(50)) {  // at most a REMOVE
      EXPECT_NE(m.reader->getRoot<proto::KeydbToForwarder>().which(), proto::KeydbToForwarder::INSTALL);
    }
    capnp::MallocMessageBuilder get;
    auto g = get.initRoot<proto::PolicyToKeydb>();
    g.setRequestId(2);
    auto n = g.initGet();
    n.setSatype(SADB_SATYPE_ESP);
    n.setSpi(0x1001);
    n.setDst(capnp::Data::Reader(kDst, 4));
    h.fromPolicy(get);
    auto gr = h.toPolicy();
    ASSERT_TRUE(gr.reader);
    EXPECT_EQ(gr.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), ESRCH);
  }
}

// ---- X_MIGRATE --------------------------------------------------------------

const std::uint8_t kNewSrc[] = {198, 51, 100, 1}, kNewDst[] = {198, 51, 100, 2}, kOtherDst[] = {192, 0, 2, 9};

// Policy's MIGRATE of the tunnel-mode ESP SAs between kSrc and kDst (of
// `reqid`, any when 0) to kNewSrc/kNewDst.
void migrate(KeydbHarness& h, std::uint64_t id, std::uint32_t reqid) {
  capnp::MallocMessageBuilder b;
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(id);
  auto m = req.initMigrate(1)[0];
  m.setSatype(SADB_SATYPE_ESP);
  m.setMode(IPSEC_MODE_TUNNEL);
  m.setReqid(reqid);
  m.setOldSrc(capnp::Data::Reader(kSrc, 4));
  m.setOldDst(capnp::Data::Reader(kDst, 4));
  m.setNewSrc(capnp::Data::Reader(kNewSrc, 4));
  m.setNewDst(capnp::Data::Reader(kNewDst, 4));
  h.fromPolicy(b);
}

// keydb's answer to a GET of (esp, spi, dst).
int getErrno(KeydbHarness& h, std::uint32_t spi, const std::uint8_t* dst) {
  capnp::MallocMessageBuilder b;
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(99);
  auto n = req.initGet();
  n.setSatype(SADB_SATYPE_ESP);
  n.setSpi(spi);
  n.setDst(capnp::Data::Reader(dst, 4));
  h.fromPolicy(b);
  auto r = h.toPolicy();
  return r.reader ? r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno() : -1;
}

// The forwarder's INSTALLs (refs) until it is quiet; fails on anything else
// (a REMOVE first would drop the replay window the reinstall keeps).
std::vector<std::pair<std::uint32_t, std::uint32_t>> installs(KeydbHarness& h) {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
  for (auto m = h.toForwarder(100); m.reader; m = h.toForwarder(100)) {
    auto f = m.reader->getRoot<proto::KeydbToForwarder>();
    EXPECT_EQ(f.which(), proto::KeydbToForwarder::INSTALL);
    if (f.which() != proto::KeydbToForwarder::INSTALL) continue;
    auto in = f.getInstall();
    EXPECT_EQ(in.getParams().getDst(), capnp::Data::Reader(kNewDst, 4));
    EXPECT_EQ(in.getParams().getSrc(), capnp::Data::Reader(kNewSrc, 4));
    EXPECT_EQ(in.getReplaces().getGeneration(), 0u);  // the same entry, not a successor
    out.emplace_back(in.getSa().getIndex(), in.getSa().getGeneration());
  }
  return out;
}

TEST(KeydbService, AMigrateMovesEveryMatchingSaUnderItsRefAndReinstallsIt) {
  KeydbHarness h;
  LiveSa a, b, elsewhere;
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1001, a, 5));
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1002, b, 6));
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1003, elsewhere, 5, capnp::Data::Reader(kOtherDst, 4)));

  migrate(h, 2, 0);  // reqid 0: any
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  auto reply = r.reader->getRoot<proto::KeydbToPolicy>().getReply();
  EXPECT_EQ(reply.getRequestId(), 2u);
  EXPECT_EQ(reply.getErrno(), 0);
  ASSERT_EQ(reply.getSas().size(), 2u);
  for (auto rec : reply.getSas()) {
    EXPECT_EQ(rec.getParams().getDst(), capnp::Data::Reader(kNewDst, 4));
    EXPECT_NE(rec.getParams().getSpi(), 0x1003u);
  }
  auto in = installs(h);
  std::sort(in.begin(), in.end());
  std::vector<std::pair<std::uint32_t, std::uint32_t>> expected{{a.index, a.generation}, {b.index, b.generation}};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(in, expected);
  EXPECT_FALSE(h.toCrypto(50).reader) << "the broker sessions stay: they do not depend on addresses";

  EXPECT_EQ(getErrno(h, 0x1001, kNewDst), 0);
  EXPECT_EQ(getErrno(h, 0x1002, kNewDst), 0);
  EXPECT_EQ(getErrno(h, 0x1001, kDst), ESRCH);
  EXPECT_EQ(getErrno(h, 0x1003, kOtherDst), 0);  // not between the old addresses: stays
}

TEST(KeydbService, AMigrateWithAReqidMovesOnlyThatReqidsSas) {
  KeydbHarness h;
  LiveSa a, b;
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1001, a, 5));
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1002, b, 6));
  migrate(h, 2, 6);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  auto reply = r.reader->getRoot<proto::KeydbToPolicy>().getReply();
  EXPECT_EQ(reply.getErrno(), 0);
  ASSERT_EQ(reply.getSas().size(), 1u);
  EXPECT_EQ(reply.getSas()[0].getParams().getSpi(), 0x1002u);
  auto in = installs(h);
  ASSERT_EQ(in.size(), 1u);
  EXPECT_EQ(in[0], std::make_pair(b.index, b.generation));
  EXPECT_EQ(getErrno(h, 0x1001, kDst), 0);
  EXPECT_EQ(getErrno(h, 0x1002, kNewDst), 0);
}

TEST(KeydbService, AMigrateOntoATakenNameIsEexistAndMovesNothing) {
  KeydbHarness h;
  LiveSa a, b, holder;
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1001, a));
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1002, b));
  ASSERT_NO_FATAL_FAILURE(addLiveEspSa(h, 0x1001, holder, 0, capnp::Data::Reader(kNewDst, 4)));
  migrate(h, 2, 0);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), EEXIST);
  EXPECT_FALSE(h.toForwarder(100).reader) << "nothing reinstalled";
  EXPECT_FALSE(h.toCrypto(50).reader);
  EXPECT_EQ(getErrno(h, 0x1001, kDst), 0);
  EXPECT_EQ(getErrno(h, 0x1002, kDst), 0);  // could have moved, but all or nothing
  EXPECT_EQ(getErrno(h, 0x1002, kNewDst), ESRCH);
}

// A dump goes out in chunks of at most Keydb::kDumpChunk SAs, each one
// control message, all but the last with `more`; together they hold every
// SA once. (1200 IPComp SAs: installed without a broker session.)
TEST(KeydbService, ADumpComesInChunksThatTogetherHoldEverySaOnce) {
  KeydbHarness h;
  constexpr std::uint32_t kSas = 1200;
  for (std::uint32_t i = 0; i < kSas; ++i) {
    capnp::MallocMessageBuilder b;
    addRequest(b, i + 1, SADB_X_SATYPE_IPCOMP, 0x1000 + i, SADB_X_CALG_DEFLATE, SADB_AALG_NONE, false);
    h.fromPolicy(b);
    auto r = h.toPolicy();
    ASSERT_TRUE(r.reader) << r.error;
    ASSERT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), 0);
    ASSERT_TRUE(h.toForwarder().reader);
  }
  capnp::MallocMessageBuilder b;
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(99999);
  req.setDump(SADB_SATYPE_UNSPEC);
  h.fromPolicy(b);
  std::set<std::uint32_t> spis;
  unsigned chunks = 0, records = 0;
  bool more = true;
  for (int tries = 0; more && tries < 100; ++tries) {
    h.pump();
    auto r = h.toPolicy(100);
    if (!r.reader) continue;
    auto reply = r.reader->getRoot<proto::KeydbToPolicy>().getReply();
    ASSERT_EQ(reply.getRequestId(), 99999u);
    ASSERT_EQ(reply.getErrno(), 0);
    EXPECT_LE(reply.getSas().size(), Keydb::kDumpChunk);
    for (auto s : reply.getSas()) spis.insert(s.getParams().getSpi());
    records += reply.getSas().size();
    ++chunks;
    more = reply.getMore();
  }
  EXPECT_FALSE(more);
  EXPECT_EQ(records, kSas);
  EXPECT_EQ(spis.size(), kSas);
  EXPECT_EQ(chunks, (kSas + Keydb::kDumpChunk - 1) / Keydb::kDumpChunk);
}

// net.key.max_sas: an ADD (or GETSPI) beyond it is answered ENOBUFS, keydb
// stays up and counts it, and once an SA is gone the next ADD fits again.
TEST(KeydbService, AnAddBeyondMaxSasIsEnobufsAndKeydbCarriesOn) {
  KeydbHarness h;
  h.keydb().setSysctl("net.key.max_sas", 3);
  auto add = [&](std::uint64_t id, std::uint32_t spi) {
    capnp::MallocMessageBuilder b;
    addRequest(b, id, SADB_X_SATYPE_IPCOMP, spi, SADB_X_CALG_DEFLATE, SADB_AALG_NONE, false);
    h.fromPolicy(b);
    auto r = h.toPolicy();
    EXPECT_TRUE(r.reader) << r.error;
    return r.reader ? r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno() : -1;
  };
  for (std::uint32_t i = 0; i < 3; ++i) EXPECT_EQ(add(i + 1, 0x100 + i), 0);
  EXPECT_EQ(add(4, 0x200), ENOBUFS);
  EXPECT_EQ(getSpi(h, 5, 0x1000, 0x2000), ENOBUFS);
  capnp::MallocMessageBuilder stats;
  h.keydb().fillStats(stats.initRoot<proto::Stats>());
  bool counted = false;
  for (auto c : stats.getRoot<proto::Stats>().getCounters()) {
    if (c.getName() == "add_over_max_sas") counted = c.getValue() == 2;
  }
  EXPECT_TRUE(counted);
  // Delete one: the next ADD fits.
  capnp::MallocMessageBuilder del;
  auto d = del.initRoot<proto::PolicyToKeydb>();
  d.setRequestId(6);
  auto n = d.initDelete();
  n.setSatype(SADB_X_SATYPE_IPCOMP);
  n.setSpi(0x100);
  n.setDst(capnp::Data::Reader(kDst, 4));
  h.fromPolicy(del);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader);
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToPolicy>().getReply().getErrno(), 0);
  EXPECT_EQ(add(7, 0x201), 0);
}

TEST(KeydbService, ADumpOfAnEmptySadIsEnoent) {
  KeydbHarness h;
  capnp::MallocMessageBuilder b;
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(5);
  req.setDump(SADB_SATYPE_ESP);
  h.fromPolicy(b);
  auto r = h.toPolicy();
  ASSERT_TRUE(r.reader) << r.error;
  auto reply = r.reader->getRoot<proto::KeydbToPolicy>().getReply();
  EXPECT_EQ(reply.getErrno(), ENOENT);
  EXPECT_FALSE(reply.getMore());
}

// ---- directions and IV offsets (DESIGN §3) -------------------------------------

// An ESP SA as policy sends it, judged outbound or not by policy's SPD.
struct SaSpec {
  std::uint32_t spi = 0x1001;
  const std::uint8_t* src = kSrc;
  const std::uint8_t* dst = kDst;
  std::uint8_t mode = IPSEC_MODE_TUNNEL;
  std::uint32_t reqid = 0;
  bool outbound = false;
  bool update = false;
  std::uint8_t satype = SADB_SATYPE_ESP;
};

// Sends the ADD/UPDATE and returns the CreateSession keydb sends for it
// (after any DESTROY_SESSION), accepting the session unless told not to.
struct Created {
  std::uint32_t index = 0, generation = 0;
  proto::Direction direction = proto::Direction::UNKNOWN;
  std::uint64_t ivNext = 0, ivLimit = 0;
};
Created addSa(KeydbHarness& h, const SaSpec& spec, bool accept = true, capnp::Data::Reader encKey = {}) {
  capnp::MallocMessageBuilder b;
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(spec.spi);
  auto add = req.initAdd();
  add.setUpdate(spec.update);
  add.setOutbound(spec.outbound);
  auto p = add.initParams();
  p.setSatype(spec.satype);
  p.setSpi(spec.spi);
  p.setSrc(capnp::Data::Reader(spec.src, 4));
  p.setDst(capnp::Data::Reader(spec.dst, 4));
  p.setMode(spec.mode);
  p.setReqid(spec.reqid);
  p.setEncAlg(spec.satype == SADB_SATYPE_ESP ? SADB_X_EALG_AES_GCM_ICV16 : SADB_EALG_NONE);
  p.setAuthAlg(spec.satype == SADB_SATYPE_AH ? SADB_X_AALG_SHA2_256HMAC : SADB_AALG_NONE);
  p.setState(SADB_SASTATE_MATURE);
  auto k = add.initKeys();
  k.setEncrypt(encKey);
  h.fromPolicy(b);
  Created out;
  for (int i = 0; i < 4; ++i) {
    auto m = h.toCrypto(500);
    if (!m.reader) break;
    auto msg = m.reader->getRoot<proto::KeydbToCrypto>();
    if (msg.which() != proto::KeydbToCrypto::CREATE_SESSION) continue;
    auto c = msg.getCreateSession();
    out = {c.getSa().getIndex(), c.getSa().getGeneration(), c.getDirection(), c.getIvNext(), c.getIvLimit()};
    if (accept) {
      sessionResult(h, c.getSa(), true);
      drainForwarder(h);
      h.toPolicy();
    }
    return out;
  }
  ADD_FAILURE() << "no CreateSession for SPI " << spec.spi;
  return out;
}

struct Template {
  std::uint8_t satype = SADB_SATYPE_ESP;
  std::uint8_t mode = IPSEC_MODE_TUNNEL;
  std::uint32_t reqid = 0;
  const std::uint8_t* src = kSrc;
  std::uint8_t srcPrefix = 32;
  const std::uint8_t* dst = kDst;
  std::uint8_t dstPrefix = 32;
};

void markOutbound(KeydbHarness& h, const std::vector<Template>& templates, std::uint64_t requestId = 0) {
  capnp::MallocMessageBuilder b;
  auto req = b.initRoot<proto::PolicyToKeydb>();
  req.setRequestId(requestId);
  auto list = req.initMarkOutbound(static_cast<unsigned>(templates.size()));
  for (unsigned i = 0; i < templates.size(); ++i) {
    const auto& t = templates[i];
    list[i].setSatype(t.satype);
    list[i].setMode(t.mode);
    list[i].setReqid(t.reqid);
    list[i].setSrc(capnp::Data::Reader(t.src, 4));
    list[i].setSrcPrefix(t.srcPrefix);
    list[i].setDst(capnp::Data::Reader(t.dst, 4));
    list[i].setDstPrefix(t.dstPrefix);
  }
  h.fromPolicy(b);
}

// The sessions (by slot index) the broker was told are now outbound; fails
// the test on any other message to the broker.
std::multiset<std::uint32_t> setDirections(KeydbHarness& h) {
  std::multiset<std::uint32_t> out;
  for (;;) {
    auto m = h.toCrypto(100);
    if (!m.reader) return out;
    auto msg = m.reader->getRoot<proto::KeydbToCrypto>();
    if (msg.which() != proto::KeydbToCrypto::SET_DIRECTION) {
      ADD_FAILURE() << "unexpected message to the broker: " << static_cast<int>(msg.which());
      continue;
    }
    EXPECT_EQ(msg.getSetDirection().getDirection(), proto::Direction::OUTBOUND);
    out.insert(msg.getSetDirection().getSa().getIndex());
  }
}

const std::uint8_t kPeer[] = {198, 51, 100, 7};

TEST(KeydbDirection, AnSaPolicyJudgedOutboundGetsAnOutboundSessionAnyOtherAnUnknownOne) {
  KeydbHarness h;
  EXPECT_EQ(addSa(h, {.spi = 0x1001, .outbound = true}).direction, proto::Direction::OUTBOUND);
  EXPECT_EQ(addSa(h, {.spi = 0x1002, .src = kDst, .dst = kSrc}).direction, proto::Direction::UNKNOWN);
}

TEST(KeydbDirection, AnSaFromGetSpiIsInboundThroughItsUpdateAndStaysSo) {
  KeydbHarness h;
  ASSERT_EQ(getSpi(h, 1, 0x6000, 0x6000), 0);
  // Even judged outbound (a transport policy wide enough to hold both
  // directions), the SPI this host asked for is the one it receives on.
  auto c = addSa(h, {.spi = 0x6000, .mode = IPSEC_MODE_ANY, .outbound = true, .update = true});
  EXPECT_EQ(c.direction, proto::Direction::INBOUND);
  markOutbound(h, {{.mode = IPSEC_MODE_TRANSPORT, .srcPrefix = 0, .dstPrefix = 0}});
  EXPECT_TRUE(setDirections(h).empty());
  // A later UPDATE (a lifetime refresh) keeps it inbound.
  auto again = addSa(h, {.spi = 0x6000, .mode = IPSEC_MODE_ANY, .outbound = true, .update = true});
  EXPECT_EQ(again.direction, proto::Direction::INBOUND);
}

TEST(KeydbDirection, AnOutboundTunnelPolicyMarksTheSasItsEndpointsAndReqidNameOnceEach) {
  KeydbHarness h;
  auto out = addSa(h, {.spi = 0x1001});
  auto outReqid = addSa(h, {.spi = 0x1002, .reqid = 7});
  auto otherReqid = addSa(h, {.spi = 0x1003, .reqid = 8});
  auto back = addSa(h, {.spi = 0x1004, .src = kDst, .dst = kSrc});          // the peer's direction
  auto transport = addSa(h, {.spi = 0x1005, .mode = IPSEC_MODE_TRANSPORT});  // serves no tunnel
  auto ah = addSa(h, {.spi = 0x1006, .satype = SADB_SATYPE_AH});
  auto pending = addSa(h, {.spi = 0x1007, .reqid = 7}, /*accept=*/false);   // session not answered yet
  for (auto* c : {&out, &outReqid, &otherReqid, &back, &transport, &ah, &pending}) {
    EXPECT_EQ(c->direction, proto::Direction::UNKNOWN);
  }
  markOutbound(h, {{.reqid = 7}});
  EXPECT_EQ(setDirections(h), (std::multiset{outReqid.index, pending.index}));
  // Level require (reqid 0) takes any reqid; each SA hears it once only.
  markOutbound(h, {{}});
  EXPECT_EQ(setDirections(h), (std::multiset{out.index, otherReqid.index}));
  markOutbound(h, {{}, {.reqid = 7}});
  EXPECT_TRUE(setDirections(h).empty());
  EXPECT_EQ(h.keydb().sadSize(), 7u);
}

TEST(KeydbDirection, TransportAndBundleTemplatesMarkTheSasInsideTheSelector) {
  KeydbHarness h;
  auto esp = addSa(h, {.spi = 0x2001, .mode = IPSEC_MODE_TRANSPORT});
  auto ah = addSa(h, {.spi = 0x2002, .mode = IPSEC_MODE_TRANSPORT, .satype = SADB_SATYPE_AH});
  auto any = addSa(h, {.spi = 0x2003, .mode = IPSEC_MODE_ANY});
  auto outside = addSa(h, {.spi = 0x2004, .dst = kPeer, .mode = IPSEC_MODE_TRANSPORT});
  auto tunnel = addSa(h, {.spi = 0x2005, .mode = IPSEC_MODE_TUNNEL});
  // ESP then AH in transport mode for 192.0.2.0/24 -> 192.0.2.0/24.
  const std::uint8_t net[] = {192, 0, 2, 0};
  markOutbound(h, {{.mode = IPSEC_MODE_TRANSPORT, .src = net, .srcPrefix = 24, .dst = net, .dstPrefix = 24},
                   {.satype = SADB_SATYPE_AH, .mode = IPSEC_MODE_TRANSPORT, .src = net, .srcPrefix = 24,
                    .dst = net, .dstPrefix = 24}});
  EXPECT_EQ(setDirections(h), (std::multiset{esp.index, ah.index, any.index}));
  (void)outside;
  (void)tunnel;
}

TEST(KeydbDirection, ARestartedDataPlaneGetsEverySessionWithItsDirection) {
  KeydbHarness h;
  auto marked = addSa(h, {.spi = 0x1001});
  auto judged = addSa(h, {.spi = 0x1002, .reqid = 3, .outbound = true});
  auto unknown = addSa(h, {.spi = 0x1003, .src = kDst, .dst = kSrc});
  ASSERT_EQ(getSpi(h, 9, 0x6000, 0x6000), 0);
  auto inbound = addSa(h, {.spi = 0x6000, .update = true});
  markOutbound(h, {{.reqid = 0}});
  EXPECT_EQ(setDirections(h), (std::multiset{marked.index}));
  h.restartDataPlane();
  std::map<std::uint32_t, proto::Direction> sessions;
  for (;;) {
    auto m = h.toCrypto(200);
    if (!m.reader) break;
    auto c = m.reader->getRoot<proto::KeydbToCrypto>().getCreateSession();
    sessions[c.getSa().getIndex()] = c.getDirection();
  }
  EXPECT_EQ(sessions, (std::map<std::uint32_t, proto::Direction>{{marked.index, proto::Direction::OUTBOUND},
                                                                 {judged.index, proto::Direction::OUTBOUND},
                                                                 {unknown.index, proto::Direction::UNKNOWN},
                                                                 {inbound.index, proto::Direction::INBOUND}}));
}

TEST(KeydbDirection, CounterIvsStartAtARandomOffsetThatDiffersBetweenTwoKeydbs) {
  KeydbHarness a, b;
  auto x = addSa(a, {.spi = 0x1001});
  auto y = addSa(b, {.spi = 0x1001});
  auto z = addSa(a, {.spi = 0x1002});
  EXPECT_NE(x.ivNext, 0u);
  EXPECT_NE(y.ivNext, 0u);
  EXPECT_NE(x.ivNext, y.ivNext);  // the two hosts of one SA
  EXPECT_NE(x.ivNext, z.ivNext);  // two SAs of one host
  for (auto* c : {&x, &y, &z}) EXPECT_LT(c->ivNext, std::uint64_t{1} << 63);
}

// A lifetime refresh (UPDATE with the same key) continues above every IV
// granted under that key; an UPDATE with a new key starts its own offset.
TEST(KeydbDirection, AnUpdateKeepingTheKeyNeverLowersTheIvBaseANewKeyDrawsANewOne) {
  KeydbHarness h;
  const std::uint8_t key1[20] = {1}, key2[20] = {2};
  const capnp::Data::Reader k1(key1, 20), k2(key2, 20);
  // Sixteen SAs: a fresh draw passes "not below" half the time, never sixteen times.
  for (std::uint32_t spi = 0x1001; spi <= 0x1010; ++spi) {
    auto first = addSa(h, {.spi = spi}, true, k1);
    auto refreshed = addSa(h, {.spi = spi, .update = true}, true, k1);
    EXPECT_GE(refreshed.ivNext, first.ivLimit) << std::hex << spi;
    auto rekeyed = addSa(h, {.spi = spi, .update = true}, true, k2);
    // Not where the old key's grants ended: a point of its own.
    EXPECT_NE(rekeyed.ivNext, refreshed.ivLimit) << std::hex << spi;
    EXPECT_LT(rekeyed.ivNext, std::uint64_t{1} << 63);
  }
}

TEST(KeydbService, ALookupAnswersTheSaWithoutItsKeysOrEsrch) {
  KeydbHarness h;
  const std::uint8_t key[20] = {9};
  addSa(h, {.spi = 0x1001}, true, capnp::Data::Reader(key, 20));
  for (std::uint32_t spi : {0x1001u, 0x1002u}) {
    capnp::MallocMessageBuilder b;
    auto req = b.initRoot<proto::PolicyToKeydb>();
    req.setRequestId(spi);
    auto n = req.initLookup();
    n.setSatype(SADB_SATYPE_ESP);
    n.setSpi(spi);
    n.setDst(capnp::Data::Reader(kDst, 4));
    h.fromPolicy(b);
    auto r = h.toPolicy();
    ASSERT_TRUE(r.reader);
    auto reply = r.reader->getRoot<proto::KeydbToPolicy>().getReply();
    EXPECT_EQ(reply.getRequestId(), spi);
    if (spi == 0x1002) {
      EXPECT_EQ(reply.getErrno(), ESRCH);
      continue;
    }
    ASSERT_EQ(reply.getSas().size(), 1u);
    EXPECT_EQ(reply.getSas()[0].getParams().getSpi(), 0x1001u);
    EXPECT_FALSE(reply.getSas()[0].hasKeys());
  }
}

// ---- lifetimes -----------------------------------------------------------

void usageReport(KeydbHarness& h, const LiveSa& sa, std::uint64_t bytes, std::uint64_t packets,
                 std::uint64_t firstUse) {
  capnp::MallocMessageBuilder b;
  auto u = b.initRoot<proto::ForwarderToKeydb>().initUsage(1)[0];
  u.initSa().setIndex(sa.index);
  u.getSa().setGeneration(sa.generation);
  u.setBytes(bytes);
  u.setPackets(packets);
  u.setFirstUse(firstUse);
  h.fromForwarder(b);
}

// The expire policy is sent: hard or soft, or nullopt for another message or none.
std::optional<bool> expireOf(const ReceivedMessage& m) {
  if (!m.reader) return std::nullopt;
  auto msg = m.reader->getRoot<proto::KeydbToPolicy>();
  if (msg.which() != proto::KeydbToPolicy::EXPIRE) return std::nullopt;
  return msg.getExpire().getHard();
}

std::uint64_t unixNow() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

TEST(KeydbLifetimes, AHardAddTimeEndsTheSaWithAnExpireAndARemove) {
  KeydbHarness h;
  LiveSa sa;
  addLiveEspSa(h, 0x4001, sa, 0, capnp::Data::Reader(kDst, 4),
               [](proto::SaParams::Builder p) { p.initHard().setAddTime(1); });
  EXPECT_FALSE(expireOf(h.toPolicy(0)));
  auto e = h.waitForPolicy(3500);
  ASSERT_EQ(expireOf(e), std::optional<bool>(true)) << e.error;
  auto r = h.toForwarder();
  ASSERT_TRUE(r.reader) << r.error;
  EXPECT_EQ(r.reader->getRoot<proto::KeydbToForwarder>().which(), proto::KeydbToForwarder::REMOVE);
}

TEST(KeydbLifetimes, ByteLimitsActWhenTheUsageReportArrivesSoftThenHard) {
  KeydbHarness h;
  LiveSa sa;
  addLiveEspSa(h, 0x4002, sa, 0, capnp::Data::Reader(kDst, 4), [](proto::SaParams::Builder p) {
    p.initSoft().setBytes(1000);
    p.initHard().setBytes(2000);
  });
  usageReport(h, sa, 999, 5, unixNow());
  EXPECT_FALSE(h.toPolicy(50).reader);  // below the soft limit: nothing
  usageReport(h, sa, 1500, 9, unixNow());
  EXPECT_EQ(expireOf(h.toPolicy(200)), std::optional<bool>(false));  // at once, not at the next tick
  usageReport(h, sa, 1600, 10, unixNow());
  EXPECT_FALSE(h.toPolicy(50).reader);  // soft is said once
  usageReport(h, sa, 2000, 12, unixNow());
  EXPECT_EQ(expireOf(h.toPolicy(200)), std::optional<bool>(true));
}

TEST(KeydbLifetimes, UseTimeCountsFromTheFirstUseAUsageReportBrings) {
  KeydbHarness h;
  LiveSa sa;
  addLiveEspSa(h, 0x4003, sa, 0, capnp::Data::Reader(kDst, 4),
               [](proto::SaParams::Builder p) { p.initHard().setUseTime(1); });
  EXPECT_FALSE(h.waitForPolicy(2200).reader);  // never used: the clock has not started
  usageReport(h, sa, 100, 1, unixNow());
  EXPECT_EQ(expireOf(h.waitForPolicy(3500)), std::optional<bool>(true));
}

TEST(KeydbLifetimes, AnSaWithoutLimitsIsNeverExpiredAndALarvalOneEndsAfterLarvalLifetime) {
  KeydbHarness h;
  h.keydb().setSysctl("net.key.larval_lifetime", 1);
  LiveSa sa;
  addLiveEspSa(h, 0x4004, sa);
  ASSERT_EQ(getSpi(h, 9, 0x5000, 0x5000), 0);
  EXPECT_EQ(h.keydb().sadSize(), 2u);
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(3500);
  while (h.keydb().sadSize() > 1 && std::chrono::steady_clock::now() < until) h.waitForPolicy(100);
  EXPECT_EQ(h.keydb().sadSize(), 1u);  // the larval SA went, the mature one without limits stays
  EXPECT_FALSE(h.toPolicy(0).reader);  // and no EXPIRE for either
}

}  // namespace
}  // namespace ipsec::keydb

namespace ipsec::keydb {
namespace {

// ---- the direction barrier: markOutbound with a request id (sad.capnp) ------

// What keydb sent the broker since the last call: setDirection slot indices,
// and the barrier tokens in order.
struct ToBroker {
  std::multiset<std::uint32_t> outbound;
  std::vector<std::uint64_t> barriers;
  bool barrierLast = false;  // the last message was a barrier (it follows the marks)
};
ToBroker toBroker(KeydbHarness& h) {
  ToBroker out;
  for (;;) {
    auto m = h.toCrypto(100);
    if (!m.reader) return out;
    auto msg = m.reader->getRoot<proto::KeydbToCrypto>();
    out.barrierLast = msg.which() == proto::KeydbToCrypto::BARRIER;
    if (msg.which() == proto::KeydbToCrypto::BARRIER) {
      out.barriers.push_back(msg.getBarrier());
    } else if (msg.which() == proto::KeydbToCrypto::SET_DIRECTION) {
      out.outbound.insert(msg.getSetDirection().getSa().getIndex());
    } else {
      ADD_FAILURE() << "unexpected message to the broker: " << static_cast<int>(msg.which());
    }
  }
}

void echoBarrier(KeydbHarness& h, std::uint64_t token) {
  capnp::MallocMessageBuilder b;
  b.initRoot<proto::CryptoToKeydb>().setBarrier(token);
  h.fromCrypto(b);
}

// The requestIds policy was told are marked (outboundMarked), in order.
std::vector<std::uint64_t> marksAnswered(KeydbHarness& h) {
  std::vector<std::uint64_t> ids;
  for (;;) {
    auto m = h.toPolicy(100);
    if (!m.reader) return ids;
    auto msg = m.reader->getRoot<proto::KeydbToPolicy>();
    if (msg.which() != proto::KeydbToPolicy::OUTBOUND_MARKED) {
      ADD_FAILURE() << "unexpected message to policy: " << static_cast<int>(msg.which());
      continue;
    }
    ids.push_back(msg.getOutboundMarked());
  }
}

TEST(KeydbMarkBarrier, AMarkWithARequestIdIsAnsweredOnlyOnceTheBrokerEchoesTheBarrierAfterIt) {
  KeydbHarness h;
  auto sa = addSa(h, {.spi = 0x1001});
  markOutbound(h, {{}}, 55);
  const ToBroker first = toBroker(h);
  EXPECT_EQ(first.outbound, std::multiset{sa.index});
  ASSERT_EQ(first.barriers.size(), 1u);
  EXPECT_TRUE(first.barrierLast);
  EXPECT_TRUE(marksAnswered(h).empty());  // not before the broker has the mark
  // A second request that marks nothing new still waits for its own barrier
  // (the first mark may be on its way yet), answered in order.
  markOutbound(h, {{}}, 56);
  const ToBroker second = toBroker(h);
  EXPECT_TRUE(second.outbound.empty());
  ASSERT_EQ(second.barriers.size(), 1u);
  echoBarrier(h, first.barriers[0]);
  EXPECT_EQ(marksAnswered(h), std::vector<std::uint64_t>{55});
  echoBarrier(h, second.barriers[0]);
  EXPECT_EQ(marksAnswered(h), std::vector<std::uint64_t>{56});
  // Without a request id nothing is answered, and no barrier goes.
  markOutbound(h, {{}});
  EXPECT_TRUE(toBroker(h).barriers.empty());
  EXPECT_TRUE(marksAnswered(h).empty());
}

TEST(KeydbMarkBarrier, WithoutABrokerAMarkIsAnsweredAtOnceAndAwaitedOnesWhenItGoes) {
  KeydbHarness h;
  addSa(h, {.spi = 0x1001});
  markOutbound(h, {{}}, 60);
  ASSERT_EQ(toBroker(h).barriers.size(), 1u);
  EXPECT_TRUE(marksAnswered(h).empty());
  h.loseBroker();  // no echo will come: the next broker gets the direction with the session
  EXPECT_EQ(marksAnswered(h), std::vector<std::uint64_t>{60});
  markOutbound(h, {{}}, 61);
  EXPECT_EQ(marksAnswered(h), std::vector<std::uint64_t>{61});
}

TEST(KeydbMarkBarrier, ARestartedDataPlaneAnswersTheMarksTheOldBrokerDidNotEcho) {
  KeydbHarness h;
  addSa(h, {.spi = 0x1001});
  markOutbound(h, {{}}, 70);
  ASSERT_EQ(toBroker(h).barriers.size(), 1u);
  h.restartDataPlane();
  EXPECT_EQ(marksAnswered(h), std::vector<std::uint64_t>{70});
}

TEST(KeydbMarkBarrier, AnEchoOfABarrierNotAwaitedClosesTheBrokersChannel) {
  KeydbHarness h;
  addSa(h, {.spi = 0x1001});
  markOutbound(h, {{}}, 80);
  const ToBroker sent = toBroker(h);
  ASSERT_EQ(sent.barriers.size(), 1u);
  echoBarrier(h, sent.barriers[0] + 1000);
  EXPECT_TRUE(h.brokerChannelClosedByKeydb());
  // That broker will echo nothing more: the mark is answered as without one.
  EXPECT_EQ(marksAnswered(h), std::vector<std::uint64_t>{80});
}

}  // namespace
}  // namespace ipsec::keydb
