// Time and rate in the PF_KEY server: X_SPDSETIDX as Linux (an SPDADD),
// X_SPDEXPIRE when a policy's hard lifetime runs out, the larval ACQUIRE
// state (rate limit, GETSPI by its seq, completion by ADD), and the net.key
// sysctls that tune them. onTick() is driven with the test's own clock.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>
#include <time.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "harness.h"

namespace ipsec::policy::test {
namespace {

std::uint64_t wallClock() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec);
}

Bytes expiringPolicy(std::uint64_t hardAddTime) {
  pfkey::Builder b(SADB_X_SPDADD, SADB_SATYPE_UNSPEC, 1, 4242);
  pfkey::PolicyFields p{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, 0, 0x80000000u, {}};
  p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}});
  b.policy(p);
  b.address(SADB_EXT_ADDRESS_SRC, v4(10, 0, 0, 1), 32, 255);
  b.address(SADB_EXT_ADDRESS_DST, v4(10, 0, 0, 2), 32, 255);
  b.lifetime(SADB_EXT_LIFETIME_HARD, 0, 0, hardAddTime, 0);
  b.lifetime(SADB_EXT_LIFETIME_SOFT, 0, 0, 0, 0);
  return b.finish();
}

TEST(Lifecycle, SpdSetIdxAddsAPolicyAsLinuxDoesAndAnswersAsSpdAdd) {
  Harness h;
  auto c = h.connect();
  Bytes setidx = spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 1), v4(10, 0, 0, 2));
  setidx[1] = SADB_X_SPDSETIDX;
  c.send(setidx);
  c.send(setidx);
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_type, SADB_X_SPDADD);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EEXIST);
  EXPECT_EQ(h.server().spd().size(), 1u);
}

TEST(Lifecycle, APolicyWhoseHardLifetimeRunsOutIsDeletedAndAnnouncedToRegisteredSockets) {
  Harness h;
  auto km = h.connect();
  auto other = h.connect();
  km.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
  km.send(expiringPolicy(10));
  km.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 3), v4(10, 0, 0, 4)));  // no lifetime
  h.pump();
  km.drain();
  other.drain();
  while (h.forwarderMessage(0).reader) {
  }
  const std::uint64_t t = wallClock();
  h.server().onTick(t + 5);
  h.pump();
  EXPECT_EQ(km.drain().size(), 0u);
  EXPECT_EQ(h.server().spd().size(), 2u);
  h.server().onTick(t + 11);
  h.pump();
  auto r = km.drain();
  ASSERT_EQ(r.size(), 1u);
  auto m = parsed(r[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_X_SPDEXPIRE);
  ASSERT_TRUE(m.lifetime(SADB_EXT_LIFETIME_HARD));
  EXPECT_EQ(m.lifetime(SADB_EXT_LIFETIME_HARD)->sadb_lifetime_addtime, 10u);
  EXPECT_EQ(m.address(SADB_EXT_ADDRESS_DST)->addr, v4(10, 0, 0, 2));
  EXPECT_EQ(other.drain().size(), 0u);
  ASSERT_EQ(h.server().spd().size(), 1u);
  EXPECT_EQ(h.server().spd().all()[0].selector.dst, v4(10, 0, 0, 4));
  auto f = h.forwarderMessage(200);
  ASSERT_TRUE(f.reader);
  EXPECT_EQ(f.reader->getRoot<proto::PolicyToForwarder>().which(), proto::PolicyToForwarder::DELETE);
  EXPECT_EQ(h.stat("spd_expires"), 1u);
}

void acquireFromForwarder(Harness& h, std::uint32_t policyId, std::uint8_t requestIndex = 0) {
  capnp::MallocMessageBuilder b;
  auto a = b.initRoot<proto::ForwarderToPolicy>().initAcquire();
  a.setPolicyId(policyId);
  a.setRequestIndex(requestIndex);
  const std::uint8_t src[] = {10, 0, 0, 1}, dst[] = {10, 0, 0, 2};
  a.setSrc(capnp::Data::Reader(src, 4));
  a.setDst(capnp::Data::Reader(dst, 4));
  a.setProto(IPPROTO_TCP);
  h.fromForwarder(b);
}

// An outbound policy (id 9) and a registered key manager.
struct AcquireSetup {
  Harness h;
  TestClient km = h.connect();
  AcquireSetup() {
    km.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
    km.send(spdAdd(SADB_X_SPDADD, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 1), v4(10, 0, 0, 2)));
    h.pump();
    km.drain();
  }
};

TEST(Lifecycle, RepeatedAcquiresAreSuppressedBlockacqCountTimesThenSentAgain) {
  AcquireSetup s;
  s.h.server().setSysctl("net.key.blockacq_count", 2);
  std::vector<std::uint32_t> seqs;
  for (int i = 0; i < 4; ++i) {
    acquireFromForwarder(s.h, 9);
    for (const auto& m : s.km.drain()) seqs.push_back(parsed(m).msg().sadb_msg_seq);
  }
  ASSERT_EQ(seqs.size(), 2u);  // the 1st and the 4th
  EXPECT_EQ(seqs[0], seqs[1]);  // the same pending acquire
  EXPECT_EQ(s.h.stat("pfkey_acquires_blocked"), 2u);
  EXPECT_EQ(s.h.server().pendingAcquires(), 1u);
}

TEST(Lifecycle, AnAcquireNamesTheBundleRequestWithoutAnSa) {
  Harness h;
  TestClient km = h.connect();
  km.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
  km.send(header(SADB_REGISTER, SADB_SATYPE_AH));
  // esp/transport//require ah/transport//unique:7 from 10.0.0.1 to 10.0.0.2.
  pfkey::Builder add(SADB_X_SPDADD, SADB_SATYPE_UNSPEC, 0, 4242);
  pfkey::PolicyFields p;
  p.type = IPSEC_POLICY_IPSEC;
  p.dir = IPSEC_DIR_OUTBOUND;
  p.priority = 0x80000000u;
  p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}});
  p.requests.push_back({IPPROTO_AH, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_UNIQUE, 7, {}, {}});
  add.policy(p);
  add.address(SADB_EXT_ADDRESS_SRC, v4(10, 0, 0, 1), 32, IPSEC_ULPROTO_ANY);
  add.address(SADB_EXT_ADDRESS_DST, v4(10, 0, 0, 2), 32, IPSEC_ULPROTO_ANY);
  km.send(add.finish());
  h.pump();
  km.drain();
  const std::uint32_t id = h.server().spd().all()[0].id;
  acquireFromForwarder(h, id, 1);  // the ESP SA exists, the AH SA does not
  auto ah = km.drain();
  ASSERT_EQ(ah.size(), 1u);
  EXPECT_EQ(parsed(ah[0]).msg().sadb_msg_satype, SADB_SATYPE_AH);
  acquireFromForwarder(h, id, 0);  // another flow's ESP: not suppressed by AH's pending one
  auto esp = km.drain();
  ASSERT_EQ(esp.size(), 1u);
  EXPECT_EQ(parsed(esp[0]).msg().sadb_msg_satype, SADB_SATYPE_ESP);
  acquireFromForwarder(h, id, 9);  // out of range: the first request, as before
  EXPECT_EQ(km.drain().size(), 0u);  // ESP's is pending: suppressed
}

TEST(Lifecycle, ALarvalAcquireStateDiesAfterTheLarvalLifetime) {
  AcquireSetup s;
  s.h.server().setSysctl("net.key.larval_lifetime", 5);
  acquireFromForwarder(s.h, 9);
  ASSERT_EQ(s.km.drain().size(), 1u);
  acquireFromForwarder(s.h, 9);
  EXPECT_EQ(s.km.drain().size(), 0u);  // pending: suppressed
  s.h.server().onTick(wallClock() + 6);
  EXPECT_EQ(s.h.server().pendingAcquires(), 0u);
  acquireFromForwarder(s.h, 9);
  EXPECT_EQ(s.km.drain().size(), 1u);  // a fresh ACQUIRE
}

TEST(Lifecycle, GetSpiWithTheAcquireSeqTakesItsReqidAndAnAddCompletesIt) {
  AcquireSetup s;
  s.km.send(spdAdd(SADB_X_SPDUPDATE, IPSEC_DIR_OUTBOUND, v4(10, 0, 0, 1), v4(10, 0, 0, 2)));
  s.h.pump();
  s.km.drain();
  acquireFromForwarder(s.h, 9);
  auto acq = s.km.drain();
  ASSERT_EQ(acq.size(), 1u);
  const std::uint32_t seq = parsed(acq[0]).msg().sadb_msg_seq;
  // The policy's request is transport/require without reqid: mode 1 arrives.
  pfkey::Builder g(SADB_GETSPI, SADB_SATYPE_ESP, seq, 4242);
  g.address(SADB_EXT_ADDRESS_SRC, v4(10, 0, 0, 1), 32, 255);
  g.address(SADB_EXT_ADDRESS_DST, v4(10, 0, 0, 2), 32, 255);
  s.km.send(g.finish());
  s.h.pump();
  auto req = s.h.keydbRequest();
  ASSERT_TRUE(req.reader);
  auto gs = req.reader->getRoot<proto::PolicyToKeydb>();
  ASSERT_EQ(gs.which(), proto::PolicyToKeydb::GET_SPI);
  EXPECT_EQ(gs.getGetSpi().getMode(), IPSEC_MODE_TRANSPORT);

  // keydb's answer to an ADD of 10.0.0.1 -> 10.0.0.2 completes the acquire.
  pfkey::Builder add(SADB_ADD, SADB_SATYPE_ESP, 3, 4242);
  const std::uint8_t key[20] = {};
  add.key(SADB_EXT_KEY_ENCRYPT, 160, key);
  add.sa({0x1001, 0, SADB_SASTATE_MATURE, SADB_AALG_NONE, SADB_X_EALG_AES_GCM_ICV16, 0});
  add.address(SADB_EXT_ADDRESS_SRC, v4(10, 0, 0, 1), 32, 255);
  add.address(SADB_EXT_ADDRESS_DST, v4(10, 0, 0, 2), 32, 255);
  s.km.send(add.finish());
  s.h.pump();
  auto ar = s.h.keydbRequest();
  ASSERT_TRUE(ar.reader);
  auto addReq = ar.reader->getRoot<proto::PolicyToKeydb>();
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(addReq.getRequestId());
  auto rec = r.initSas(1)[0];
  rec.setParams(addReq.getAdd().getParams());
  s.h.answerKeydb(b);
  EXPECT_EQ(s.h.server().pendingAcquires(), 0u);
}

// A key manager's ADD of an ESP SA (SA2 mode and reqid), answered by keydb
// with what policy asked it to store, as keydb does.
void addSa(Harness& h, TestClient& km, const pfkey::SockAddress& src, const pfkey::SockAddress& dst,
           std::uint8_t mode, std::uint32_t reqid, std::uint32_t spi) {
  pfkey::Builder add(SADB_ADD, SADB_SATYPE_ESP, 3, 4242);
  const std::uint8_t key[20] = {};
  add.key(SADB_EXT_KEY_ENCRYPT, 160, key);
  add.sa({spi, 0, SADB_SASTATE_MATURE, SADB_AALG_NONE, SADB_X_EALG_AES_GCM_ICV16, 0});
  add.sa2(mode, reqid);
  add.address(SADB_EXT_ADDRESS_SRC, src, 32, 255);
  add.address(SADB_EXT_ADDRESS_DST, dst, 32, 255);
  km.send(add.finish());
  h.pump();
  auto ar = h.keydbRequest();
  ASSERT_TRUE(ar.reader) << ar.error;
  auto addReq = ar.reader->getRoot<proto::PolicyToKeydb>();
  ASSERT_EQ(addReq.which(), proto::PolicyToKeydb::ADD);
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(addReq.getRequestId());
  r.initSas(1)[0].setParams(addReq.getAdd().getParams());
  h.answerKeydb(b);
  km.drain();
}

// racoon adds the inbound SA before the outbound one; a forwarder that asks
// again meanwhile must find the acquire still pending (blocked), not start a
// second negotiation.
TEST(Lifecycle, OnlyAnSaThatSatisfiesTheAcquireCompletesIt) {
  AcquireSetup s;  // esp/transport//require from 10.0.0.1 to 10.0.0.2
  acquireFromForwarder(s.h, 9);
  ASSERT_EQ(s.km.drain().size(), 1u);
  addSa(s.h, s.km, v4(10, 0, 0, 2), v4(10, 0, 0, 1), IPSEC_MODE_TRANSPORT, 0, 0x2001);  // inbound
  EXPECT_EQ(s.h.server().pendingAcquires(), 1u);
  addSa(s.h, s.km, v4(10, 0, 0, 1), v4(10, 0, 0, 2), IPSEC_MODE_TUNNEL, 0, 0x2002);  // not the request's mode
  EXPECT_EQ(s.h.server().pendingAcquires(), 1u);
  acquireFromForwarder(s.h, 9);
  EXPECT_EQ(s.km.drain().size(), 0u);  // still pending: blocked
  EXPECT_EQ(s.h.stat("pfkey_acquires_blocked"), 1u);
  addSa(s.h, s.km, v4(10, 0, 0, 1), v4(10, 0, 0, 2), IPSEC_MODE_TRANSPORT, 0, 0x2003);
  EXPECT_EQ(s.h.server().pendingAcquires(), 0u);
}

TEST(Lifecycle, AnSaOfAnyModeCompletesAnAcquireAndAUniqueRequestWantsItsReqid) {
  Harness h;
  TestClient km = h.connect();
  km.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
  pfkey::Builder add(SADB_X_SPDADD, SADB_SATYPE_UNSPEC, 0, 4242);
  pfkey::PolicyFields p{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, 0, 0x80000000u, {}};
  p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_UNIQUE, 7, {}, {}});
  add.policy(p);
  add.address(SADB_EXT_ADDRESS_SRC, v4(10, 0, 0, 1), 32, IPSEC_ULPROTO_ANY);
  add.address(SADB_EXT_ADDRESS_DST, v4(10, 0, 0, 2), 32, IPSEC_ULPROTO_ANY);
  km.send(add.finish());
  h.pump();
  km.drain();
  acquireFromForwarder(h, h.server().spd().all()[0].id);
  ASSERT_EQ(km.drain().size(), 1u);
  addSa(h, km, v4(10, 0, 0, 1), v4(10, 0, 0, 2), IPSEC_MODE_ANY, 0, 0x2001);  // the forwarder wants reqid 7
  EXPECT_EQ(h.server().pendingAcquires(), 1u);
  addSa(h, km, v4(10, 0, 0, 1), v4(10, 0, 0, 2), IPSEC_MODE_ANY, 7, 0x2002);
  EXPECT_EQ(h.server().pendingAcquires(), 0u);
}

// Linux's pfkey_send_acquire, field by field: sadb_address_len in 8-byte
// units, exttype, proto 0 (not the packet's), prefixlen the full length,
// reserved 0, then the sockaddr as pfkey_sockaddr_fill writes it (port 0,
// IPv6 flowinfo and scope 0) padded to 8 bytes.
std::vector<std::uint8_t> linuxAcquireAddress(std::uint16_t extType, const std::vector<std::uint8_t>& addr) {
  std::vector<std::uint8_t> sock;
  if (addr.size() == 4) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    std::memcpy(&sin.sin_addr, addr.data(), 4);
    sock.resize((sizeof sin + 7) / 8 * 8, 0);
    std::memcpy(sock.data(), &sin, sizeof sin);
  } else {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    std::memcpy(&sin6.sin6_addr, addr.data(), 16);
    sock.resize((sizeof sin6 + 7) / 8 * 8, 0);
    std::memcpy(sock.data(), &sin6, sizeof sin6);
  }
  sadb_address h{};
  h.sadb_address_len = static_cast<std::uint16_t>((sizeof h + sock.size()) / 8);
  h.sadb_address_exttype = extType;
  h.sadb_address_proto = 0;
  h.sadb_address_prefixlen = static_cast<std::uint8_t>(addr.size() * 8);
  h.sadb_address_reserved = 0;
  std::vector<std::uint8_t> out(sizeof h + sock.size());
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, sock.data(), sock.size());
  return out;
}

void expectLinuxAcquireAddresses(const Bytes& acquire, const std::vector<std::uint8_t>& src,
                                 const std::vector<std::uint8_t>& dst) {
  auto m = parsed(acquire);  // `acquire` outlives m, which points into it
  ASSERT_EQ(m.msg().sadb_msg_type, SADB_ACQUIRE);
  auto s = m.extBytes(SADB_EXT_ADDRESS_SRC);
  auto d = m.extBytes(SADB_EXT_ADDRESS_DST);
  EXPECT_EQ(std::vector<std::uint8_t>(s.begin(), s.end()), linuxAcquireAddress(SADB_EXT_ADDRESS_SRC, src));
  EXPECT_EQ(std::vector<std::uint8_t>(d.begin(), d.end()), linuxAcquireAddress(SADB_EXT_ADDRESS_DST, dst));
}

TEST(Lifecycle, AnAcquiresAddressesAreLinuxsByteForByteWithProtocolZero) {
  AcquireSetup s;
  acquireFromForwarder(s.h, 9);  // the packet was TCP
  auto r = s.km.drain();
  ASSERT_EQ(r.size(), 1u);
  expectLinuxAcquireAddresses(r[0], {10, 0, 0, 1}, {10, 0, 0, 2});
}

TEST(Lifecycle, AnIpv6AcquiresAddressesAreLinuxsByteForByteWithProtocolZero) {
  Harness h;
  TestClient km = h.connect();
  km.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
  std::array<std::uint8_t, 16> a{0x20, 0x01, 0x0d, 0xb8, 0, 1}, b{0x20, 0x01, 0x0d, 0xb8, 0, 2};
  a[15] = 1;
  b[15] = 2;
  pfkey::Builder add(SADB_X_SPDADD, SADB_SATYPE_UNSPEC, 0, 4242);
  pfkey::PolicyFields p{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, 0, 0x80000000u, {}};
  p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}});
  add.policy(p);
  add.address(SADB_EXT_ADDRESS_SRC, pfkey::SockAddress::v6(a), 128, IPSEC_ULPROTO_ANY);
  add.address(SADB_EXT_ADDRESS_DST, pfkey::SockAddress::v6(b), 128, IPSEC_ULPROTO_ANY);
  km.send(add.finish());
  h.pump();
  km.drain();
  capnp::MallocMessageBuilder m;
  auto acq = m.initRoot<proto::ForwarderToPolicy>().initAcquire();
  acq.setPolicyId(h.server().spd().all()[0].id);
  acq.setSrc(capnp::Data::Reader(a.data(), a.size()));
  acq.setDst(capnp::Data::Reader(b.data(), b.size()));
  acq.setProto(IPPROTO_ICMPV6);
  h.fromForwarder(m);
  auto r = km.drain();
  ASSERT_EQ(r.size(), 1u);
  expectLinuxAcquireAddresses(r[0], {a.begin(), a.end()}, {b.begin(), b.end()});
}

// keydb's answer to a DUMP: `err`, or one SA (SPI 0x1001) when err is 0.
void answerDump(Harness& h, int err) {
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader) << req.error;
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  ASSERT_EQ(msg.which(), proto::PolicyToKeydb::DUMP);
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(msg.getRequestId());
  r.setErrno(static_cast<std::uint16_t>(err));
  if (err == 0) {
    auto p = r.initSas(1)[0].initParams();
    p.setSatype(SADB_SATYPE_ESP);
    p.setSpi(0x1001);
    const std::uint8_t src[] = {192, 0, 2, 1}, dst[] = {192, 0, 2, 2};
    p.setSrc(capnp::Data::Reader(src, 4));
    p.setDst(capnp::Data::Reader(dst, 4));
    p.setState(SADB_SASTATE_MATURE);
  }
  h.answerKeydb(b);
}

TEST(Lifecycle, APendingAcquireShowsInDumpAsALarvalSaWithSpiZeroAfterKeydbsSas) {
  AcquireSetup s;
  acquireFromForwarder(s.h, 9);
  ASSERT_EQ(s.km.drain().size(), 1u);
  s.km.send(header(SADB_DUMP, SADB_SATYPE_UNSPEC));
  s.h.pump();
  answerDump(s.h, 0);
  auto d = s.km.drain();
  ASSERT_EQ(d.size(), 2u);
  auto sa = parsed(d[0]);
  EXPECT_EQ(ntohl(sa.sa()->sadb_sa_spi), 0x1001u);
  EXPECT_EQ(sa.msg().sadb_msg_seq, 1u);
  auto acq = parsed(d[1]);
  EXPECT_EQ(acq.msg().sadb_msg_type, SADB_DUMP);
  EXPECT_EQ(acq.msg().sadb_msg_seq, 0u);  // the last entry
  EXPECT_EQ(acq.msg().sadb_msg_satype, SADB_SATYPE_ESP);
  EXPECT_EQ(acq.sa()->sadb_sa_spi, 0u);
  EXPECT_EQ(acq.sa()->sadb_sa_state, SADB_SASTATE_LARVAL);
  EXPECT_EQ(acq.sa()->sadb_sa_encrypt, 0);
  EXPECT_EQ(acq.address(SADB_EXT_ADDRESS_SRC)->addr, v4(10, 0, 0, 1));
  EXPECT_EQ(acq.address(SADB_EXT_ADDRESS_DST)->addr, v4(10, 0, 0, 2));
  ASSERT_TRUE(acq.sa2());
  EXPECT_EQ(acq.sa2()->sadb_x_sa2_mode, IPSEC_MODE_TRANSPORT);
  EXPECT_EQ(acq.lifetime(SADB_EXT_LIFETIME_HARD)->sadb_lifetime_addtime, 30u);  // net.key.larval_lifetime
  EXPECT_NE(acq.lifetime(SADB_EXT_LIFETIME_CURRENT)->sadb_lifetime_addtime, 0u);
}

TEST(Lifecycle, ADumpOfAnEmptySadStillShowsPendingAcquiresAndOtherSatypesDoNot) {
  AcquireSetup s;
  s.km.send(header(SADB_DUMP, SADB_SATYPE_UNSPEC));
  s.h.pump();
  answerDump(s.h, ENOENT);
  auto none = s.km.drain();
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(parsed(none[0]).msg().sadb_msg_errno, ENOENT);

  acquireFromForwarder(s.h, 9);
  s.km.drain();
  s.km.send(header(SADB_DUMP, SADB_SATYPE_ESP));
  s.h.pump();
  answerDump(s.h, ENOENT);
  auto one = s.km.drain();
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(parsed(one[0]).msg().sadb_msg_errno, 0);
  EXPECT_EQ(parsed(one[0]).sa()->sadb_sa_state, SADB_SASTATE_LARVAL);

  s.km.send(header(SADB_DUMP, SADB_SATYPE_AH));
  s.h.pump();
  answerDump(s.h, ENOENT);
  auto ah = s.km.drain();
  ASSERT_EQ(ah.size(), 1u);
  EXPECT_EQ(parsed(ah[0]).msg().sadb_msg_errno, ENOENT);
}

TEST(Lifecycle, SpiSysctlsClampEveryGetSpiRange) {
  Harness h;
  h.server().setSysctl("net.key.spi_minval", 0x1000);
  h.server().setSysctl("net.key.spi_maxval", 0x2000);
  auto c = h.connect();
  auto getspi = [](std::optional<std::pair<std::uint32_t, std::uint32_t>> range) {
    pfkey::Builder g(SADB_GETSPI, SADB_SATYPE_ESP, 1, 4242);
    g.address(SADB_EXT_ADDRESS_SRC, v4(10, 0, 0, 1), 32, 255);
    g.address(SADB_EXT_ADDRESS_DST, v4(10, 0, 0, 2), 32, 255);
    if (range) g.spirange(range->first, range->second);
    return g.finish();
  };
  c.send(getspi(std::make_pair(0xc0000000u, 0xcfffffffu)));  // charon's range: outside
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, EINVAL);
  c.send(getspi(std::nullopt));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  auto g = req.reader->getRoot<proto::PolicyToKeydb>().getGetSpi();
  EXPECT_EQ(g.getMin(), 0x1000u);
  EXPECT_EQ(g.getMax(), 0x2000u);
}

}  // namespace
}  // namespace ipsec::policy::test
