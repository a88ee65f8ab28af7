// lib/stats: the counters each process declares (services/<name>/counters.h)
// keep their names byte for byte and in order, against lists taken from
// `ipsecctl stats --raw` of a running tunnel built before the tables existed
// (names/<service>.txt; tests, scripts and docs read counters by name);
// fillCounters writes a struct in list order; stats::drop counts.
#include <gtest/gtest.h>

#include <atomic>
#include <capnp/message.h>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "counter_catalog.h"
#include "proto/supervisor.capnp.h"
#include "stats/drop.h"

namespace {

using namespace ipsec;

std::vector<std::string> pinnedNames(const std::string& file) {
  std::ifstream in(std::string(IPSEC_STATS_NAMES_DIR) + "/" + file);
  EXPECT_TRUE(in.good()) << "no pinned list " << file;
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

std::vector<std::string> namesOf(stats::CounterTable table) {
  std::vector<std::string> names;
  for (const auto& c : table) names.emplace_back(c.name);
  return names;
}

TEST(CounterNames, EveryProcessKeepsItsNamesInOrder) {
  for (const auto& s : ipsecctl::kServiceCounters) {
    EXPECT_EQ(namesOf(s.counters), pinnedNames(std::string(s.service) + ".txt"))
        << s.service << ": a counter renamed, moved, added or removed; if meant, update tests/unit/stats/names";
  }
}

TEST(CounterNames, TheForwardersSaCountersKeepTheirNames) {
  EXPECT_EQ(namesOf(forwarder::SaCounters::kInfo), pinnedNames("ipsec-forwarder.sa.txt"));
}

// The levels are what ipsecctl made Prometheus gauges before the tables (its
// own list, kGauges): a counter turned gauge would change its metric name.
// Since then: the broker's sessions by direction, levels declared as events
// by mistake (their metric names lost _total then).
TEST(CounterNames, TheLevelsAreTheGaugesOfBefore) {
  std::set<std::string> levels;
  for (const auto& s : ipsecctl::kServiceCounters) {
    for (const auto& c : s.counters) {
      if (c.kind == stats::Kind::kLevel) levels.emplace(c.name);
    }
    for (const auto& c : s.saCounters) EXPECT_EQ(c.kind, stats::Kind::kEvent) << c.name;
  }
  EXPECT_EQ(levels, (std::set<std::string>{"sas", "sas_larval", "policies", "spd_policies", "pfkey_clients",
                                           "pfkey_acquires_pending", "sessions", "sad_requests_pending",
                                           "sas_not_listed", "sessions_outbound", "sessions_inbound",
                                           "sessions_unknown_direction"}));
}

TEST(CounterNames, EachIsDescribedAndNamedOncePerProcess) {
  for (const auto& s : ipsecctl::kServiceCounters) {
    std::set<std::string_view> seen;
    for (const auto& table : {s.counters, s.saCounters}) {
      for (const auto& c : table) {
        EXPECT_FALSE(c.help.empty()) << s.service << " " << c.name;
        EXPECT_FALSE(c.help.starts_with("...")) << s.service << " " << c.name << ": the help must stand alone";
      }
    }
    for (const auto& c : s.counters) EXPECT_TRUE(seen.insert(c.name).second) << s.service << " " << c.name;
  }
}

TEST(FillCounters, WritesEveryCounterInListOrderThenRoomForExtras) {
  keydb::Counters c;
  c.sas = 3;
  c.seq_grants = 7;
  c.sas_marked_outbound = 18446744073709551615ULL;
  capnp::MallocMessageBuilder message;
  auto list = stats::fillCounters(message.initRoot<proto::Stats>(), c, 2);
  const auto extra = std::size(keydb::Counters::kInfo);  // the first row after the list
  list[extra].setName("extra");
  auto out = message.getRoot<proto::Stats>().asReader().getCounters();
  ASSERT_EQ(out.size(), std::size(keydb::Counters::kInfo) + 2);
  for (unsigned i = 0; i < std::size(keydb::Counters::kInfo); ++i) {
    EXPECT_EQ(std::string_view(out[i].getName().cStr()), keydb::Counters::kInfo[i].name);
  }
  EXPECT_EQ(out[0].getValue(), 3u);                        // sas
  EXPECT_EQ(out[3].getValue(), 7u);                        // seq_grants
  EXPECT_EQ(out[11].getValue(), 18446744073709551615ULL);  // sas_marked_outbound
  EXPECT_EQ(out[1].getValue(), 0u);                        // sas_larval: zero at first
  EXPECT_EQ(std::string_view(out[extra].getName().cStr()), "extra");
}

TEST(Drop, CountsOncePerCallPlainOrAtomic) {
  std::uint64_t plain = 0;
  std::atomic<std::uint64_t> shared{0};
  stats::drop(plain, "dropped {} of {}", 1, "test");
  stats::drop(plain, "dropped again");
  stats::drop(shared, "dropped by a worker {}", 3);
  EXPECT_EQ(plain, 2u);
  EXPECT_EQ(shared.load(), 1u);
}

}  // namespace
