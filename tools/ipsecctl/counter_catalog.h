// ipsecctl: every process's table of counters (names, help texts, kinds), as
// each declares them in its services/<name>/counters.h (lib/stats). ipsecctl
// reads them for --prometheus (HELP and TYPE lines); tests/unit/stats pins
// the names in them. Declarations only: nothing of the services' code runs
// in the admin tool.
#pragma once

#include <string_view>

#include "services/crypto/counters.h"
#include "services/forwarder/counters.h"
#include "services/ipsecd/counters.h"
#include "services/keydb/counters.h"
#include "services/policy/counters.h"
#include "stats/counters.h"

namespace ipsec::ipsecctl {

struct ServiceCounters {
  std::string_view service;  // the process name, as the supervisor labels its stats
  stats::CounterTable counters;
  stats::CounterTable saCounters;  // per SA; empty for a process without SAs
};

inline constexpr ServiceCounters kServiceCounters[] = {
    {"ipsec-keydb", keydb::Counters::kInfo, {}},
    {"ipsec-policy", policy::Counters::kInfo, {}},
    {"ipsec-forwarder", forwarder::Counters::kInfo, forwarder::SaCounters::kInfo},
    {"ipsec-crypto", crypto::Counters::kInfo, {}},
    {"ipsecd", supervisor::OutputCounters::kInfo, {}},
};

// The declaration of a service's counter (of its SAs' when perSa), or nullptr
// for a name no table has (ipsec-policy's pfkey_in_<type>, or a newer service).
constexpr const stats::CounterInfo* findCounter(std::string_view service, std::string_view name, bool perSa) {
  for (const auto& s : kServiceCounters) {
    if (s.service != service) continue;
    for (const auto& c : perSa ? s.saCounters : s.counters) {
      if (c.name == name) return &c;
    }
  }
  return nullptr;
}

}  // namespace ipsec::ipsecctl
