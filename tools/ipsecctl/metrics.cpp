// ipsecctl: --json and --prometheus of `ipsecctl stats` (see metrics.h). Runs in
// the admin tool on counters the supervisor relayed; a label value is escaped
// as the text format demands, a name it does not expect is still written.
#include "metrics.h"

#include <cinttypes>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "counter_catalog.h"

namespace ipsec::ipsecctl {
namespace {

std::string sanitized(std::string_view name) {
  std::string out(name);
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) c = '_';
  }
  return out;
}

// Label values: backslash, double quote and newline escaped (text format 0.0.4).
std::string escaped(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// HELP text: backslash and newline escaped (text format 0.0.4); a counter's
// name comes from a service and is not trusted to be tidy.
std::string escapedHelp(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string spiText(std::uint32_t spi) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08" PRIx32, spi);
  return buf;
}

std::string labels(const Sample& s) {
  if (!s.sa) return "{service=\"" + escaped(s.service.service) + "\"}";
  return "{proto=\"" + escaped(s.sa->satype) + "\",spi=\"" + spiText(s.sa->spi) + "\",src=\"" +
         escaped(s.sa->src) + "\",dst=\"" + escaped(s.sa->dst) + "\"}";
}

}  // namespace

void forEachSample(const std::vector<ServiceStats>& services, const std::function<void(const Sample&)>& visit) {
  for (const auto& svc : services) {
    for (const auto& c : svc.counters) visit(Sample{svc, nullptr, c});
    for (const auto& sa : svc.sas) {
      for (const auto& c : sa.counters) visit(Sample{svc, &sa, c});
    }
  }
}

// By name alone, so that a name is one metric family whichever service
// sends it: a level if some process declares it one.
bool isGauge(std::string_view counter) noexcept {
  for (const auto& s : kServiceCounters) {
    for (const auto& table : {s.counters, s.saCounters}) {
      for (const auto& c : table) {
        if (c.name == counter && c.kind == stats::Kind::kLevel) return true;
      }
    }
  }
  return false;
}

std::string helpText(const Sample& s) {
  const bool gauge = isGauge(s.counter.name);
  if (const auto* c = findCounter(s.service.service, s.counter.name, s.sa != nullptr)) {
    return std::string(s.sa ? "per SA: " : "") + std::string(c->help) + " (" + s.counter.name + ")";
  }
  return std::string(s.sa ? "per-SA " : "") + (gauge ? "level " : "counter ") + s.counter.name +
         " (as ipsecctl stats --json names it)";
}

std::string metricName(const Sample& s) {
  std::string name = s.sa ? "ipsec_sa_" : "ipsec_";
  name += sanitized(s.counter.name);
  if (!isGauge(s.counter.name)) name += "_total";
  return name;
}

std::string formatJson(const std::vector<ServiceStats>& services) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& svc : services) out[svc.service];  // null when it sent nothing, as before
  std::map<const SaStats*, nlohmann::json> saObjects;
  forEachSample(services, [&](const Sample& s) {
    auto& svc = out[s.service.service];
    if (!s.sa) {
      svc["counters"][s.counter.name] = s.counter.value;
      return;
    }
    auto& sa = saObjects[s.sa];
    sa["counters"][s.counter.name] = s.counter.value;
  });
  // SAs in their order, also one without counters; src only when the
  // forwarder sent it.
  for (const auto& svc : services) {
    for (const auto& sa : svc.sas) {
      nlohmann::json j = saObjects.contains(&sa) ? saObjects[&sa] : nlohmann::json::object();
      j["satype"] = sa.satype;
      j["spi"] = sa.spi;
      j["dst"] = sa.dst;
      if (!sa.src.empty()) j["src"] = sa.src;
      out[svc.service]["sas"].push_back(j);
    }
  }
  return out.dump(2) + "\n";
}

std::string formatPrometheus(const std::vector<ServiceStats>& services) {
  // A metric's samples must follow its HELP and TYPE lines together, but the
  // same counter name comes from several SAs (and could from several
  // services): gather per metric first, in the order first seen.
  struct Family {
    std::string help;
    bool gauge = false;
    std::string samples;
  };
  std::vector<std::string> order;
  std::map<std::string, Family> families;
  forEachSample(services, [&](const Sample& s) {
    const std::string name = metricName(s);
    auto [it, fresh] = families.try_emplace(name);
    if (fresh) {
      order.push_back(name);
      it->second.gauge = isGauge(s.counter.name);
      it->second.help = helpText(s);
    }
    char value[32];
    std::snprintf(value, sizeof value, "%" PRIu64, s.counter.value);
    it->second.samples += name + labels(s) + " " + value + "\n";
  });
  std::string out;
  for (const auto& name : order) {
    const Family& f = families[name];
    out += "# HELP " + name + " " + escapedHelp(f.help) + "\n";
    out += "# TYPE " + name + (f.gauge ? " gauge\n" : " counter\n");
    out += f.samples;
  }
  return out;
}

}  // namespace ipsec::ipsecctl
