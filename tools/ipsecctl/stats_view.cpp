// ipsecctl: formatting of `ipsecctl stats` (see stats_view.h). Runs in the
// admin tool on counters the supervisor relayed; names it does not know are
// printed, never dropped.
#include "stats_view.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <set>

#include "stats_map.h"

namespace ipsec::ipsecctl {
namespace {

// The supervisor names each service by its process name.
const char* kForwarder = "ipsec-forwarder";

void line(std::string& out, int indent, std::uint64_t v, const std::string& phrase, std::string_view name = {}) {
  char num[32];
  std::snprintf(num, sizeof num, "%" PRIu64, v);
  out.append(static_cast<std::size_t>(indent), '\t');
  out += num;
  out += ' ';
  out += phrase;
  if (!name.empty()) {
    out += " (";
    out += name;
    out += ')';
  }
  out += '\n';
}

std::uint64_t valueOf(const std::vector<CounterValue>& cs, std::string_view name, bool* found = nullptr) {
  for (const auto& c : cs) {
    if (c.name == name) {
      if (found) *found = true;
      return c.value;
    }
  }
  if (found) *found = false;
  return 0;
}

void formatGroup(std::string& out, std::string_view group, const std::vector<CounterValue>& cs) {
  out += group;
  out += ":\n";
  for (const auto& f : kStatFields) {
    if (f.group != group) continue;
    std::vector<const StatCounter*> parts;
    std::uint64_t sum = 0;
    for (const auto& c : kStatCounters) {
      bool found = false;
      const std::uint64_t v = valueOf(cs, c.counter, &found);
      if (c.field != f.field || !found) continue;  // a counter this forwarder does not have
      parts.push_back(&c);
      sum += v;
    }
    if (parts.empty()) continue;
    if (parts.size() == 1) {
      line(out, 1, sum, pluralPhrase(f.phrase, sum), parts[0]->counter);
      continue;
    }
    line(out, 1, sum, pluralPhrase(f.phrase, sum));
    for (const auto* c : parts) {
      const std::uint64_t v = valueOf(cs, c->counter);
      line(out, 2, v, pluralPhrase(c->phrase, v), c->counter);
    }
  }
  for (const auto& c : kStatCounters) {
    if (c.group != group || !c.field.empty()) continue;
    bool found = false;
    const std::uint64_t v = valueOf(cs, c.counter, &found);
    if (found) line(out, 1, v, pluralPhrase(c.phrase, v), c.counter);
  }
}

void formatSa(std::string& out, const SaStats& sa) {
  char head[128];
  std::snprintf(head, sizeof head, "%s SA spi 0x%08x dst %s:\n", sa.satype.c_str(), sa.spi, sa.dst.c_str());
  out += head;
  for (const auto& c : sa.counters) {
    std::string_view phrase;
    for (const auto& [name, p] : kSaCounterPhrases) {
      if (name == c.name) phrase = p;
    }
    line(out, 1, c.value, phrase.empty() ? c.name : pluralPhrase(phrase, c.value), c.name);
  }
}

}  // namespace

bool isStatGroup(std::string_view group) noexcept {
  return group == "all" || std::find(std::begin(kStatGroups), std::end(kStatGroups), group) != std::end(kStatGroups);
}

std::string pluralPhrase(std::string_view phrase, std::uint64_t value) {
  // Built by appending: GCC 12 at -O2 warns (-Wrestrict) on replace() here.
  const auto at = phrase.find("%s");
  if (at == std::string_view::npos) return std::string(phrase);
  std::string s(phrase.substr(0, at));
  if (value != 1) s += 's';
  s += phrase.substr(at + 2);
  return s;
}

std::string formatGrouped(const std::vector<ServiceStats>& services, std::string_view group) {
  std::string out;
  const bool all = group == "all";
  for (const auto& svc : services) {
    if (svc.service != kForwarder) continue;
    for (auto g : kStatGroups) {
      if (all || g == group) formatGroup(out, g, svc.counters);
    }
    std::set<std::string_view> known;
    for (const auto& c : kStatCounters) known.insert(c.counter);
    std::vector<const CounterValue*> unknown;
    for (const auto& c : svc.counters) {
      if (!known.count(c.name)) unknown.push_back(&c);
    }
    if (all && !unknown.empty()) {
      out += "other:\n";
      for (const auto* c : unknown) line(out, 1, c->value, c->name);
    }
    for (const auto& sa : svc.sas) {
      if (all || sa.satype == group) formatSa(out, sa);
    }
  }
  if (all || group == "ipsec") {
    for (const auto& svc : services) {
      if (svc.service == kForwarder) continue;
      out += svc.service + ":\n";
      for (const auto& c : svc.counters) line(out, 1, c.value, c.name);
    }
  }
  return out;
}

std::string formatRaw(const std::vector<ServiceStats>& services) {
  std::string out;
  char buf[160];
  for (const auto& svc : services) {
    out += svc.service + ":\n";
    for (const auto& c : svc.counters) {
      std::snprintf(buf, sizeof buf, "\t%" PRIu64 " ", c.value);
      out += buf + c.name + "\n";
    }
    for (const auto& sa : svc.sas) {
      std::snprintf(buf, sizeof buf, "  SA %s spi 0x%08x dst %s:\n", sa.satype.c_str(), sa.spi, sa.dst.c_str());
      out += buf;
      for (const auto& c : sa.counters) {
        std::snprintf(buf, sizeof buf, "\t%" PRIu64 " ", c.value);
        out += buf + c.name + "\n";
      }
    }
  }
  return out;
}

}  // namespace ipsec::ipsecctl
