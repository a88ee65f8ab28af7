// The forwarder's NAT mapping reports (issue 10 item 4): the forwarder faces
// the network and is the party to distrust, so a report reaches key managers
// only within its rate and for an SA keydb has, UDP-encapsulated, whose old
// endpoint it names. The test plays the forwarder and keydb.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/udp.h>

#include <cerrno>

#include "harness.h"

namespace ipsec::policy::test {
namespace {

const std::uint8_t kPeer[] = {198, 51, 100, 7}, kUs[] = {192, 0, 2, 2}, kMoved[] = {198, 51, 100, 8};

void report(Harness& h, std::uint32_t spi, const std::uint8_t* oldSrc = kPeer, std::uint16_t sport = 4500) {
  capnp::MallocMessageBuilder b;
  auto n = b.initRoot<proto::ForwarderToPolicy>().initNatMapping();
  n.setSatype(SADB_SATYPE_ESP);
  n.setSpi(spi);
  n.setSrc(capnp::Data::Reader(oldSrc, 4));
  n.setDst(capnp::Data::Reader(kUs, 4));
  n.setSport(sport);
  n.setDport(4500);
  n.setNewSrc(capnp::Data::Reader(kMoved, 4));
  n.setNewSport(1025);
  h.fromForwarder(b);
}

// The lookup policy asked keydb for, or 0 (none); fails on any other request.
std::uint64_t lookupFor(Harness& h, std::uint32_t spi) {
  auto req = h.keydbRequest(50);
  if (!req.reader) return 0;
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  EXPECT_EQ(msg.which(), proto::PolicyToKeydb::LOOKUP);
  if (msg.which() != proto::PolicyToKeydb::LOOKUP) return 0;
  EXPECT_EQ(msg.getLookup().getSpi(), spi);
  EXPECT_EQ(msg.getLookup().getDst(), capnp::Data::Reader(kUs, 4));
  EXPECT_NE(msg.getRequestId(), 0u);
  return msg.getRequestId();
}

// keydb's answer: the SA (peer -> us) with these NAT-T settings, or an errno.
void answer(Harness& h, std::uint64_t id, int err, std::uint8_t natTType = UDP_ENCAP_ESPINUDP,
            std::uint16_t sport = 4500) {
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(id);
  r.setErrno(static_cast<std::uint16_t>(err));
  if (err == 0) {
    auto p = r.initSas(1)[0].initParams();
    p.setSatype(SADB_SATYPE_ESP);
    p.setSpi(0xc0001234);
    p.setSrc(capnp::Data::Reader(kPeer, 4));
    p.setDst(capnp::Data::Reader(kUs, 4));
    p.setNatTType(natTType);
    p.setNatTSport(natTType ? sport : 0);
    p.setNatTDport(natTType ? 4500 : 0);
  }
  h.answerKeydb(b);
}

struct KeyManager {
  Harness h;
  TestClient km = h.connect();
  KeyManager() {
    km.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
    h.pump();
    km.drain();
  }
};

TEST(NatMapping, AReportForAnEncapsulatedSaWithItsOldEndpointIsBroadcastAsLinuxLaysItOut) {
  KeyManager t;
  auto other = t.h.connect();
  report(t.h, 0xc0001234);
  EXPECT_TRUE(t.km.drain().empty());  // not before keydb has vouched for it
  answer(t.h, lookupFor(t.h, 0xc0001234), 0);
  auto r = t.km.drain();
  ASSERT_EQ(r.size(), 1u);
  auto m = parsed(r[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_X_NAT_T_NEW_MAPPING);
  EXPECT_EQ(m.msg().sadb_msg_satype, SADB_SATYPE_ESP);
  EXPECT_EQ(m.msg().sadb_msg_pid, 0u);
  EXPECT_NE(m.msg().sadb_msg_seq, 0u);
  ASSERT_TRUE(m.sa());
  EXPECT_EQ(ntohl(m.sa()->sadb_sa_spi), 0xc0001234u);
  EXPECT_EQ(m.address(SADB_EXT_ADDRESS_SRC)->addr, v4(198, 51, 100, 7));
  EXPECT_EQ(*m.natTPort(SADB_X_EXT_NAT_T_SPORT), 4500);
  EXPECT_EQ(m.address(SADB_EXT_ADDRESS_DST)->addr, v4(198, 51, 100, 8));
  EXPECT_EQ(*m.natTPort(SADB_X_EXT_NAT_T_DPORT), 1025);
  EXPECT_EQ(other.drain().size(), 0u);  // registered sockets only
  EXPECT_EQ(t.h.stat("pfkey_nat_mappings"), 1u);
}

TEST(NatMapping, AReportForAnSaKeydbDoesNotHaveIsRefusedAndCounted) {
  KeyManager t;
  report(t.h, 0xdead);
  answer(t.h, lookupFor(t.h, 0xdead), ESRCH);
  EXPECT_TRUE(t.km.drain().empty());
  EXPECT_EQ(t.h.stat("pfkey_nat_mapping_refused_no_sa"), 1u);
  EXPECT_EQ(t.h.stat("pfkey_nat_mappings"), 0u);
}

TEST(NatMapping, AReportForAnSaWithoutUdpEncapsulationIsRefusedAndCounted) {
  KeyManager t;
  report(t.h, 0xc0001234);
  answer(t.h, lookupFor(t.h, 0xc0001234), 0, 0);
  EXPECT_TRUE(t.km.drain().empty());
  EXPECT_EQ(t.h.stat("pfkey_nat_mapping_refused_not_encap"), 1u);
  EXPECT_EQ(t.h.stat("pfkey_nat_mappings"), 0u);
}

TEST(NatMapping, AReportWhoseOldEndpointIsNotTheSasIsRefusedAndCounted) {
  KeyManager t;
  const std::uint8_t elsewhere[] = {203, 0, 113, 9};
  report(t.h, 0xc0001234, elsewhere);
  answer(t.h, lookupFor(t.h, 0xc0001234), 0);
  report(t.h, 0xc0005678, kPeer, 4501);  // the SA's port is 4500
  answer(t.h, lookupFor(t.h, 0xc0005678), 0);
  EXPECT_TRUE(t.km.drain().empty());
  EXPECT_EQ(t.h.stat("pfkey_nat_mapping_refused_wrong_endpoint"), 2u);
  EXPECT_EQ(t.h.stat("pfkey_nat_mappings"), 0u);
}

TEST(NatMapping, AFloodOfReportsIsRateLimitedPerSaAndOverallBeforeKeydbIsAsked) {
  KeyManager t;
  // The same SA again within its interval: not even keydb hears of it.
  report(t.h, 0x1000);
  report(t.h, 0x1000);
  EXPECT_NE(lookupFor(t.h, 0x1000), 0u);
  EXPECT_EQ(lookupFor(t.h, 0x1000), 0u);
  EXPECT_EQ(t.h.stat("pfkey_nat_mapping_refused_rate_limited_sa"), 1u);
  // 100 SAs at once, sent before any is answered so that they all fall in
  // one or two rate windows however slow the build (a loop that waited for
  // each refused lookup spanned three windows under ASan): at most a
  // second's budget per window (two, if the reports straddle one) reaches
  // keydb, the rest are counted.
  for (std::uint32_t spi = 0x2000; spi < 0x2000 + 100; ++spi) report(t.h, spi);
  std::uint64_t asked = 0;
  for (;;) {
    auto req = t.h.keydbRequest(300);
    if (!req.reader) break;
    auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
    ASSERT_EQ(msg.which(), proto::PolicyToKeydb::LOOKUP);
    ++asked;
    answer(t.h, msg.getRequestId(), ESRCH);
  }
  const std::uint64_t refused = t.h.stat("pfkey_nat_mapping_refused_rate_limited");
  EXPECT_EQ(asked + refused, 100u);
  EXPECT_LE(asked, 2 * Server::kNatMappingsPerSecond);
  EXPECT_GE(refused, 100 - 2 * Server::kNatMappingsPerSecond);
  EXPECT_TRUE(t.km.drain().empty());
}

}  // namespace
}  // namespace ipsec::policy::test
