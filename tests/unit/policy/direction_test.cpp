// Which SAs this host sends on (DESIGN §3): policy judges each SA ADD/UPDATE
// against the outbound templates of its SPD (SaAdd.outbound), and tells keydb
// the templates of each outbound policy it stores (markOutbound), so either
// order of SA and policy ends with the SA outbound. The test plays keydb.
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <netinet/in.h>

#include <vector>

#include "harness.h"

namespace ipsec::policy::test {
namespace {

const std::uint8_t kEncKey[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const std::uint8_t kAuthKey[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};

const pfkey::SockAddress kLocal = v4(192, 0, 2, 1), kPeer = v4(192, 0, 2, 2);

Bytes policy(std::uint8_t dir, const pfkey::SockAddress& src, std::uint8_t srcPrefix, const pfkey::SockAddress& dst,
             std::uint8_t dstPrefix, std::vector<pfkey::RequestFields> requests,
             std::uint8_t type = SADB_X_SPDADD, std::uint16_t policyType = IPSEC_POLICY_IPSEC) {
  pfkey::Builder b(type, SADB_SATYPE_UNSPEC, 3, 4242);
  b.policy(pfkey::PolicyFields{policyType, dir, 0, 0x80000000u, std::move(requests)});
  b.address(SADB_EXT_ADDRESS_SRC, src, srcPrefix, IPSEC_ULPROTO_ANY);
  b.address(SADB_EXT_ADDRESS_DST, dst, dstPrefix, IPSEC_ULPROTO_ANY);
  return b.finish();
}

pfkey::RequestFields tunnel(std::uint32_t reqid = 0, std::uint16_t proto = IPPROTO_ESP) {
  return {proto, IPSEC_MODE_TUNNEL, std::uint8_t(reqid ? IPSEC_LEVEL_UNIQUE : IPSEC_LEVEL_REQUIRE), reqid, kLocal,
          kPeer};
}

pfkey::RequestFields transport(std::uint16_t proto = IPPROTO_ESP) {
  return {proto, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}};
}

Bytes saAdd(std::uint8_t satype, std::uint32_t spi, const pfkey::SockAddress& src, const pfkey::SockAddress& dst,
            std::uint8_t mode, std::uint32_t reqid, std::uint8_t type = SADB_ADD) {
  pfkey::Builder b(type, satype, 1, 4242);
  const bool esp = satype == SADB_SATYPE_ESP;
  if (esp) b.key(SADB_EXT_KEY_ENCRYPT, 128, kEncKey);
  b.key(SADB_EXT_KEY_AUTH, 160, kAuthKey);
  b.sa({spi, 32, SADB_SASTATE_MATURE, SADB_AALG_SHA1HMAC, std::uint8_t(esp ? SADB_X_EALG_AESCBC : SADB_EALG_NONE), 0});
  b.sa2(mode, reqid);
  b.address(SADB_EXT_ADDRESS_SRC, src, 32, 255);
  b.address(SADB_EXT_ADDRESS_DST, dst, 32, 255);
  return b.finish();
}

// Sends an SA ADD/UPDATE and returns what policy told keydb about its direction.
bool judgedOutbound(Harness& h, TestClient& c, const Bytes& add) {
  c.send(add);
  h.pump();
  auto req = h.keydbMessage();
  if (!req.reader) {
    ADD_FAILURE() << "no request to keydb: " << req.error;
    return false;
  }
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  EXPECT_EQ(msg.which(), proto::PolicyToKeydb::ADD);
  return msg.getAdd().getOutbound();
}

struct Template {
  std::uint8_t satype, mode;
  std::uint32_t reqid;
  Bytes src;
  std::uint8_t srcPrefix;
  Bytes dst;
  std::uint8_t dstPrefix;
  bool operator==(const Template&) const = default;
};

Bytes raw(const pfkey::SockAddress& a) { return Bytes(a.bytes.begin(), a.bytes.begin() + (a.isV6() ? 16 : 4)); }

// Every markOutbound keydb was sent since the last call, one list each.
std::vector<std::vector<Template>> markedOutbound(Harness& h) {
  std::vector<std::vector<Template>> out;
  for (;;) {
    auto req = h.keydbMessage(50);
    if (!req.reader) return out;
    auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
    if (msg.which() != proto::PolicyToKeydb::MARK_OUTBOUND) {
      ADD_FAILURE() << "unexpected request to keydb: " << static_cast<int>(msg.which());
      continue;
    }
    auto& list = out.emplace_back();
    for (auto t : msg.getMarkOutbound()) {
      list.push_back({t.getSatype(), t.getMode(), t.getReqid(), Bytes(t.getSrc().begin(), t.getSrc().end()),
                      t.getSrcPrefix(), Bytes(t.getDst().begin(), t.getDst().end()), t.getDstPrefix()});
    }
  }
}

TEST(SaDirection, AnOutboundTunnelPolicyTellsKeydbItsEndpointsAndReqid) {
  Harness h;
  auto c = h.connect();
  const auto net1 = v4(10, 0, 1, 0), net2 = v4(10, 0, 2, 0);
  c.send(policy(IPSEC_DIR_OUTBOUND, net1, 24, net2, 24, {tunnel(5)}));
  h.pump();
  EXPECT_EQ(markedOutbound(h), (std::vector<std::vector<Template>>{
                                   {{SADB_SATYPE_ESP, IPSEC_MODE_TUNNEL, 5, raw(kLocal), 32, raw(kPeer), 32}}}));
  // Inbound, forward and discard policies name no SA this host seals with.
  c.send(policy(IPSEC_DIR_INBOUND, net2, 24, net1, 24, {tunnel(5)}));
  c.send(policy(IPSEC_DIR_FWD, net2, 24, net1, 24, {tunnel(5)}));
  c.send(policy(IPSEC_DIR_OUTBOUND, net1, 16, net2, 16, {}, SADB_X_SPDADD, IPSEC_POLICY_DISCARD));
  h.pump();
  EXPECT_TRUE(markedOutbound(h).empty());
  // SPDUPDATE stores it again: keydb hears again (it marks each SA once).
  c.send(policy(IPSEC_DIR_OUTBOUND, net1, 24, net2, 24, {tunnel(5)}, SADB_X_SPDUPDATE));
  h.pump();
  EXPECT_EQ(markedOutbound(h).size(), 1u);
}

TEST(SaDirection, ABundlePolicyTellsKeydbOneTemplatePerRequestWithTheSelectorForTransport) {
  Harness h;
  auto c = h.connect();
  const auto net = v4(192, 0, 2, 0);
  c.send(policy(IPSEC_DIR_OUTBOUND, net, 24, v4(198, 51, 100, 0), 24, {transport(), transport(IPPROTO_AH)}));
  h.pump();
  const Bytes far = raw(v4(198, 51, 100, 0));
  EXPECT_EQ(markedOutbound(h),
            (std::vector<std::vector<Template>>{{{SADB_SATYPE_ESP, IPSEC_MODE_TRANSPORT, 0, raw(net), 24, far, 24},
                                                 {SADB_SATYPE_AH, IPSEC_MODE_TRANSPORT, 0, raw(net), 24, far, 24}}}));
}

// A transport request after a tunnel request protects the tunnel's packets:
// its SA carries the tunnel endpoints (xfrm_tmpl_resolve_one), as ESP
// transport around an IPComp tunnel and AH transport around an ESP tunnel.
TEST(SaDirection, ATransportRequestAfterATunnelTakesTheTunnelEndpoints) {
  Harness h;
  auto c = h.connect();
  const auto net1 = v4(198, 51, 100, 0), net2 = v4(203, 0, 113, 0);
  c.send(policy(IPSEC_DIR_OUTBOUND, net1, 24, net2, 24, {tunnel(0, IPPROTO_COMP), transport()}));
  h.pump();
  const Bytes local = raw(kLocal), peer = raw(kPeer);
  EXPECT_EQ(markedOutbound(h),
            (std::vector<std::vector<Template>>{{{SADB_X_SATYPE_IPCOMP, IPSEC_MODE_TUNNEL, 0, local, 32, peer, 32},
                                                 {SADB_SATYPE_ESP, IPSEC_MODE_TRANSPORT, 0, local, 32, peer, 32}}}));
  EXPECT_TRUE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1001, kLocal, kPeer, IPSEC_MODE_TRANSPORT, 0)));
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x2001, kPeer, kLocal, IPSEC_MODE_TRANSPORT, 0)));
  c.send(policy(IPSEC_DIR_OUTBOUND, net2, 24, net1, 24, {tunnel(), transport(IPPROTO_AH)}));
  h.pump();
  markedOutbound(h);
  EXPECT_TRUE(judgedOutbound(h, c, saAdd(SADB_SATYPE_AH, 0x3001, kLocal, kPeer, IPSEC_MODE_TRANSPORT, 0)));
}

// A transport selector that covers both ends (a /24 to itself) would admit
// the peer's SA to us too: without this host's addresses neither SA is
// outbound (the receiving one must keep opening); with local_addresses the
// template names this host as the source.
TEST(SaDirection, ASelectorCoveringBothEndsNeedsThisHostsAddresses) {
  const auto net = v4(192, 0, 2, 0);
  {
    Harness h;
    auto c = h.connect();
    c.send(policy(IPSEC_DIR_OUTBOUND, net, 24, net, 24, {transport()}));
    h.pump();
    EXPECT_TRUE(markedOutbound(h).empty());
    EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1001, kLocal, kPeer, IPSEC_MODE_ANY, 0)));
    EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x2001, kPeer, kLocal, IPSEC_MODE_ANY, 0)));
  }
  ServerOptions options;
  options.localAddresses = {kLocal, v4(198, 51, 100, 1)};  // the second is outside the selector
  Harness h(std::move(options));
  auto c = h.connect();
  c.send(policy(IPSEC_DIR_OUTBOUND, net, 24, net, 24, {transport()}));
  h.pump();
  EXPECT_EQ(markedOutbound(h), (std::vector<std::vector<Template>>{
                                   {{SADB_SATYPE_ESP, IPSEC_MODE_TRANSPORT, 0, raw(kLocal), 32, raw(net), 24}}}));
  EXPECT_TRUE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1001, kLocal, kPeer, IPSEC_MODE_ANY, 0)));
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x2001, kPeer, kLocal, IPSEC_MODE_ANY, 0)));
  // A selector whose prefixes share one host only is not ambiguous.
  c.send(policy(IPSEC_DIR_OUTBOUND, v4(0, 0, 0, 0), 0, v4(203, 0, 113, 9), 32, {transport(IPPROTO_AH)}));
  h.pump();
  EXPECT_EQ(markedOutbound(h).size(), 1u);
  EXPECT_TRUE(judgedOutbound(h, c, saAdd(SADB_SATYPE_AH, 0x3001, kPeer, v4(203, 0, 113, 9), IPSEC_MODE_ANY, 0)));
}

// Policy first, SA after: policy judges the ADD itself.
TEST(SaDirection, AnSaAddedAfterATunnelPolicyIsOutboundWhenItsTemplateFits) {
  Harness h;
  auto c = h.connect();
  c.send(policy(IPSEC_DIR_OUTBOUND, v4(10, 0, 1, 0), 24, v4(10, 0, 2, 0), 24, {tunnel(5)}));
  h.pump();
  markedOutbound(h);
  EXPECT_TRUE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1001, kLocal, kPeer, IPSEC_MODE_TUNNEL, 5)));
  EXPECT_TRUE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1002, kLocal, kPeer, IPSEC_MODE_ANY, 5)));
  EXPECT_TRUE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1001, kLocal, kPeer, IPSEC_MODE_TUNNEL, 5, SADB_UPDATE)));
  // The peer's direction, another reqid, another protocol, transport mode: no.
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x2001, kPeer, kLocal, IPSEC_MODE_TUNNEL, 5)));
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1003, kLocal, kPeer, IPSEC_MODE_TUNNEL, 6)));
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_AH, 0x1004, kLocal, kPeer, IPSEC_MODE_TUNNEL, 5)));
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1005, kLocal, kPeer, IPSEC_MODE_TRANSPORT, 5)));
}

TEST(SaDirection, AnSaAddedAfterATransportPolicyIsOutboundWhenItsAddressesLieInTheSelector) {
  Harness h;
  auto c = h.connect();
  c.send(policy(IPSEC_DIR_OUTBOUND, v4(192, 0, 2, 0), 24, v4(198, 51, 100, 0), 24, {transport()}));
  h.pump();
  markedOutbound(h);
  const auto far = v4(198, 51, 100, 7);
  EXPECT_TRUE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1001, kLocal, far, IPSEC_MODE_TRANSPORT, 0)));
  EXPECT_TRUE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1002, kLocal, far, IPSEC_MODE_TRANSPORT, 42)));
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x2001, far, kLocal, IPSEC_MODE_TRANSPORT, 0)));
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1003, kLocal, v4(203, 0, 113, 7), IPSEC_MODE_TRANSPORT, 0)));
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1004, kLocal, far, IPSEC_MODE_TUNNEL, 0)));
}

// SA first, policy after: the ADD is not outbound, the policy then names it
// to keydb (keydb's tests show the marking).
TEST(SaDirection, AnSaAddedBeforeAnyPolicyIsNotOutboundUntilThePolicyTellsKeydb) {
  Harness h;
  auto c = h.connect();
  EXPECT_FALSE(judgedOutbound(h, c, saAdd(SADB_SATYPE_ESP, 0x1001, kLocal, kPeer, IPSEC_MODE_TUNNEL, 0)));
  c.send(policy(IPSEC_DIR_OUTBOUND, v4(10, 0, 1, 0), 24, v4(10, 0, 2, 0), 24, {tunnel()}));
  h.pump();
  EXPECT_EQ(markedOutbound(h), (std::vector<std::vector<Template>>{
                                   {{SADB_SATYPE_ESP, IPSEC_MODE_TUNNEL, 0, raw(kLocal), 32, raw(kPeer), 32}}}));
}

}  // namespace
}  // namespace ipsec::policy::test
