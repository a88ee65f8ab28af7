// ipsecctl: the grouped, netstat-like text of `ipsecctl stats` (stats_map.h
// says which counter goes where). Plain data in, text out, so that the unit
// test can check the layout without a running ipsecd.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ipsec::ipsecctl {

struct CounterValue {
  std::string name;
  std::uint64_t value = 0;
};

struct SaStats {
  std::string satype;  // "esp", "ah", "ipcomp" or "?"
  std::uint32_t spi = 0;
  std::string dst;
  std::vector<CounterValue> counters;
  std::string src;  // empty when the forwarder did not send it
};

struct ServiceStats {
  std::string service;  // "ipsec-forwarder", "ipsec-crypto", ...
  std::vector<CounterValue> counters;
  std::vector<SaStats> sas;
};

// The values of -p: a group of kStatGroups, or "all".
bool isStatGroup(std::string_view group) noexcept;

// "packet%s in" with 1 → "packet in", otherwise "packets in".
std::string pluralPhrase(std::string_view phrase, std::uint64_t value);

// The grouped view. For the forwarder: each selected group titled "esp:" as
// netstat does, one line per FreeBSD field (the sum of our counters that feed
// it, those indented under it when there are several), then our counters that
// have no FreeBSD field; counters the table does not know under "other:".
// The SAs of the selected protocols follow, then (for "all" and "ipsec") the
// other services' counters, flat.
std::string formatGrouped(const std::vector<ServiceStats>& services, std::string_view group);

// Today's flat form (--raw): each service, "\t<value> <name>" per counter,
// then each SA's counters.
std::string formatRaw(const std::vector<ServiceStats>& services);

}  // namespace ipsec::ipsecctl
