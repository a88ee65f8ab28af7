// ipsecctl stats --json and --prometheus: one walk, one naming rule. Every
// counter of the JSON form is a Prometheus sample of the same value under
// metricName, each metric family has its HELP and TYPE once with its samples
// together, SA labels are complete and escaped.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "metrics.h"

namespace {

using namespace ipsec::ipsecctl;

std::vector<ServiceStats> sampleStats() {
  std::vector<ServiceStats> s(3);
  s[0].service = "ipsec-forwarder";
  s[0].counters = {{"esp_out_packets", 12}, {"esp_in_drop_replay", 3}, {"sas", 2}, {"policies", 4}};
  SaStats out{"esp", 0x1001, "192.0.2.2", {{"esp_out_packets", 7}, {"esp_in_drop_replay", 0}}, "192.0.2.1"};
  SaStats in{"esp", 0x1002, "2001:db8:1::1", {{"esp_out_packets", 5}, {"esp_in_drop_replay", 3}}, "2001:db8:1::2"};
  s[0].sas = {out, in};
  s[1].service = "ipsec-keydb";
  s[1].counters = {{"sas", 2}, {"seq_grants", 9}};
  s[2].service = "ipsec-crypto";
  s[2].counters = {{"sealed", 18446744073709551615ULL}};
  return s;
}

// The sample lines of a Prometheus text: "name{labels} value" → value.
std::map<std::string, std::string> samplesOf(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto sp = line.rfind(' ');
    out[line.substr(0, sp)] = line.substr(sp + 1);
  }
  return out;
}

TEST(Metrics, EveryJsonCounterIsAPrometheusSampleOfTheSameValue) {
  const auto stats = sampleStats();
  const auto json = nlohmann::json::parse(formatJson(stats));
  const auto samples = samplesOf(formatPrometheus(stats));
  std::size_t seen = 0;
  for (const auto& [service, body] : json.items()) {
    for (const auto& [name, value] : body["counters"].items()) {
      const std::string type = name == "sas" || name == "policies" ? "" : "_total";
      const std::string key = "ipsec_" + name + type + "{service=\"" + service + "\"}";
      ASSERT_TRUE(samples.contains(key)) << key;
      EXPECT_EQ(samples.at(key), std::to_string(value.get<std::uint64_t>())) << key;
      ++seen;
    }
    if (!body.contains("sas")) continue;
    for (const auto& sa : body["sas"]) {
      char spi[16];
      std::snprintf(spi, sizeof spi, "0x%08x", sa["spi"].get<unsigned>());
      for (const auto& [name, value] : sa["counters"].items()) {
        const std::string key = "ipsec_sa_" + name + "_total{proto=\"" + sa["satype"].get<std::string>() +
                                "\",spi=\"" + spi + "\",src=\"" + sa["src"].get<std::string>() + "\",dst=\"" +
                                sa["dst"].get<std::string>() + "\"}";
        ASSERT_TRUE(samples.contains(key)) << key;
        EXPECT_EQ(samples.at(key), std::to_string(value.get<std::uint64_t>())) << key;
        ++seen;
      }
    }
  }
  EXPECT_EQ(seen, 11u);
  EXPECT_EQ(samples.size(), seen) << "a Prometheus sample without a JSON counter";
}

TEST(Metrics, EachFamilyHasOneHelpAndTypeThenAllItsSamples) {
  const std::string text = formatPrometheus(sampleStats());
  const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$)");
  const std::regex type(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$)");
  const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([a-z]+="[^"\\]*",?)+\} [0-9]+$)");
  std::set<std::string> done;
  std::string current;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, help)) {
      EXPECT_TRUE(done.insert(m[1]).second) << "family twice: " << line;
      current = m[1];
      ASSERT_TRUE(std::getline(in, line));
      ASSERT_TRUE(std::regex_match(line, m, type)) << line;
      EXPECT_EQ(m[1], current);
      EXPECT_EQ(m[2] == "gauge", !current.ends_with("_total")) << line;
    } else {
      ASSERT_TRUE(std::regex_match(line, m, sample)) << line;
      EXPECT_EQ(m[1], current) << "sample away from its family: " << line;
    }
  }
  EXPECT_TRUE(done.contains("ipsec_sas"));
  EXPECT_TRUE(done.contains("ipsec_sa_esp_out_packets_total"));
}

TEST(Metrics, LevelsAreGaugesAndEventsCounters) {
  EXPECT_TRUE(isGauge("sas"));
  EXPECT_TRUE(isGauge("pfkey_clients"));
  EXPECT_FALSE(isGauge("pfkey_clients_accepted"));
  EXPECT_FALSE(isGauge("esp_in_drop_replay"));
}

// The broker's sessions by direction say how many there are now: gauges,
// without _total, like its `sessions`.
TEST(Metrics, TheBrokersSessionsByDirectionAreGauges) {
  std::vector<ServiceStats> s(1);
  s[0].service = "ipsec-crypto";
  s[0].counters = {{"sessions_outbound", 2}, {"sessions_inbound", 3}, {"sessions_unknown_direction", 0}};
  const std::string text = formatPrometheus(s);
  for (const auto& [name, value] : s[0].counters) {
    EXPECT_NE(text.find("# TYPE ipsec_" + name + " gauge\n"), std::string::npos) << text;
    EXPECT_NE(text.find("ipsec_" + name + "{service=\"ipsec-crypto\"} " + std::to_string(value) + "\n"),
              std::string::npos)
        << text;
  }
}

TEST(Metrics, LabelValuesAndNamesAreEscaped) {
  std::vector<ServiceStats> s(1);
  s[0].service = "odd \"svc\"\\\n";
  s[0].counters = {{"a-b.c", 1}};
  const std::string text = formatPrometheus(s);
  EXPECT_NE(text.find("ipsec_a_b_c_total{service=\"odd \\\"svc\\\"\\\\\\n\"} 1\n"), std::string::npos) << text;
}

// HELP says what the counter counts, from the table of the process that sent
// it (services/<name>/counters.h); a name no table has is still described.
TEST(Metrics, HelpComesFromTheSendingProcesssTable) {
  const std::string text = formatPrometheus(sampleStats());
  EXPECT_NE(text.find("# HELP ipsec_esp_in_drop_replay_total duplicate or left of the replay window "
                      "(esp_in_drop_replay)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# HELP ipsec_seq_grants_total blocks of sequence numbers granted to the forwarder "
                      "(seq_grants)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# HELP ipsec_sa_esp_in_drop_replay_total per-SA counter esp_in_drop_replay"), std::string::npos)
      << "an SA counter the forwarder's SA table lacks keeps the generic text: " << text;
  std::vector<ServiceStats> s(2);
  s[0].service = "ipsec-forwarder";
  s[0].sas = {SaStats{"esp", 1, "192.0.2.2", {{"in_drop_replay", 1}}, "192.0.2.1"}};
  s[1].service = "ipsec-policy";
  s[1].counters = {{"pfkey_in_add", 2}, {"odd\nname\\", 1}};
  const std::string more = formatPrometheus(s);
  EXPECT_NE(more.find("# HELP ipsec_sa_in_drop_replay_total per SA: packets dropped: duplicate or left of the replay "
                      "window (in_drop_replay)\n"),
            std::string::npos)
      << more;
  EXPECT_NE(more.find("# HELP ipsec_pfkey_in_add_total counter pfkey_in_add (as ipsecctl stats --json names it)\n"),
            std::string::npos)
      << more;
  EXPECT_NE(more.find("# HELP ipsec_odd_name__total counter odd\\nname\\\\ (as"), std::string::npos)
      << "a newline or backslash in a name is escaped in HELP: " << more;
}

TEST(Metrics, JsonKeepsItsShapeAndOmitsAnUnknownSource) {
  auto stats = sampleStats();
  stats[0].sas[1].src.clear();
  const auto json = nlohmann::json::parse(formatJson(stats));
  EXPECT_EQ(json["ipsec-forwarder"]["counters"]["esp_out_packets"], 12);
  EXPECT_EQ(json["ipsec-forwarder"]["sas"][0]["satype"], "esp");
  EXPECT_EQ(json["ipsec-forwarder"]["sas"][0]["spi"], 0x1001);
  EXPECT_EQ(json["ipsec-forwarder"]["sas"][0]["src"], "192.0.2.1");
  EXPECT_FALSE(json["ipsec-forwarder"]["sas"][1].contains("src"));
  EXPECT_FALSE(json["ipsec-keydb"].contains("sas"));
  EXPECT_EQ(json["ipsec-crypto"]["counters"]["sealed"], 18446744073709551615ULL);
}

}  // namespace
