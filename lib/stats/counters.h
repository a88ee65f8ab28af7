// Counters, declared once per process (issue 12, item 6): every service's
// stats, the fill into proto::Stats and ipsecctl's table of names and help
// texts come from one X-macro list per process, so a counter cannot be
// reported under one name and described under another.
//
// A process writes its list as
//   #define IPSEC_KEYDB_COUNTERS(EVENT, LEVEL)  (each line ending in a backslash)
//     LEVEL(sas, "SAs in the SAD")
//     EVENT(seq_grants, "sequence number blocks granted")
// EVENT counts something that happened (it only grows: a Prometheus counter);
// LEVEL says how many of something exist now (a gauge), and is set when the
// stats are taken. The name is the counter's name on the wire, byte for byte
// (tests, scripts and docs read it); the help text says what it counts.
// IPSEC_STATS_STRUCT(Name, LIST) then declares a struct of one std::uint64_t
// per counter, forEach in list order, and Name::kInfo, the table ipsecctl
// reads. The struct is plain data: a process whose counters are written by
// several threads keeps its atomics where they are and copies them into the
// struct when asked for stats (services/crypto/broker.cpp).
//
// Header-only, no I/O; fillCounters is a template so that this header needs
// no schema (proto::Stats, proto::ServiceStats and proto::SaCounters all have
// a list of Common.Counter).
#pragma once

#include <cstdint>
#include <iterator>
#include <span>
#include <string_view>

namespace ipsec::stats {

enum class Kind : std::uint8_t {
  kEvent,  // only grows
  kLevel,  // how many exist now
};

struct CounterInfo {
  std::string_view name;
  std::string_view help;
  Kind kind;
};

// The table of one process (or of its per-SA counters).
using CounterTable = std::span<const CounterInfo>;

// Sets out's counters to c's, in list order, followed by `extra` rows the
// caller fills (counters whose names are not known in advance, such as
// ipsec-policy's pfkey_in_<message type>); returns the list.
template <class Out, class Counters>
auto fillCounters(Out out, const Counters& c, unsigned extra = 0) {
  auto list = out.initCounters(static_cast<unsigned>(std::size(Counters::kInfo)) + extra);
  unsigned i = 0;
  c.forEach([&](const char* name, std::uint64_t value) {
    list[i].setName(name);
    list[i++].setValue(value);
  });
  return list;
}

}  // namespace ipsec::stats

#define IPSEC_STATS_FIELD_(name, help) std::uint64_t name = 0;
#define IPSEC_STATS_VISIT_(name, help) f(#name, name);
#define IPSEC_STATS_EVENT_INFO_(name, help) ::ipsec::stats::CounterInfo{#name, help, ::ipsec::stats::Kind::kEvent},
#define IPSEC_STATS_LEVEL_INFO_(name, help) ::ipsec::stats::CounterInfo{#name, help, ::ipsec::stats::Kind::kLevel},
#define IPSEC_STATS_FIND_(name, help) \
  if (wanted == #name) return &name;

// struct Name: one std::uint64_t per counter of LIST (zero at first),
// forEach(f) calling f(const char* name, std::uint64_t value) in list
// order, kInfo, the constexpr table of names, help texts and kinds, and
// find(name), the counter of that name or nullptr (for counters kept per
// reason elsewhere and named by the reason's own name table).
#define IPSEC_STATS_STRUCT(Name, LIST)                                                                  \
  struct Name {                                                                                         \
    LIST(IPSEC_STATS_FIELD_, IPSEC_STATS_FIELD_)                                                        \
    static constexpr ::ipsec::stats::CounterInfo kInfo[] = {                                            \
        LIST(IPSEC_STATS_EVENT_INFO_, IPSEC_STATS_LEVEL_INFO_)};                                        \
    template <class F>                                                                                  \
    void forEach(F&& f) const {                                                                         \
      LIST(IPSEC_STATS_VISIT_, IPSEC_STATS_VISIT_)                                                      \
    }                                                                                                   \
    std::uint64_t* find(std::string_view wanted) {                                                      \
      LIST(IPSEC_STATS_FIND_, IPSEC_STATS_FIND_)                                                        \
      return nullptr;                                                                                   \
    }                                                                                                   \
  }
