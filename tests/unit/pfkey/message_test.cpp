// Parser tests: the captured requests of real clients (ipsec-tools setkey,
// strongSwan charon) all parse; each kind of malformed message gets the errno
// af_key.c would answer; accessors decode what the bytes say.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "esp/replay.h"
#include "pfkey/builder.h"
#include "pfkey/message.h"

namespace ipsec::pfkey {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

Bytes readFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// Splits a capture into its messages (each self-delimiting by sadb_msg_len).
std::vector<Bytes> splitMessages(const Bytes& all) {
  std::vector<Bytes> out;
  size_t off = 0;
  while (all.size() - off >= sizeof(sadb_msg)) {
    uint16_t words;
    std::memcpy(&words, all.data() + off + 4, 2);
    size_t len = size_t{words} * 8;
    if (len == 0 || len > all.size() - off) break;
    out.emplace_back(all.begin() + off, all.begin() + off + len);
    off += len;
  }
  EXPECT_EQ(off, all.size()) << "capture does not split cleanly";
  return out;
}

std::vector<fs::path> corpusBins() {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(IPSEC_PFKEY_CORPUS))
    if (e.path().extension() == ".bin") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

const ParsedMessage& ok(const std::variant<ParsedMessage, ParseError>& r) {
  if (auto* e = std::get_if<ParseError>(&r)) ADD_FAILURE() << "parse failed: " << e->reason;
  return std::get<ParsedMessage>(r);
}

int errnoOf(const Bytes& b) {
  auto r = parse(b);
  if (auto* e = std::get_if<ParseError>(&r)) return e->errnum;
  return 0;
}

TEST(PfkeyCorpus, EveryCapturedRequestParses) {
  size_t messages = 0;
  auto bins = corpusBins();
  ASSERT_GT(bins.size(), 50u);
  for (const auto& p : bins) {
    for (const auto& m : splitMessages(readFile(p))) {
      auto r = parse(m);
      auto* err = std::get_if<ParseError>(&r);
      EXPECT_EQ(err, nullptr) << p.filename() << ": " << (err ? err->reason : "");
      ++messages;
    }
  }
  EXPECT_GT(messages, 100u);
}

TEST(PfkeyCorpus, AddRequestDecodesKeysSaAndAddresses) {
  auto msgs = splitMessages(readFile(fs::path(IPSEC_PFKEY_CORPUS) / "sa-add-espudp-natt-ports.bin"));
  ASSERT_EQ(msgs.size(), 1u);
  auto r = parse(msgs[0]);
  const auto& m = ok(r);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_ADD);
  EXPECT_EQ(m.msg().sadb_msg_satype, SADB_SATYPE_ESP);
  auto sa = m.sa();
  ASSERT_TRUE(sa);
  EXPECT_EQ(ntohl(sa->sadb_sa_spi), 0x4001u);
  EXPECT_EQ(sa->sadb_sa_encrypt, SADB_X_EALG_AESCBC);
  EXPECT_EQ(sa->sadb_sa_flags, 0x40u);
  auto ek = m.key(SADB_EXT_KEY_ENCRYPT);
  ASSERT_TRUE(ek);
  EXPECT_EQ(ek->bits, 128);
  ASSERT_EQ(ek->bytes.size(), 16u);
  EXPECT_EQ(ek->bytes[1], 0x11);
  auto src = m.address(SADB_EXT_ADDRESS_SRC);
  ASSERT_TRUE(src);
  EXPECT_EQ(src->addr.toString(), "10.0.0.1");
  EXPECT_EQ(src->addr.port, 4500);
  EXPECT_EQ(src->prefixlen, 32);
  EXPECT_EQ(src->proto, IPSEC_ULPROTO_ANY);
  EXPECT_EQ(m.natTType(), 2);
  EXPECT_EQ(m.natTPort(SADB_X_EXT_NAT_T_DPORT), 4500);
  EXPECT_EQ(m.sa2()->sadb_x_sa2_mode, IPSEC_MODE_TRANSPORT);
}

TEST(PfkeyCorpus, PolicyRequestDecodesTunnelEndpoints) {
  auto msgs = splitMessages(
      readFile(fs::path(IPSEC_PFKEY_CORPUS) / "spd-add-v6-out-esp-tunnel-prefixes.bin"));
  ASSERT_EQ(msgs.size(), 1u);
  auto r = parse(msgs[0]);
  const auto& m = ok(r);
  const auto& p = m.policy();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->type, IPSEC_POLICY_IPSEC);
  EXPECT_EQ(p->dir, IPSEC_DIR_OUTBOUND);
  EXPECT_EQ(p->priority, 0x80000000u);
  ASSERT_EQ(p->requests().size(), 1u);
  const auto& rq = p->requests()[0];
  EXPECT_EQ(rq.proto, IPPROTO_ESP);
  EXPECT_EQ(rq.mode, IPSEC_MODE_TUNNEL);
  EXPECT_EQ(rq.level, IPSEC_LEVEL_REQUIRE);
  ASSERT_TRUE(rq.tunnelSrc && rq.tunnelDst);
  EXPECT_EQ(rq.tunnelSrc->toString(), "2001:db8::1");
  EXPECT_EQ(rq.tunnelDst->toString(), "2001:db8::2");
  EXPECT_EQ(m.address(SADB_EXT_ADDRESS_DST)->prefixlen, 48);
}

TEST(PfkeyParse, AcceptsUnalignedBuffer) {
  auto msgs = splitMessages(readFile(fs::path(IPSEC_PFKEY_CORPUS) / "sa-getspi.bin"));
  ASSERT_EQ(msgs.size(), 1u);
  Bytes shifted(msgs[0].size() + 1);
  std::memcpy(shifted.data() + 1, msgs[0].data(), msgs[0].size());
  auto r = parse(std::span<const uint8_t>(shifted).subspan(1));
  const auto& m = ok(r);
  EXPECT_EQ(m.spirange()->sadb_spirange_min, 0x5001u);
  EXPECT_EQ(m.sa2()->sadb_x_sa2_reqid, 11u);
}

// A valid SPDADD (v4 tunnel) to corrupt byte by byte in the table below.
Bytes validPolicy() {
  PolicyFields p{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, 0, 0x80000000u, {}};
  p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0,
                        SockAddress::v4({192, 0, 2, 1}), SockAddress::v4({192, 0, 2, 2})});
  return Builder(SADB_X_SPDADD, 0, 0, 42)
      .policy(p)
      .address(SADB_EXT_ADDRESS_SRC, SockAddress::v4({10, 1, 0, 0}), 16, 255)
      .address(SADB_EXT_ADDRESS_DST, SockAddress::v4({10, 2, 0, 0}), 16, 255)
      .finish();
}
// Offsets within validPolicy(): header 0, policy 16 (48 bytes of which request at 32,
// its sockaddrs at 48 and 64), SRC at 80, DST at 104.
constexpr size_t kPolicyOff = 16, kRequestOff = 32, kSrcOff = 80;

void setU16(Bytes& b, size_t at, uint16_t v) { std::memcpy(b.data() + at, &v, 2); }
void fixLen(Bytes& b) { setU16(b, 4, static_cast<uint16_t>(b.size() / 8)); }

struct MalformedCase {
  const char* name;
  int errnum;
  void (*mutate)(Bytes&);
};

const MalformedCase kMalformed[] = {
    {"bad version", EINVAL, [](Bytes& b) { b[0] = 1; }},
    {"unknown message type", EINVAL, [](Bytes& b) { b[1] = SADB_MAX + 1; }},
    {"message type zero", EINVAL, [](Bytes& b) { b[1] = 0; }},
    {"reserved header field set", EINVAL, [](Bytes& b) { setU16(b, 6, 1); }},
    {"len larger than datagram", EMSGSIZE, [](Bytes& b) { setU16(b, 4, b.size() / 8 + 1); }},
    {"len smaller than datagram", EMSGSIZE, [](Bytes& b) { setU16(b, 4, b.size() / 8 - 1); }},
    {"truncated datagram", EMSGSIZE, [](Bytes& b) { b.resize(b.size() - 8); }},
    {"shorter than a header", EMSGSIZE, [](Bytes& b) { b.resize(12); }},
    {"len zero", EMSGSIZE, [](Bytes& b) { b.resize(0 + 16); setU16(b, 4, 0); }},
    {"oversized", EMSGSIZE, [](Bytes& b) { b.resize(kMaxMessageBytes + 8); fixLen(b); }},
    {"datagram not a multiple of 8", EMSGSIZE, [](Bytes& b) { b.push_back(0); }},
    {"extension len zero", EINVAL, [](Bytes& b) { setU16(b, kPolicyOff, 0); }},
    {"extension beyond message", EINVAL, [](Bytes& b) { setU16(b, kSrcOff, 200); }},
    {"unknown extension type", EINVAL, [](Bytes& b) { setU16(b, kSrcOff + 2, SADB_EXT_MAX + 1); }},
    {"extension type between Linux's last and ours", EINVAL, [](Bytes& b) { setU16(b, kSrcOff + 2, kExtSaReplay - 1); }},
    {"extension type above ours", EINVAL, [](Bytes& b) { setU16(b, kSrcOff + 2, kExtMax + 1); }},
    {"reserved extension type", EINVAL, [](Bytes& b) { setU16(b, kSrcOff + 2, 0); }},
    {"duplicate extension", EINVAL, [](Bytes& b) { setU16(b, kSrcOff + 2, SADB_EXT_ADDRESS_DST); }},
    {"wrong sockaddr size for family", EINVAL,
     [](Bytes& b) { uint16_t f = AF_INET6; std::memcpy(b.data() + kSrcOff + 8, &f, 2); }},
    {"unknown sockaddr family", EINVAL,
     [](Bytes& b) { uint16_t f = AF_UNIX; std::memcpy(b.data() + kSrcOff + 8, &f, 2); }},
    {"IPv4 prefixlen above 32", EINVAL, [](Bytes& b) { b[kSrcOff + 5] = 33; }},
    {"ipsecrequest len below 16", EINVAL, [](Bytes& b) { setU16(b, kRequestOff, 8); }},
    {"ipsecrequest len beyond extension", EINVAL, [](Bytes& b) { setU16(b, kRequestOff, 64); }},
    {"tunnel request with one sockaddr", EINVAL, [](Bytes& b) { setU16(b, kRequestOff, 32); }},
    {"tunnel request with mixed families", EINVAL,
     [](Bytes& b) { uint16_t f = AF_INET6; std::memcpy(b.data() + kRequestOff + 32, &f, 2); }},
    {"ipsecrequest bad protocol", EINVAL, [](Bytes& b) { setU16(b, kRequestOff + 2, 17); }},
    {"ipsecrequest mode any", EINVAL, [](Bytes& b) { b[kRequestOff + 4] = 0; }},
    {"ipsecrequest level above unique", EINVAL, [](Bytes& b) { b[kRequestOff + 5] = 4; }},
};

TEST(PfkeyParse, ValidPolicyParses) { EXPECT_EQ(errnoOf(validPolicy()), 0); }

TEST(PfkeyParse, MalformedMessagesGetTheKernelErrno) {
  for (const auto& c : kMalformed) {
    Bytes b = validPolicy();
    c.mutate(b);
    EXPECT_EQ(errnoOf(b), c.errnum) << c.name;
  }
}

TEST(PfkeyParse, IPv6PrefixlenAbove128IsInvalid) {
  Bytes b = Builder(SADB_X_SPDDELETE, 0, 0, 1)
                .address(SADB_EXT_ADDRESS_SRC, *SockAddress::fromString("2001:db8::1"), 129, 255)
                .finish();
  EXPECT_EQ(errnoOf(b), EINVAL);
}

TEST(PfkeyParse, KeyBitsBeyondExtensionAreInvalid) {
  uint8_t key[16] = {};
  Bytes b = Builder(SADB_ADD, SADB_SATYPE_ESP, 0, 1).key(SADB_EXT_KEY_ENCRYPT, 128, key).finish();
  EXPECT_EQ(errnoOf(b), 0);
  uint16_t bits = 256;
  std::memcpy(b.data() + 16 + 4, &bits, 2);
  EXPECT_EQ(errnoOf(b), EINVAL);
}

TEST(PfkeyParse, FixedSizeExtensionWithExtraWordsIsInvalid) {
  Bytes b = Builder(SADB_GET, SADB_SATYPE_ESP, 0, 1).sa({0x1001}).finish();
  EXPECT_EQ(errnoOf(b), 0);
  b.resize(b.size() + 8);
  setU16(b, 16, 3);
  fixLen(b);
  EXPECT_EQ(errnoOf(b), EINVAL);
}

TEST(PfkeyParse, SevenChainedRequestsAreTooDeep) {
  PolicyFields p{IPSEC_POLICY_IPSEC, IPSEC_DIR_OUTBOUND, 0, 0, {}};
  for (int i = 0; i < 7; ++i)
    p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}});
  EXPECT_EQ(errnoOf(Builder(SADB_X_SPDADD, 0, 0, 1).policy(p).finish()), ELOOP);
  p.requests.pop_back();
  EXPECT_EQ(errnoOf(Builder(SADB_X_SPDADD, 0, 0, 1).policy(p).finish()), 0);
}

TEST(PfkeyParse, SecurityContextLengthMustMatch) {
  const uint8_t ctx[] = {'a', 'b', 'c'};
  Bytes b = Builder(SADB_X_SPDADD, 0, 0, 1).secCtx(1, 1, ctx).finish();
  auto r = parse(b);
  const auto& m = ok(r);
  ASSERT_TRUE(m.secCtx());
  EXPECT_EQ(m.secCtx()->context.size(), 3u);
  setU16(b, 16 + 6, 40);
  EXPECT_EQ(errnoOf(b), EINVAL);
}

// ---- our SA_REPLAY extension and ESN flag ------------------------------------

static_assert(kMaxReplayWindow == esp::ReplayWindow::kMaxSize,
              "PF_KEY must accept exactly the windows the data path keeps");

TEST(PfkeySaReplay, RoundTripsAThirtyTwoBitWindowAndTheEsnFlag) {
  Bytes b = Builder(SADB_ADD, SADB_SATYPE_ESP, 0, 1)
                .sa({0x1001, 255, SADB_SASTATE_MATURE, 0, SADB_X_EALG_AES_GCM_ICV16, kSaFlagEsn})
                .saReplay(4096)
                .finish();
  auto r = parse(b);
  const auto& m = ok(r);
  ASSERT_TRUE(m.saReplay());
  EXPECT_EQ(*m.saReplay(), 4096u);
  EXPECT_EQ(m.sa()->sadb_sa_flags & kSaFlagEsn, kSaFlagEsn);
  EXPECT_STREQ(extTypeName(kExtSaReplay), "X_SA_REPLAY");
  // FreeBSD's layout: len 1, exttype, u32 window.
  EXPECT_EQ(b.size(), 16u + 16u + 8u);
  uint16_t len, type;
  uint32_t window;
  std::memcpy(&len, b.data() + 32, 2);
  std::memcpy(&type, b.data() + 34, 2);
  std::memcpy(&window, b.data() + 36, 4);
  EXPECT_EQ(len, 1);
  EXPECT_EQ(type, 28);
  EXPECT_EQ(window, 4096u);
}

TEST(PfkeySaReplay, AbsentWhenNotSent) {
  const Bytes plain = Builder(SADB_GET, SADB_SATYPE_ESP, 0, 1).sa({0x1001}).finish();
  auto r = parse(plain);
  EXPECT_FALSE(ok(r).saReplay());
  EXPECT_FALSE(ok(r).has(kExtSaReplay));
}

TEST(PfkeySaReplay, WrongLengthOrDuplicateIsInvalid) {
  Bytes b = Builder(SADB_ADD, SADB_SATYPE_ESP, 0, 1).sa({0x1001}).saReplay(1024).finish();
  Bytes longer = b;
  longer.resize(longer.size() + 8);
  setU16(longer, 32, 2);
  fixLen(longer);
  EXPECT_EQ(errnoOf(longer), EINVAL);
  Bytes twice = Builder(SADB_ADD, SADB_SATYPE_ESP, 0, 1).sa({0x1001}).saReplay(1024).saReplay(2048).finish();
  EXPECT_EQ(errnoOf(twice), EINVAL);
  Bytes zeroLen = b;
  setU16(zeroLen, 32, 0);
  EXPECT_EQ(errnoOf(zeroLen), EINVAL);
}

// ---- our SA_OPTIONS extension (per-SA tunnel options) -------------------------

Bytes withOptions(const SaOptions& o) {
  return Builder(SADB_ADD, SADB_SATYPE_ESP, 0, 1).sa({0x1001}).saOptions(o).finish();
}

TEST(PfkeySaOptions, RoundTripsEveryField) {
  const SaOptions o{kSaDfCopy, 1400, 512, 250};
  Bytes b = withOptions(o);
  auto r = parse(b);
  const auto& m = ok(r);
  ASSERT_TRUE(m.saOptions());
  EXPECT_EQ(*m.saOptions(), o);
  EXPECT_STREQ(extTypeName(kExtSaOptions), "X_SA_OPTIONS");
  // The wire layout: len 2, type 29, df, reserved, mtu, tfc_pad, reserved, dummy ms.
  ASSERT_EQ(b.size(), 16u + 16u + 16u);
  const uint8_t* e = b.data() + 32;
  uint16_t len, type, mtu, tfc;
  uint32_t dummy;
  std::memcpy(&len, e, 2);
  std::memcpy(&type, e + 2, 2);
  std::memcpy(&mtu, e + 6, 2);
  std::memcpy(&tfc, e + 8, 2);
  std::memcpy(&dummy, e + 12, 4);
  EXPECT_EQ(len, 2);
  EXPECT_EQ(type, 29);
  EXPECT_EQ(e[4], 3);
  EXPECT_EQ(mtu, 1400);
  EXPECT_EQ(tfc, 512);
  EXPECT_EQ(dummy, 250u);
}

TEST(PfkeySaOptions, AbsentWhenNotSentAndAllZeroMeansDefaults) {
  // A ParsedMessage points into its bytes: they must outlive it.
  const Bytes plain = Builder(SADB_GET, SADB_SATYPE_ESP, 0, 1).sa({0x1001}).finish();
  auto r = parse(plain);
  EXPECT_FALSE(ok(r).saOptions());
  EXPECT_FALSE(SaOptions{}.any());
  EXPECT_TRUE((SaOptions{0, 0, 0, 1}.any()));
  const Bytes zeros = withOptions(SaOptions{});
  auto z = parse(zeros);
  ASSERT_TRUE(ok(z).saOptions());
  EXPECT_FALSE(ok(z).saOptions()->any());
}

TEST(PfkeySaOptions, MalformedOptionsAreInvalid) {
  const Bytes good = withOptions({kSaDfSet, 1500, 0, 0});
  ASSERT_EQ(errnoOf(good), 0);
  constexpr size_t kAt = 32;
  auto mutated = [&](auto f) {
    Bytes b = good;
    f(b);
    return errnoOf(b);
  };
  EXPECT_EQ(mutated([](Bytes& b) { b[kAt + 4] = 4; }), EINVAL) << "df above copy";
  EXPECT_EQ(mutated([](Bytes& b) { b[kAt + 4] = 0xff; }), EINVAL) << "df 255";
  EXPECT_EQ(mutated([](Bytes& b) { b[kAt + 5] = 1; }), EINVAL) << "first reserved byte";
  EXPECT_EQ(mutated([](Bytes& b) { setU16(b, kAt + 10, 1); }), EINVAL) << "second reserved field";
  EXPECT_EQ(mutated([](Bytes& b) { setU16(b, kAt + 6, 575); }), EINVAL) << "mtu below 576";
  EXPECT_EQ(mutated([](Bytes& b) { setU16(b, kAt + 6, 576); }), 0) << "mtu 576 is the IPv4 floor";
  EXPECT_EQ(mutated([](Bytes& b) { setU16(b, kAt + 6, 0); }), 0) << "mtu 0 is the default";
  EXPECT_EQ(mutated([](Bytes& b) { setU16(b, kAt, 1); }), EINVAL) << "shorter than its struct";
  EXPECT_EQ(mutated([](Bytes& b) {
              b.resize(b.size() + 8);
              setU16(b, kAt, 3);
              fixLen(b);
            }),
            EINVAL)
      << "longer than its struct";
  Bytes twice = Builder(SADB_ADD, SADB_SATYPE_ESP, 0, 1).sa({0x1001}).saOptions({}).saOptions({}).finish();
  EXPECT_EQ(errnoOf(twice), EINVAL);
}

}  // namespace
}  // namespace ipsec::pfkey
