// Unit tests of the ipsecd config file parser: every key, every default, and
// each error form with its exact "file:line: message" text.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "config/config.h"

namespace ipsec::config {
namespace {

std::string errorOf(std::string_view text, std::string_view file = "t.conf") {
  try {
    parseConfig(text, file);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Config, EmptyTextGivesTheDocumentedDefaults) {
  const Config c = parseConfig("", "empty.conf");
  EXPECT_EQ(c.tunName, "ipsec0");
  EXPECT_EQ(c.tunMtu, 1400u);
  EXPECT_TRUE(c.tunOffload);
  EXPECT_FALSE(c.espRing);
  EXPECT_EQ(c.espSend, Config::EspSend::kRaw);
  EXPECT_TRUE(c.tunAddresses.empty());
  EXPECT_TRUE(c.tunRoutes.empty());
  EXPECT_TRUE(c.localAddresses.empty());
  EXPECT_EQ(c.runtimeDir, "/run/ipsecd");
  EXPECT_FALSE(c.setkeyFile.has_value());
  EXPECT_EQ(c.cryptoWorkers, 1u);
  EXPECT_EQ(c.nattPort, 4500u);
  EXPECT_EQ(c.keydb, (ServiceIds{64701, 64701}));
  EXPECT_EQ(c.policy, (ServiceIds{64702, 64702}));
  EXPECT_EQ(c.crypto, (ServiceIds{64703, 64703}));
  EXPECT_EQ(c.forwarder, (ServiceIds{64704, 64704}));
  EXPECT_FALSE(c.pfkeyGroup.has_value());
  EXPECT_EQ(c.replayWindow, 64u);
  EXPECT_EQ(c.restartLimit, 5u);
  EXPECT_EQ(c.restartWindowSeconds, 60u);
  EXPECT_FALSE(c.debug);
}

TEST(Config, ReadsEveryKey) {
  const Config c = parseConfig(R"(# a full configuration
tun_name = tun-east
tun_mtu = 1380
tun_offload = no
esp_ring = yes
esp_send = packet
tun_addresses = 192.0.2.1/24, 2001:db8::1/64
tun_routes = 198.51.100.0/24,2001:db8:1::/48
local_addresses = 203.0.113.1, 2001:db8:ffff::1
runtime_dir = /run/ipsecd-east
setkey_file = east.setkey
crypto_workers = 4
natt_port = 14500
keydb_uid = 60001
keydb_gid = 61001
policy_uid = 60002
policy_gid = 61002
crypto_uid = 60003
crypto_gid = 61003
forwarder_uid = 60004
forwarder_gid = 61004
pfkey_group = 998
replay_window = 1024
restart_limit = 3
restart_window_s = 120
debug = yes
)",
                               "full.conf");
  EXPECT_EQ(c.tunName, "tun-east");
  EXPECT_EQ(c.tunMtu, 1380u);
  EXPECT_FALSE(c.tunOffload);
  EXPECT_TRUE(c.espRing);
  EXPECT_EQ(c.espSend, Config::EspSend::kPacket);
  ASSERT_EQ(c.tunAddresses.size(), 2u);
  EXPECT_EQ(c.tunAddresses[0].family, AF_INET);
  EXPECT_EQ(c.tunAddresses[0].toString(), "192.0.2.1/24");
  EXPECT_EQ(c.tunAddresses[0].bytes[0], 192);
  EXPECT_EQ(c.tunAddresses[0].bytes[3], 1);
  EXPECT_EQ(c.tunAddresses[0].addressLength(), 4u);
  EXPECT_EQ(c.tunAddresses[1].family, AF_INET6);
  EXPECT_EQ(c.tunAddresses[1].toString(), "2001:db8::1/64");
  EXPECT_EQ(c.tunAddresses[1].addressLength(), 16u);
  ASSERT_EQ(c.tunRoutes.size(), 2u);
  EXPECT_EQ(c.tunRoutes[0].toString(), "198.51.100.0/24");
  EXPECT_EQ(c.tunRoutes[1].toString(), "2001:db8:1::/48");
  ASSERT_EQ(c.localAddresses.size(), 2u);
  EXPECT_EQ(c.localAddresses[0].toString(), "203.0.113.1/32");
  EXPECT_EQ(c.localAddresses[1].addressString(), "2001:db8:ffff::1");
  EXPECT_EQ(c.localAddresses[1].prefixLength, 128);
  EXPECT_EQ(c.runtimeDir, "/run/ipsecd-east");
  EXPECT_EQ(c.setkeyFile, "east.setkey");
  EXPECT_EQ(c.cryptoWorkers, 4u);
  EXPECT_EQ(c.nattPort, 14500u);
  EXPECT_EQ(c.keydb, (ServiceIds{60001, 61001}));
  EXPECT_EQ(c.policy, (ServiceIds{60002, 61002}));
  EXPECT_EQ(c.crypto, (ServiceIds{60003, 61003}));
  EXPECT_EQ(c.forwarder, (ServiceIds{60004, 61004}));
  EXPECT_EQ(c.pfkeyGroup, 998u);
  EXPECT_EQ(c.replayWindow, 1024u);
  EXPECT_EQ(c.restartLimit, 3u);
  EXPECT_EQ(c.restartWindowSeconds, 120u);
  EXPECT_TRUE(c.debug);
}

TEST(Config, IgnoresCommentsBlankLinesAndSurroundingWhitespace) {
  const Config c = parseConfig("\n   # only a comment\n\t tun_mtu\t=  1500   # why: jumbo\r\n\n",
                               "c.conf");
  EXPECT_EQ(c.tunMtu, 1500u);
}

TEST(Config, AcceptsEveryBooleanSpelling) {
  for (const char* yes : {"yes", "true", "1", "YES", "True"}) {
    EXPECT_TRUE(parseConfig(std::string("debug = ") + yes, "b").debug) << yes;
  }
  for (const char* no : {"no", "false", "0", "No"}) {
    EXPECT_FALSE(parseConfig(std::string("debug = ") + no, "b").debug) << no;
  }
}

TEST(Config, AcceptsRangeLimits) {
  EXPECT_EQ(parseConfig("tun_mtu = 576", "r").tunMtu, 576u);
  EXPECT_EQ(parseConfig("tun_mtu = 65535", "r").tunMtu, 65535u);
  EXPECT_EQ(parseConfig("crypto_workers = 16", "r").cryptoWorkers, 16u);
  EXPECT_EQ(parseConfig("replay_window = 0", "r").replayWindow, 0u);
  EXPECT_EQ(parseConfig("replay_window = 4096", "r").replayWindow, 4096u);
  EXPECT_EQ(parseConfig("tun_routes = 0.0.0.0/0, ::/0", "r").tunRoutes.size(), 2u);
}

TEST(ConfigError, RejectsALineWithoutEquals) {
  EXPECT_EQ(errorOf("tun_mtu = 1400\ntun_name ipsec1\n"), "t.conf:2: expected \"key = value\"");
}

TEST(ConfigError, RejectsAMissingKey) {
  EXPECT_EQ(errorOf("= 5"), "t.conf:1: missing key before '='");
}

TEST(ConfigError, RejectsAnUnknownKey) {
  EXPECT_EQ(errorOf("# x\n\ntun_mut = 1400", "/etc/ipsecd.conf"),
            "/etc/ipsecd.conf:3: unknown key \"tun_mut\"");
}

TEST(ConfigError, RejectsADuplicateKey) {
  EXPECT_EQ(errorOf("tun_mtu = 1400\n\ntun_mtu = 1500"),
            "t.conf:3: tun_mtu: duplicate key (first set on line 1)");
}

TEST(Config, ForwarderThreadsDefaultToOneAndTakeTheirOwnWorkers) {
  EXPECT_EQ(parseConfig("", "t").forwarderThreads, 1u);
  const auto c = parseConfig("crypto_workers = 4\nforwarder_threads = 2\n", "t");
  EXPECT_EQ(c.forwarderThreads, 2u);
  EXPECT_EQ(errorOf("forwarder_threads = 17"), "t.conf:1: forwarder_threads: 17 is out of range 1..16");
  EXPECT_EQ(errorOf("crypto_workers = 1\nforwarder_threads = 2"),
            "t.conf:2: forwarder_threads: 2 threads need crypto_workers of at least as many (it is 1): each thread "
            "drives workers of its own");
}

TEST(ConfigError, RejectsAnEmptyValue) {
  EXPECT_EQ(errorOf("setkey_file =   "), "t.conf:1: setkey_file: empty value");
}

TEST(ConfigError, RejectsANonNumber) {
  EXPECT_EQ(errorOf("tun_mtu = 1400x"), "t.conf:1: tun_mtu: \"1400x\" is not a number");
  EXPECT_EQ(errorOf("crypto_workers = -1"),
            "t.conf:1: crypto_workers: \"-1\" is not a number");
  EXPECT_EQ(errorOf("replay_window = +5"), "t.conf:1: replay_window: \"+5\" is not a number");
}

TEST(ConfigError, RejectsOutOfRangeNumbers) {
  EXPECT_EQ(errorOf("tun_mtu = 575"), "t.conf:1: tun_mtu: 575 is out of range 576..65535");
  EXPECT_EQ(errorOf("tun_mtu = 65536"), "t.conf:1: tun_mtu: 65536 is out of range 576..65535");
  EXPECT_EQ(errorOf("crypto_workers = 0"),
            "t.conf:1: crypto_workers: 0 is out of range 1..16");
  EXPECT_EQ(errorOf("crypto_workers = 17"),
            "t.conf:1: crypto_workers: 17 is out of range 1..16");
  EXPECT_EQ(errorOf("replay_window = 4097"),
            "t.conf:1: replay_window: 4097 is out of range 0..4096");
  EXPECT_EQ(errorOf("natt_port = 0"), "t.conf:1: natt_port: 0 is out of range 1..65535");
  EXPECT_EQ(errorOf("restart_window_s = 0"),
            "t.conf:1: restart_window_s: 0 is out of range 1..86400");
  EXPECT_EQ(errorOf("restart_limit = 1001"),
            "t.conf:1: restart_limit: 1001 is out of range 0..1000");
  EXPECT_EQ(errorOf("tun_mtu = 99999999999999999999999"),
            "t.conf:1: tun_mtu: 99999999999999999999999 is out of range 576..65535");
}

TEST(ConfigError, RejectsRootAndMinusOneAsServiceIds) {
  EXPECT_EQ(errorOf("keydb_uid = 0"), "t.conf:1: keydb_uid: 0 is out of range 1..4294967294");
  EXPECT_EQ(errorOf("forwarder_gid = 4294967295"),
            "t.conf:1: forwarder_gid: 4294967295 is out of range 1..4294967294");
}

TEST(ConfigError, RejectsTwoServicesWithOneUid) {
  EXPECT_EQ(errorOf("forwarder_uid = 64701"),
            "t.conf:1: forwarder_uid: 64701 is also keydb_uid; each service needs its own uid");
  EXPECT_EQ(errorOf("crypto_uid = 7000\n# x\npolicy_uid = 7000"),
            "t.conf:3: policy_uid: 7000 is also crypto_uid; each service needs its own uid");
}

TEST(ConfigError, RejectsBadAddresses) {
  EXPECT_EQ(errorOf("tun_addresses = 192.0.2.300/24"),
            "t.conf:1: tun_addresses: \"192.0.2.300/24\" is not an address/prefix");
  EXPECT_EQ(errorOf("tun_addresses = 192.0.2.1"),
            "t.conf:1: tun_addresses: \"192.0.2.1\" is not an address/prefix");
  EXPECT_EQ(errorOf("tun_addresses = 2001:db8::g/64"),
            "t.conf:1: tun_addresses: \"2001:db8::g/64\" is not an address/prefix");
  EXPECT_EQ(errorOf("tun_routes = 192.0.2.0/"),
            "t.conf:1: tun_routes: \"192.0.2.0/\" is not an address/prefix");
  EXPECT_EQ(errorOf("tun_routes = 192.0.2.0/+8"),
            "t.conf:1: tun_routes: \"192.0.2.0/+8\" is not an address/prefix");
  EXPECT_EQ(errorOf("local_addresses = 203.0.113.1/32"),
            "t.conf:1: local_addresses: \"203.0.113.1/32\" must be an address without a "
            "prefix length");
  EXPECT_EQ(errorOf("local_addresses = example.org"),
            "t.conf:1: local_addresses: \"example.org\" is not an IPv4 or IPv6 address");
}

TEST(ConfigError, RejectsBadPrefixLengths) {
  EXPECT_EQ(errorOf("tun_addresses = 192.0.2.1/33"),
            "t.conf:1: tun_addresses: prefix length 33 is out of range 0..32 in "
            "\"192.0.2.1/33\"");
  EXPECT_EQ(errorOf("tun_routes = 2001:db8::/129"),
            "t.conf:1: tun_routes: prefix length 129 is out of range 0..128 in "
            "\"2001:db8::/129\"");
  EXPECT_EQ(errorOf("tun_routes = 198.51.100.1/24"),
            "t.conf:1: tun_routes: \"198.51.100.1/24\" has host bits set beyond the prefix "
            "length");
}

TEST(ConfigError, RejectsAnEmptyListItem) {
  EXPECT_EQ(errorOf("tun_routes = 198.51.100.0/24,,2001:db8::/32"),
            "t.conf:1: tun_routes: empty item in list");
  EXPECT_EQ(errorOf("tun_routes = 198.51.100.0/24,"), "t.conf:1: tun_routes: empty item in list");
}

TEST(ConfigError, RejectsABadInterfaceName) {
  EXPECT_EQ(errorOf("tun_name = a-name-far-too-long"),
            "t.conf:1: tun_name: \"a-name-far-too-long\" is not a valid interface name (1..15 "
            "printable characters, no '/', ':', ',' or space)");
  EXPECT_NE(errorOf("tun_name = ipsec/0"), "(no error)");
  EXPECT_NE(errorOf("tun_name = .."), "(no error)");
  EXPECT_NE(errorOf("tun_name = ip sec"), "(no error)");
}

TEST(ConfigError, RejectsARelativeRuntimeDir) {
  EXPECT_EQ(errorOf("runtime_dir = run/ipsecd"),
            "t.conf:1: runtime_dir: \"run/ipsecd\" is not an absolute path");
}

TEST(ConfigError, RejectsABadBoolean) {
  EXPECT_EQ(errorOf("debug = maybe"),
            "t.conf:1: debug: \"maybe\" is not a boolean (yes/no/true/false/1/0)");
}

TEST(ConfigError, RejectsAnEspSendOtherThanRawOrPacket) {
  EXPECT_EQ(errorOf("esp_send = ring"), "t.conf:1: esp_send: \"ring\" is neither raw nor packet");
  EXPECT_EQ(parseConfig("esp_send = raw", "t.conf").espSend, Config::EspSend::kRaw);
}

TEST(ConfigError, KeepsFileLineAndMessageApart) {
  try {
    parseConfig("\n\nbogus = 1", "x.conf");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.fileName(), "x.conf");
    EXPECT_EQ(e.line(), 3u);
    EXPECT_EQ(e.message(), "unknown key \"bogus\"");
  }
}

TEST(ConfigFile, LoadsAFileAndNamesItInErrors) {
  char path[] = "/tmp/config_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream(path) << "tun_mtu = 1280\nreplay_window = 32\n";
  }
  const Config c = loadConfigFile(path);
  EXPECT_EQ(c.tunMtu, 1280u);
  EXPECT_EQ(c.replayWindow, 32u);
  {
    std::ofstream(path) << "tun_mtu = 1280\nwat\n";
  }
  try {
    loadConfigFile(path);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), std::string(path) + ":2: expected \"key = value\"");
  }
  std::remove(path);
}

TEST(ConfigFile, AMissingFileIsAConfigError) {
  try {
    loadConfigFile("/nonexistent/ipsecd.conf");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "/nonexistent/ipsecd.conf: cannot open: No such file or directory");
  }
}

TEST(ConfigTransport, DefaultsToNoPeersMark0x4950AndTable4950) {
  const Config c = parseConfig("", "t.conf");
  EXPECT_TRUE(c.transportPeers.empty());
  EXPECT_EQ(c.fwmark, 0x4950u);
  EXPECT_EQ(c.routeTable, 4950u);
}

TEST(ConfigTransport, ReadsPeersMarkInHexOrDecimalAndTable) {
  const Config c = parseConfig(
      "transport_peers = 192.0.2.2, 2001:db8:1::2\nfwmark = 0x1F00\nroute_table = 100\n", "t.conf");
  ASSERT_EQ(c.transportPeers.size(), 2u);
  EXPECT_EQ(c.transportPeers[0].toString(), "192.0.2.2/32");
  EXPECT_EQ(c.transportPeers[1].toString(), "2001:db8:1::2/128");
  EXPECT_EQ(c.fwmark, 0x1f00u);
  EXPECT_EQ(c.routeTable, 100u);
  EXPECT_EQ(parseConfig("fwmark = 4294967295", "t.conf").fwmark, 0xffffffffu);
  EXPECT_EQ(parseConfig("route_table = 0x10", "t.conf").routeTable, 16u);
}

TEST(ConfigTransport, RejectsAZeroMarkAndTheKernelsTables) {
  EXPECT_EQ(errorOf("fwmark = 0"), "t.conf:1: fwmark: 0 is out of range 1..4294967295");
  EXPECT_EQ(errorOf("fwmark = 0x100000000"), "t.conf:1: fwmark: 0x100000000 is out of range 1..4294967295");
  EXPECT_EQ(errorOf("fwmark = 0xZZ"), "t.conf:1: fwmark: \"0xZZ\" is not a number");
  EXPECT_EQ(errorOf("route_table = 254"),
            "t.conf:1: route_table: 254 is a table the kernel uses (253 default, 254 main, 255 local)");
  EXPECT_EQ(errorOf("route_table = 0"), "t.conf:1: route_table: 0 is out of range 1..4294967295");
}

TEST(ConfigTransport, RejectsAPeerWithAPrefixLength) {
  EXPECT_EQ(errorOf("transport_peers = 192.0.2.0/24"),
            "t.conf:1: transport_peers: \"192.0.2.0/24\" must be an address without a prefix length");
}

}  // namespace
}  // namespace ipsec::config
