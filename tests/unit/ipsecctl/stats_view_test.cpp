// ipsecctl stats: the mapping table (stats_map.h) covers every forwarder
// counter exactly once, and the grouped view sums and indents as netstat would.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "counters.h"
#include "stats_map.h"
#include "stats_view.h"

namespace {

using namespace ipsec::ipsecctl;

std::vector<std::string> forwarderCounterNames() {
  std::vector<std::string> names;
  ipsec::forwarder::Counters{}.forEach([&](const char* name, std::uint64_t) { names.emplace_back(name); });
  return names;
}

TEST(StatsMap, EveryForwarderCounterAppearsInExactlyOneGroup) {
  for (const auto& name : forwarderCounterNames()) {
    int seen = 0;
    for (const auto& c : kStatCounters) seen += c.counter == name;
    EXPECT_EQ(seen, 1) << name << " must appear exactly once in tools/ipsecctl/stats_map.h";
  }
}

// An entry naming a counter the forwarder lacks is harmless (the view skips
// it: an older forwarder), but a counter named twice would print twice.
TEST(StatsMap, NamesEachCounterOnce) {
  std::set<std::string_view> mapped;
  for (const auto& c : kStatCounters) EXPECT_TRUE(mapped.insert(c.counter).second) << c.counter << " mapped twice";
}

TEST(StatsMap, EveryFieldBelongsToTheCountersGroupAndFeedsFromSomeCounter) {
  for (const auto& c : kStatCounters) {
    EXPECT_TRUE(isStatGroup(c.group)) << c.counter;
    if (c.counter != "sas" && c.counter != "policies") {
      EXPECT_NE(c.phrase.find("%s"), std::string_view::npos) << c.counter << ": the phrase has no plural slot";
    }
    if (c.field.empty()) continue;
    bool found = false;
    for (const auto& f : kStatFields) found |= f.field == c.field && f.group == c.group;
    EXPECT_TRUE(found) << c.counter << " names " << c.field << ", not a field of group " << c.group;
  }
  for (const auto& f : kStatFields) {
    bool fed = false;
    for (const auto& c : kStatCounters) fed |= c.field == f.field;
    EXPECT_TRUE(fed) << f.field << " is fed by no counter";
  }
}

TEST(StatsView, PluralPhraseSaysPacketForOneAndPacketsOtherwise) {
  EXPECT_EQ(pluralPhrase("packet%s in", 1), "packet in");
  EXPECT_EQ(pluralPhrase("packet%s in", 0), "packets in");
  EXPECT_EQ(pluralPhrase("packet%s in", 7), "packets in");
}

ServiceStats forwarderWith(std::map<std::string, std::uint64_t> values) {
  ServiceStats s;
  s.service = "ipsec-forwarder";
  for (const auto& name : forwarderCounterNames()) s.counters.push_back({name, values.count(name) ? values[name] : 0});
  return s;
}

TEST(StatsView, FieldFedByFinerCountersPrintsTheSumAndEachIndented) {
  auto fwd = forwarderWith({{"esp_in_drop_truncated", 2}, {"esp_in_drop_bad_ip", 3}, {"esp_in_packets", 1}});
  std::string text = formatGrouped({fwd}, "esp");
  EXPECT_EQ(text.rfind("esp:\n", 0), 0u) << text;
  EXPECT_NE(text.find("\t5 packets shorter than header shows\n"
                      "\t\t2 packets shorter than header, IV, trailer and ICV (esp_in_drop_truncated)\n"
                      "\t\t3 packets with a malformed outer IP header (esp_in_drop_bad_ip)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\t1 packet in (esp_in_packets)\n"), std::string::npos) << text;
  EXPECT_NE(text.find("(esp_in_dummy)"), std::string::npos) << "a counter without a FreeBSD field is listed";
}

TEST(StatsView, ProtocolGroupShowsOnlyItsCountersAndItsSas) {
  auto fwd = forwarderWith({{"ah_in_drop_bad_icv", 4}});
  fwd.sas.push_back({"esp", 0x1000, "192.0.2.2", {{"in_packets", 9}}, ""});
  fwd.sas.push_back({"ah", 0x2000, "192.0.2.2", {{"in_drop_bad_icv", 4}}, ""});
  std::string text = formatGrouped({fwd, {"ipsec-keydb", {{"sas", 2}}, {}}}, "ah");
  EXPECT_EQ(text.rfind("ah:\n", 0), 0u) << text;
  EXPECT_EQ(text.find("esp:"), std::string::npos) << text;
  EXPECT_EQ(text.find("ipsec-keydb:"), std::string::npos) << text;
  EXPECT_NE(text.find("\t4 packets dropped; bad authentication detected (ah_in_drop_bad_icv)\n"), std::string::npos);
  EXPECT_NE(text.find("ah SA spi 0x00002000 dst 192.0.2.2:\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("spi 0x00001000"), std::string::npos) << text;
}

TEST(StatsView, AllShowsEveryGroupUnknownCountersAndOtherServices) {
  auto fwd = forwarderWith({});
  fwd.counters.push_back({"some_future_counter", 11});
  std::string text = formatGrouped({fwd, {"ipsec-keydb", {{"sas", 2}}, {}}}, "all");
  for (auto g : {"esp:\n", "ah:\n", "ipcomp:\n", "ipsec:\n", "natt:\n", "other:\n", "ipsec-keydb:\n"}) {
    EXPECT_NE(text.find(g), std::string::npos) << g << " missing in\n" << text;
  }
  EXPECT_NE(text.find("\t11 some_future_counter\n"), std::string::npos);
  // Every forwarder counter is named once in the grouped text.
  for (const auto& name : forwarderCounterNames()) {
    EXPECT_NE(text.find("(" + name + ")"), std::string::npos) << name;
  }
}

TEST(StatsView, RawFormIsTheFlatListOfEarlierVersions) {
  ServiceStats s{"ipsec-forwarder", {{"esp_in_packets", 3}}, {{"esp", 0x10, "192.0.2.1", {{"in_packets", 3}}, ""}}};
  EXPECT_EQ(formatRaw({s}), "ipsec-forwarder:\n\t3 esp_in_packets\n  SA esp spi 0x00000010 dst 192.0.2.1:\n\t3 in_packets\n");
}

}  // namespace
