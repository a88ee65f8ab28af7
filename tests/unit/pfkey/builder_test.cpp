// Builder tests: lengths and padding are right, and what the builder writes
// the parser reads back unchanged (round trips for every helper).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>

#include "pfkey/builder.h"
#include "pfkey/message.h"

namespace ipsec::pfkey {
namespace {

const ParsedMessage& parsed(const std::variant<ParsedMessage, ParseError>& r) {
  if (auto* e = std::get_if<ParseError>(&r)) ADD_FAILURE() << "parse failed: " << e->reason;
  return std::get<ParsedMessage>(r);
}

TEST(PfkeyBuilder, HeaderOnlyMessageIsTwoWords) {
  auto b = Builder(SADB_FLUSH, SADB_SATYPE_ESP, 7, 99).finish();
  ASSERT_EQ(b.size(), 16u);
  const uint8_t want[] = {2, SADB_FLUSH, 0, SADB_SATYPE_ESP, 2, 0, 0, 0, 7, 0, 0, 0, 99, 0, 0, 0};
  EXPECT_EQ(0, std::memcmp(b.data(), want, 16));
}

TEST(PfkeyBuilder, ErrorReplyIsRequestHeaderWithErrno) {
  auto req = Builder(SADB_GET, SADB_SATYPE_ESP, 3, 1234).sa({0x1001}).finish();
  auto r = parse(req);
  auto reply = Builder::errorReply(parsed(r).msg(), ESRCH);
  ASSERT_EQ(reply.size(), 16u);
  auto rr = parse(reply);
  const auto& m = parsed(rr);
  EXPECT_EQ(m.msg().sadb_msg_errno, ESRCH);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_GET);
  EXPECT_EQ(m.msg().sadb_msg_seq, 3u);
  EXPECT_EQ(m.msg().sadb_msg_pid, 1234u);
  EXPECT_EQ(m.msg().sadb_msg_len, 2);
}

TEST(PfkeyBuilder, SaMessageRoundTrips) {
  const uint8_t ekey[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
  const uint8_t akey[32] = {0xaa};
  auto v6 = *SockAddress::fromString("2001:db8::2");
  auto b = Builder(SADB_ADD, SADB_SATYPE_ESP, 0, 5)
               .key(SADB_EXT_KEY_ENCRYPT, 160, ekey)
               .key(SADB_EXT_KEY_AUTH, 256, akey)
               .sa({0xc0000001, 32, SADB_SASTATE_MATURE, SADB_X_AALG_SHA2_256HMAC,
                    SADB_X_EALG_AESCTR, 0x40})
               .sa2(IPSEC_MODE_TUNNEL, 77, 5)
               .lifetime(SADB_EXT_LIFETIME_HARD, 1, 2, 3, 4)
               .lifetime(SADB_EXT_LIFETIME_SOFT, 5, 6, 7, 8)
               .address(SADB_EXT_ADDRESS_SRC, *SockAddress::fromString("2001:db8::1"), 128, 255)
               .address(SADB_EXT_ADDRESS_DST, v6, 128, 255)
               .natTType(2)
               .natTPort(SADB_X_EXT_NAT_T_SPORT, 4500)
               .natTPort(SADB_X_EXT_NAT_T_DPORT, 4501)
               .finish();
  EXPECT_EQ(b.size() % 8, 0u);
  auto r = parse(b);
  const auto& m = parsed(r);
  EXPECT_EQ(m.msg().sadb_msg_len * 8u, b.size());
  auto ek = m.key(SADB_EXT_KEY_ENCRYPT);
  ASSERT_TRUE(ek);
  EXPECT_EQ(ek->bits, 160);
  EXPECT_TRUE(std::equal(ek->bytes.begin(), ek->bytes.end(), ekey, ekey + 20));
  EXPECT_EQ(m.extBytes(SADB_EXT_KEY_ENCRYPT).size(), 32u);  // 8 + 20 padded to 24 → 32
  EXPECT_EQ(m.key(SADB_EXT_KEY_AUTH)->bytes.size(), 32u);
  auto sa = *m.sa();
  EXPECT_EQ(ntohl(sa.sadb_sa_spi), 0xc0000001u);
  EXPECT_EQ(sa.sadb_sa_replay, 32);
  EXPECT_EQ(sa.sadb_sa_flags, 0x40u);
  EXPECT_EQ(m.sa2()->sadb_x_sa2_reqid, 77u);
  EXPECT_EQ(m.lifetime(SADB_EXT_LIFETIME_SOFT)->sadb_lifetime_addtime, 7u);
  EXPECT_EQ(m.address(SADB_EXT_ADDRESS_DST)->addr, v6);
  EXPECT_EQ(m.extBytes(SADB_EXT_ADDRESS_DST).size(), 40u);  // sockaddr_in6 padded to 32
  EXPECT_EQ(m.natTPort(SADB_X_EXT_NAT_T_SPORT), 4500);
  EXPECT_EQ(m.natTPort(SADB_X_EXT_NAT_T_DPORT), 4501);
}

TEST(PfkeyBuilder, PolicyRoundTripsWithBundleAndTunnel) {
  PolicyFields p{IPSEC_POLICY_IPSEC, IPSEC_DIR_FWD, 18, 0x40000005u, {}};
  p.requests.push_back({IPPROTO_COMP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_USE, 0,
                        SockAddress::v4({192, 0, 2, 1}), SockAddress::v4({192, 0, 2, 2})});
  p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_UNIQUE, 42, {}, {}});
  auto b = Builder(SADB_X_SPDADD, 0, 0, 1).policy(p).finish();
  auto r = parse(b);
  const auto& m = parsed(r);
  const auto& got = m.policy();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->dir, IPSEC_DIR_FWD);
  EXPECT_EQ(got->id, 18u);
  EXPECT_EQ(got->priority, 0x40000005u);
  ASSERT_EQ(got->requests().size(), 2u);
  EXPECT_EQ(got->requests()[0].proto, IPPROTO_COMP);
  EXPECT_EQ(got->requests()[0].tunnelDst->toString(), "192.0.2.2");
  EXPECT_EQ(got->requests()[1].reqid, 42u);
  EXPECT_FALSE(got->requests()[1].tunnelSrc);
  EXPECT_EQ(m.extBytes(SADB_X_EXT_POLICY).size(), 16u + 48u + 16u);
}

TEST(PfkeyBuilder, SupportedListRoundTrips) {
  sadb_alg algs[2] = {};
  algs[0].sadb_alg_id = SADB_X_EALG_AESCBC;
  algs[0].sadb_alg_ivlen = 8;
  algs[0].sadb_alg_minbits = 128;
  algs[0].sadb_alg_maxbits = 256;
  algs[1].sadb_alg_id = SADB_X_EALG_AES_GCM_ICV16;
  algs[1].sadb_alg_minbits = 160;
  algs[1].sadb_alg_maxbits = 288;
  auto b = Builder(SADB_REGISTER, 0, 0, 1).supported(SADB_EXT_SUPPORTED_ENCRYPT, algs).finish();
  auto r = parse(b);
  const auto& m = parsed(r);
  ASSERT_EQ(m.supportedCount(SADB_EXT_SUPPORTED_ENCRYPT), 2u);
  EXPECT_EQ(m.supportedAlg(SADB_EXT_SUPPORTED_ENCRYPT, 1)->sadb_alg_maxbits, 288);
  EXPECT_EQ(m.supportedCount(SADB_EXT_SUPPORTED_AUTH), 0u);
}

TEST(PfkeyBuilder, SpirangeAndZeroBitKeyRoundTrip) {
  auto b = Builder(SADB_GETSPI, SADB_SATYPE_ESP, 0, 1)
               .spirange(0xc0000000, 0xcfffffff)
               .key(SADB_EXT_KEY_ENCRYPT, 0, {})
               .finish();
  auto r = parse(b);
  const auto& m = parsed(r);
  EXPECT_EQ(m.spirange()->sadb_spirange_max, 0xcfffffffu);
  EXPECT_EQ(m.key(SADB_EXT_KEY_ENCRYPT)->bits, 0);
  EXPECT_EQ(m.extBytes(SADB_EXT_KEY_ENCRYPT).size(), 8u);
}

}  // namespace
}  // namespace ipsec::pfkey
