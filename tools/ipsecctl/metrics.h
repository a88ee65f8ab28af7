// ipsecctl: the machine-readable forms of `ipsecctl stats`, --json and
// --prometheus. Both are written from one walk over the counters
// (forEachSample), and a Prometheus metric's name is made from the JSON name
// by one function (metricName), so the two forms cannot disagree on what a
// counter is called: a script may switch from one to the other by adding the
// prefix. Plain data in, text out (tests/unit/ipsecctl checks both).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "stats_view.h"

namespace ipsec::ipsecctl {

// One counter value: of a service (sa == nullptr) or of one of its SAs.
struct Sample {
  const ServiceStats& service;
  const SaStats* sa;
  const CounterValue& counter;
};

// Every counter, in the order the services sent them: each service's own,
// then its SAs'.
void forEachSample(const std::vector<ServiceStats>& services, const std::function<void(const Sample&)>& visit);

// Counters that say how many of something exist now (SAs, policies, clients,
// sessions) rather than how often something happened: Prometheus gauges.
// The processes' tables say which (LEVEL in services/<name>/counters.h).
bool isGauge(std::string_view counter) noexcept;

// A metric's HELP text: what the counter counts, from the table of the
// service that sent it (counter_catalog.h), then its --json name; a name no
// table has is still described by its name.
std::string helpText(const Sample& sample);

// "ipsec_" + the JSON name (+ "_total" for a counter); SA counters
// "ipsec_sa_" + the name. Characters outside [a-zA-Z0-9_] become '_'.
std::string metricName(const Sample& sample);

// {service: {counters: {name: value}, sas: [{satype, spi, src, dst, counters}]}}
std::string formatJson(const std::vector<ServiceStats>& services);

// The Prometheus text exposition format (version 0.0.4), for node_exporter's
// textfile collector: per metric one "# HELP" and one "# TYPE" line, then its
// samples; a service counter labelled service="ipsec-forwarder", an SA's
// labelled proto, spi (0x%08x), src and dst.
std::string formatPrometheus(const std::vector<ServiceStats>& services);

}  // namespace ipsec::ipsecctl
