// The setkey language: statements become the right commands and requests,
// and mistakes are reported at the right file:line:column.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <netinet/in.h>

#include "pfkey/message.h"
#include "setkey/format.h"
#include "setkey/parser.h"

namespace ipsec::setkey {
namespace {

std::vector<Command> parseOk(std::string_view text) {
  auto r = parseScript(text, "t.conf");
  if (auto* e = std::get_if<SyntaxError>(&r)) {
    ADD_FAILURE() << e->format();
    return {};
  }
  return std::get<std::vector<Command>>(r);
}

std::string errorOf(std::string_view text) {
  auto r = parseScript(text, "t.conf");
  if (auto* e = std::get_if<SyntaxError>(&r)) return e->format();
  return "(parsed)";
}

TEST(SetkeyParser, StatementsMaySpanLinesAndCarryComments) {
  auto cmds = parseOk("# SAs\nflush ;  spdflush;\nadd 192.0.2.1 192.0.2.2 esp 0x1001   # keys follow\n"
                      "  -m tunnel -u 7\n  -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;\n");
  ASSERT_EQ(cmds.size(), 3u);
  EXPECT_EQ(cmds[0].kind, CommandKind::kFlush);
  EXPECT_EQ(cmds[1].kind, CommandKind::kSpdFlush);
  const Command& add = cmds[2];
  EXPECT_EQ(add.where.line, 3);
  EXPECT_EQ(add.sa.spi, 0x1001u);
  EXPECT_EQ(add.sa.mode, IPSEC_MODE_TUNNEL);
  EXPECT_EQ(add.sa.reqid, 7u);
  ASSERT_TRUE(add.sa.encrypt);
  EXPECT_EQ(add.sa.encrypt->id, SADB_X_EALG_AES_GCM_ICV16);
  EXPECT_EQ(add.sa.encryptKey.size(), 20u);
}

TEST(SetkeyParser, AesGcmRequestCarriesKeyWithSaltAndNoAuth) {
  auto cmds = parseOk("add 192.0.2.1 192.0.2.2 esp 0x1001 -E aes-gcm-16 \"0123456789abcdef0123\";");
  ASSERT_EQ(cmds.size(), 1u);
  auto reqs = cmds[0].requests(77);
  ASSERT_EQ(reqs.size(), 1u);
  auto r = pfkey::parse(reqs[0]);
  const auto& m = std::get<pfkey::ParsedMessage>(r);
  EXPECT_EQ(m.msg().sadb_msg_pid, 77u);
  EXPECT_EQ(m.key(SADB_EXT_KEY_ENCRYPT)->bits, 160);
  EXPECT_FALSE(m.has(SADB_EXT_KEY_AUTH));
  EXPECT_EQ(m.sa()->sadb_sa_encrypt, SADB_X_EALG_AES_GCM_ICV16);
  EXPECT_EQ(m.sa()->sadb_sa_auth, SADB_AALG_NONE);
}

TEST(SetkeyParser, ChachaUsesItsNamedProvisionalId) {
  auto cmds = parseOk(
      "add 192.0.2.1 192.0.2.2 esp 1 -E chacha20-poly1305 "
      "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00010203;");
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(cmds[0].sa.encrypt->id, kSadbXEalgChacha20Poly1305);
}

TEST(SetkeyParser, LifetimesSendHardAndSoftTogether) {
  auto cmds = parseOk("add 10.0.0.1 10.0.0.2 ah 5 -lh 3600 -A hmac-sha256 "
                      "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f;");
  const auto requests = cmds.at(0).requests(1);  // the parsed view borrows these bytes
  auto r = pfkey::parse(requests[0]);
  const auto& m = std::get<pfkey::ParsedMessage>(r);
  EXPECT_EQ(m.lifetime(SADB_EXT_LIFETIME_HARD)->sadb_lifetime_addtime, 3600u);
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_SOFT));
}

TEST(SetkeyParser, AWindowAbove255TravelsInTheSaReplayExtensionAndEsnInTheFlags) {
  auto cmds = parseOk("add 192.0.2.1 192.0.2.2 esp 0x1001 -r 4096 -esn -E aes-gcm-16 "
                      "0x000102030405060708090a0b0c0d0e0f10111213;"
                      "add 192.0.2.1 192.0.2.2 esp 0x1002 -r 64 -E aes-gcm-16 "
                      "0x000102030405060708090a0b0c0d0e0f10111213;");
  ASSERT_EQ(cmds.size(), 2u);
  EXPECT_EQ(cmds[0].sa.replay, 4096u);
  const auto big = cmds[0].requests(1);
  auto r = pfkey::parse(big[0]);
  const auto& m = std::get<pfkey::ParsedMessage>(r);
  EXPECT_EQ(m.sa()->sadb_sa_replay, 255);
  ASSERT_TRUE(m.saReplay());
  EXPECT_EQ(*m.saReplay(), 4096u);
  EXPECT_EQ(m.sa()->sadb_sa_flags & pfkey::kSaFlagEsn, pfkey::kSaFlagEsn);
  const auto small = cmds[1].requests(1);
  auto r2 = pfkey::parse(small[0]);
  const auto& m2 = std::get<pfkey::ParsedMessage>(r2);
  EXPECT_EQ(m2.sa()->sadb_sa_replay, 64);
  EXPECT_FALSE(m2.has(pfkey::kExtSaReplay));
  EXPECT_EQ(m2.sa()->sadb_sa_flags & pfkey::kSaFlagEsn, 0u);
}

TEST(SetkeyParser, TunnelOptionsTravelInTheSaOptionsExtensionAndDumpShowsThem) {
  auto cmds = parseOk("add 192.0.2.1 192.0.2.2 esp 0x1001 -m tunnel -df copy -mtu 1400 -tfc 512 -dummy 250 "
                      "-E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;"
                      "update 192.0.2.1 192.0.2.2 ah 0x1002 -df clear -A hmac-sha256 "
                      "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f;"
                      "add 192.0.2.1 192.0.2.2 esp 0x1003 -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;");
  ASSERT_EQ(cmds.size(), 3u);
  const pfkey::SaOptions want{pfkey::kSaDfCopy, 1400, 512, 250};
  EXPECT_EQ(cmds[0].sa.options, want);
  const auto bytes = cmds[0].requests(1);
  auto r = pfkey::parse(bytes[0]);
  const auto& m = std::get<pfkey::ParsedMessage>(r);
  ASSERT_TRUE(m.saOptions());
  EXPECT_EQ(*m.saOptions(), want);
  // The reply as the service builds it, printed by -D: one line, set fields only.
  EXPECT_NE(formatSa(m, 0).find("\tdf=copy mtu=1400 tfc=512 dummy=250(ms) \n"), std::string::npos)
      << formatSa(m, 0);

  const auto ah = cmds[1].requests(1);
  auto r2 = pfkey::parse(ah[0]);
  const auto& m2 = std::get<pfkey::ParsedMessage>(r2);
  EXPECT_EQ(m2.msg().sadb_msg_type, SADB_UPDATE);
  ASSERT_TRUE(m2.saOptions());
  EXPECT_EQ(m2.saOptions()->df, pfkey::kSaDfClear);
  const std::string text = formatSa(m2, 0);
  EXPECT_NE(text.find("\tdf=clear \n"), std::string::npos) << text;
  EXPECT_EQ(text.find("mtu="), std::string::npos);

  // Nothing set: no extension and no extra line, as ipsec-tools prints it.
  const auto plain = cmds[2].requests(1);
  auto r3 = pfkey::parse(plain[0]);
  const auto& m3 = std::get<pfkey::ParsedMessage>(r3);
  EXPECT_FALSE(m3.has(pfkey::kExtSaOptions));
  EXPECT_EQ(formatSa(m3, 0).find("df="), std::string::npos);
}

TEST(SetkeyParser, TunnelOptionMistakesAreReportedWhereTheyAre) {
  const std::string gcm = " -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;";
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -df maybe" + gcm),
            "t.conf:1:35: unknown -df policy 'maybe' (copy, set, clear, inherit)");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -mtu 575" + gcm),
            "t.conf:1:36: MTU 575 is below 576 for this address family");
  EXPECT_EQ(errorOf("add 2001:db8::1 2001:db8::2 esp 1 -mtu 1279" + gcm),
            "t.conf:1:40: MTU 1279 is below 1280 for this address family");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -tfc 65536" + gcm),
            "t.conf:1:36: TFC pad size out of range: 65536");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -dummy" + gcm),
            "t.conf:1:38: invalid dummy interval (ms) '-E'");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 ipcomp 1 -df set -C deflate;"),
            "t.conf:1:1: -df, -mtu, -tfc and -dummy are for esp and ah");
  EXPECT_EQ(errorOf("add 2001:db8::1 2001:db8::2 esp 1 -mtu 1280" + gcm), "(parsed)");
}

TEST(SetkeyParser, EspUdpWithAnOriginalAddressSendsNatOaAndDumpShowsIt) {
  const std::string gcm = " -m transport -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;";
  auto cmds = parseOk("add 192.0.2.1 192.0.2.2[31000] esp-udp 10.9.8.7 0x1001" + gcm +
                      "add 192.0.2.1 192.0.2.2 esp-udp 0x1002" + gcm);
  ASSERT_EQ(cmds.size(), 2u);
  ASSERT_TRUE(cmds[0].sa.natOa);
  EXPECT_EQ(cmds[0].sa.spi, 0x1001u);
  const auto bytes = cmds[0].requests(1);
  auto r = pfkey::parse(bytes[0]);
  const auto& m = std::get<pfkey::ParsedMessage>(r);
  ASSERT_TRUE(m.address(SADB_X_EXT_NAT_T_OA));
  EXPECT_EQ(m.address(SADB_X_EXT_NAT_T_OA)->addr.toString(), "10.9.8.7");
  EXPECT_EQ(*m.natTPort(SADB_X_EXT_NAT_T_DPORT), 31000);
  const std::string text = formatSa(m, 0);
  EXPECT_NE(text.find("\tesp-udp mode=transport"), std::string::npos) << text;
  EXPECT_NE(text.find("\tnat-oa=10.9.8.7 \n"), std::string::npos) << text;

  EXPECT_FALSE(cmds[1].sa.natOa);
  EXPECT_EQ(cmds[1].sa.spi, 0x1002u);
  const auto plain = cmds[1].requests(1);
  auto r2 = pfkey::parse(plain[0]);
  EXPECT_FALSE(std::get<pfkey::ParsedMessage>(r2).has(SADB_X_EXT_NAT_T_OA));
  EXPECT_EQ(formatSa(std::get<pfkey::ParsedMessage>(r2), 0).find("nat-oa"), std::string::npos);

  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp-udp 2001:db8::7 1" + gcm),
            "t.conf:1:33: original address of another family than the SA's");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 10.9.8.7 1" + gcm), "t.conf:1:29: invalid SPI '10.9.8.7'");
}

// FreeBSD's setkey(8) form of NAT-T, "-natt OAI [SPORT] OAR [DPORT]" on an
// esp SA, sends what ipsec-tools' "SRC[SPORT] DST[DPORT] esp-udp OAI" sends:
// the same bytes, so -D shows it the same way (ipsec-tools' format).
TEST(SetkeyParser, FreeBsdNatTSendsWhatTheIpsecToolsFormSends) {
  const std::string gcm = " -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;";
  auto cmds = parseOk("add 192.0.2.1[4501] 192.0.2.2[4500] esp-udp 10.9.8.7 0x1001 -m transport" + gcm +
                      "add 192.0.2.1 192.0.2.2 esp 0x1001 -m transport -natt 10.9.8.7 [4501] 192.0.2.2 [4500]" +
                      gcm +
                      "add 192.0.2.1 192.0.2.2 esp 0x1001 -natt 10.9.8.7[4501] 192.0.2.2[4500] -m transport" + gcm +
                      "update 192.0.2.1 192.0.2.2 esp 0x1001 -m transport -natt 10.9.8.7 [ 4501 ] 192.0.2.2 [ 4500 ]" +
                      gcm);
  ASSERT_EQ(cmds.size(), 4u);
  const auto ipsecTools = cmds[0].requests(1);
  ASSERT_EQ(ipsecTools.size(), 1u);
  for (std::size_t i = 1; i < 3; ++i) EXPECT_EQ(cmds[i].requests(1), ipsecTools) << "statement " << i;
  EXPECT_EQ(cmds[3].kind, CommandKind::kUpdate);
  EXPECT_TRUE(cmds[3].sa.natT);

  const auto bytes = cmds[1].requests(1);  // alive while the parsed message points into it
  const auto r = pfkey::parse(bytes[0]);
  const auto& m = std::get<pfkey::ParsedMessage>(r);
  ASSERT_TRUE(m.natTType());
  EXPECT_EQ(*m.natTType(), kNatTEspInUdp);
  EXPECT_EQ(*m.natTPort(SADB_X_EXT_NAT_T_SPORT), 4501);
  EXPECT_EQ(*m.natTPort(SADB_X_EXT_NAT_T_DPORT), 4500);
  ASSERT_TRUE(m.address(SADB_X_EXT_NAT_T_OA));
  EXPECT_EQ(m.address(SADB_X_EXT_NAT_T_OA)->addr.toString(), "10.9.8.7");
  EXPECT_EQ(formatSa(m, 0), formatSa(std::get<pfkey::ParsedMessage>(pfkey::parse(ipsecTools[0])), 0));
  const std::string text = formatSa(m, 0);
  EXPECT_NE(text.find("\tesp-udp mode=transport"), std::string::npos) << text;
  EXPECT_NE(text.find("\tnat-oa=10.9.8.7 \n"), std::string::npos) << text;
}

// -natt_mtu (FreeBSD's NAT_T_FRAG) is the outer path MTU, sent as -mtu is.
TEST(SetkeyParser, FreeBsdNatTMtuIsTheOuterPathMtu) {
  const std::string gcm = " -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;";
  auto cmds = parseOk("add 192.0.2.1 192.0.2.2 esp 1 -natt 192.0.2.1 [4500] 192.0.2.2 [4500] -natt_mtu 1400" + gcm +
                      "add 192.0.2.1 192.0.2.2 esp 1 -natt_mtu 1400 -natt 192.0.2.1 [4500] 192.0.2.2 [4500]" + gcm +
                      "add 192.0.2.1 192.0.2.2 esp-udp 1 -natt_mtu 1400 -mtu 1400" + gcm);
  ASSERT_EQ(cmds.size(), 3u);
  for (const auto& c : cmds) EXPECT_EQ(c.sa.options.mtu, 1400);
  const auto bytes = cmds[0].requests(1);  // alive while the parsed message points into it
  const auto r = pfkey::parse(bytes[0]);
  ASSERT_TRUE(std::get<pfkey::ParsedMessage>(r).saOptions());
  EXPECT_EQ(std::get<pfkey::ParsedMessage>(r).saOptions()->mtu, 1400);

  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -natt_mtu 1400" + gcm),
            "t.conf:1:31: -natt_mtu needs NAT-T (-natt, or esp-udp)");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp-udp 1 -natt_mtu 1400 -mtu 1300" + gcm),
            "t.conf:1:55: a second, different MTU (-mtu and -natt_mtu both set the outer path MTU)");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp-udp 1 -natt_mtu 552" + gcm),
            "t.conf:1:45: MTU 552 is below 576 for this address family");
}

TEST(SetkeyParser, FreeBsdNatTMistakesAreReportedWhereTheyAre) {
  const std::string gcm = " -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213;";
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -natt 192.0.2.1 192.0.2.2 [4500]" + gcm),
            "t.conf:1:37: original initiator address needs its port in brackets: -natt OAI [SPORT] OAR [DPORT]");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -natt 192.0.2.1 [0] 192.0.2.2 [4500]" + gcm),
            "t.conf:1:37: a NAT-T port is 1 to 65535");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -natt 192.0.2.1 [4500] 10.0.0.2 [4500]" + gcm),
            "t.conf:1:54: an original responder address other than the SA's destination cannot be sent: "
            "our PF_KEY (Linux's) has one original address, NAT_T_OA, for the source");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -natt 2001:db8::1 [4500] 192.0.2.2 [4500]" + gcm),
            "t.conf:1:31: -natt addresses of another family than the SA's");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp-udp 1 -natt 192.0.2.1 [4500] 192.0.2.2 [4500]" + gcm),
            "t.conf:1:35: NAT-T given twice (-natt, or esp-udp and -natt)");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 ah 1 -natt 192.0.2.1 [4500] 192.0.2.2 [4500] -A hmac-sha1 "
                    "0x0102030405060708090a0b0c0d0e0f1011121314;"),
            "t.conf:1:30: -natt is for esp");
  EXPECT_EQ(errorOf("getspi 192.0.2.1 192.0.2.2 esp 1 -natt 192.0.2.1 [4500] 192.0.2.2 [4500];"),
            "t.conf:1:34: -natt is for add and update");
  EXPECT_EQ(errorOf("add 192.0.2.1 192.0.2.2 esp 1 -natt 192.0.2.1 [4500]" + gcm),
            "t.conf:1:54: expected original responder address, not '-E'");
}

TEST(SetkeyParser, InboundPolicyAlsoInstallsForward) {
  auto cmds = parseOk("spdadd 10.0.0.0/24[500] 10.0.1.0/24 udp -P in prio high - 5 none;");
  auto reqs = cmds.at(0).requests(1);
  ASSERT_EQ(reqs.size(), 2u);
  auto r0 = pfkey::parse(reqs[0]);
  auto r1 = pfkey::parse(reqs[1]);
  const auto& in = std::get<pfkey::ParsedMessage>(r0);
  const auto& fwd = std::get<pfkey::ParsedMessage>(r1);
  EXPECT_EQ(in.policy()->dir, IPSEC_DIR_INBOUND);
  EXPECT_EQ(fwd.policy()->dir, IPSEC_DIR_FWD);
  EXPECT_EQ(in.policy()->priority, 0x40000005u);
  EXPECT_EQ(in.address(SADB_EXT_ADDRESS_SRC)->addr.port, 500);
  EXPECT_EQ(in.address(SADB_EXT_ADDRESS_SRC)->prefixlen, 24);
  EXPECT_EQ(in.address(SADB_EXT_ADDRESS_SRC)->proto, IPPROTO_UDP);
}

TEST(SetkeyParser, PriorityForms) {
  auto prio = [](std::string p) {
    auto cmds = parseOk("spdadd 10.0.0.1 10.0.0.2 any -P out prio " + p + " discard;");
    return cmds.empty() ? 0u : cmds[0].spd.policy.priority;
  };
  EXPECT_EQ(prio("100"), 0x80000000u - 100);
  EXPECT_EQ(prio("def + 10"), 0x7ffffff6u);
  EXPECT_EQ(prio("high - 5"), 0x40000005u);
  EXPECT_EQ(prio("low"), 0xc0000000u);
  EXPECT_EQ(formatPriority(0x7ffffff6u), "def + 10");
  EXPECT_EQ(formatPriority(0x40000005u), "high - 5");
  EXPECT_EQ(formatPriority(0x80000000u), "def");
}

struct BadCase {
  const char* text;
  const char* error;
};

TEST(SetkeyParser, MistakesAreReportedAtFileLineColumn) {
  const BadCase cases[] = {
      {"add 10.0.0.1 10.0.0.2 esp 0x1 -E aes-cbc 0x0011;", "t.conf:1:42: aes-cbc takes a 128/192/256-bit key, not 16"},
      {"flush;\nadd 10.0.0.1 10.0.0.2 esp 0x1\n  -E des-cbc 0x0011223344556677;", "t.conf:3:6: unknown encryption algorithm 'des-cbc'"},
      {"add 10.0.0.1 10.0.0.2 esp 0x1 -E null", "t.conf:1:34: missing ';' at end of statement"},
      {"add 10.0.0.1 10.0.0.x esp 0x1 -E null;", "t.conf:1:14: invalid address '10.0.0.x'"},
      {"add 10.0.0.1 2001:db8::1 esp 0x1 -E null;", "t.conf:1:1: source and destination families differ"},
      {"add 10.0.0.1 10.0.0.2 esp 0x1 -A hmac-sha1 0x0123456789abcdef0123456789abcdef01234567;", "t.conf:1:1: esp needs -E"},
      {"add 10.0.0.1 10.0.0.2 esp 0x1 -E aes-gcm-16 0x0001020304050607080910111213141516171819 -A hmac-sha1 0x0123456789abcdef0123456789abcdef01234567;",
       "t.conf:1:1: aes-gcm-16 includes integrity: no -A"},
      {"add 10.0.0.1 10.0.0.2 esp 0x100000000 -E null;", "t.conf:1:27: SPI out of range: 0x100000000"},
      {"spdadd 10.0.0.0/33 10.0.0.2 any -P out none;", "t.conf:1:17: prefix length out of range: 33"},
      {"spdadd 10.0.0.1 10.0.0.2 any -P up none;", "t.conf:1:33: unknown direction 'up' (in, out, fwd)"},
      {"spdadd 10.0.0.1 10.0.0.2 any -P out ipsec esp/tunnel//require;", "t.conf:1:43: tunnel mode needs src-dst endpoints"},
      {"spdadd 10.0.0.1 10.0.0.2 any -P out ipsec esp/transport//unique:99999;", "t.conf:1:43: reqid out of range: 99999"},
      {"spdadd 10.0.0.1 10.0.0.2 any -P out;", "t.conf:1:36: expected a policy (discard, none, ipsec ...)"},
      {"spddelete 10.0.0.1 10.0.0.2 any;", "t.conf:1:32: spddelete needs -P direction"},
      {"frobnicate;", "t.conf:1:1: unknown command 'frobnicate'"},
      {"add 10.0.0.1 10.0.0.2 esp 1 -E null -A hmac-sha1 \"short;", "t.conf:1:50: unterminated string"},
      {";", "t.conf:1:1: empty statement"},
  };
  for (const auto& c : cases) EXPECT_EQ(errorOf(c.text), c.error) << c.text;
}

}  // namespace
}  // namespace ipsec::setkey
