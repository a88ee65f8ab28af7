// ipsecctl — talks to the supervisor (ipsecd) on <runtime_dir>/control, a root-
// only SOCK_SEQPACKET socket: one Cap'n Proto request, one reply. It never
// touches PF_KEY (that is setkey's job) and holds no key.
#include <arpa/inet.h>
#include <getopt.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <capnp/message.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "control/unique_fd.h"
#include "control/wire.h"
#include "proto/admin.capnp.h"
#include "metrics.h"
#include "stats_view.h"

namespace {

using ipsec::control::UniqueFd;

void usage(FILE* out) {
  std::fputs(
      "Usage: ipsecctl [--runtime-dir DIR | --socket PATH] COMMAND [--json]\n"
      "       ipsecctl stats [-p esp|ah|ipcomp|ipsec|natt|all] [--raw | --json | --prometheus]\n"
      "\n"
      "Commands:\n"
      "  stats                counters of every service, as FreeBSD's netstat -s -p esp|ah|\n"
      "                       ipcomp: each group titled (\"esp:\"), one line per FreeBSD\n"
      "                       field (espstat, ahstat, ipcompstat, ipsecstat) with its\n"
      "                       netstat phrase. Our counters are finer (one per drop\n"
      "                       reason): a field fed by several of them prints their sum\n"
      "                       with each counter indented under it, named in parentheses\n"
      "                       as --json names it; counters FreeBSD has no field for\n"
      "                       follow the fields. Every counter is printed, zero or not.\n"
      "                       Then the counters of each SA, then the other services.\n"
      "    -p, --protocol GROUP\n"
      "                       only this group: esp, ah, ipcomp (with the SAs of that\n"
      "                       protocol), ipsec (SPD, TUN and plumbing drops, and the\n"
      "                       other services), natt (ESP-in-UDP, keepalives, NAT\n"
      "                       mappings; no FreeBSD counterpart) or all (the default)\n"
      "    --raw              the flat list of earlier versions: per service a line\n"
      "                       \"<value> <name>\" per counter, then per SA; for scripts\n"
      "    --json             the same counters as a JSON object\n"
      "                       {service: {counters: {name: value}, sas: [...]}}\n"
      "    --prometheus       the same counters in Prometheus' text format, for\n"
      "                       node_exporter's textfile collector: ipsec_NAME_total\n"
      "                       {service=...} (ipsec_NAME for a level such as sas),\n"
      "                       per SA ipsec_sa_NAME_total{proto,spi,src,dst}; NAME is\n"
      "                       the name --json gives\n"
      "  audit                the sandbox of each process: uid/gid, capabilities,\n"
      "                       no_new_privs, seccomp mode, root directory, namespaces,\n"
      "                       open descriptors, dumpable flag\n"
      "  sysctl [NAME[=VALUE]]\n"
      "                       show all sysctls, show one, or set one. Names are\n"
      "                       FAST_IPSEC's: net.inet.esp.enable, net.inet.ah.enable,\n"
      "                       net.inet.ipcomp.enable, net.inet.ipsec.debug,\n"
      "                       net.inet.ipsec.allow_legacy (3DES and HMAC-MD5 SAs\n"
      "                       are refused unless it is 1), net.inet.ipsec.replay_window;\n"
      "                       PF_KEY: net.key.larval_lifetime (s a larval SA or a\n"
      "                       pending ACQUIRE lives), net.key.blockacq_count and\n"
      "                       net.key.blockacq_lifetime (ACQUIRE repeats suppressed,\n"
      "                       and for how long), net.key.spi_minval/spi_maxval\n"
      "                       (GETSPI range clamp), net.key.debug (trace messages)\n"
      "\n"
      "Options:\n"
      "  -r, --runtime-dir DIR  the instance's runtime directory (default: $IPSEC_RUNTIME_DIR\n"
      "                         or /run/ipsecd); the socket is DIR/control\n"
      "  -s, --socket PATH      the control socket itself\n"
      "  -j, --json             machine-readable output (stats, audit, sysctl)\n"
      "  -h, --help             this text\n"
      "\n"
      "Exit status: 0 on success, 1 if the service answered with an error or could\n"
      "not be reached, 2 for bad usage.\n",
      out);
}

UniqueFd connectTo(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (!fd || path.size() >= sizeof sun.sun_path) return UniqueFd();
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) < 0) return UniqueFd();
  return fd;
}

std::string addressText(capnp::Data::Reader d) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (d.size() == 4) inet_ntop(AF_INET, d.begin(), buf, sizeof buf);
  if (d.size() == 16) inet_ntop(AF_INET6, d.begin(), buf, sizeof buf);
  return buf;
}

const char* satypeName(unsigned t) {
  switch (t) {
    case 2: return "ah";
    case 3: return "esp";
    case 9: return "ipcomp";
  }
  return "?";
}

int printStats(ipsec::proto::AdminReply::Reader r, const std::string& format, const std::string& group) {
  std::vector<ipsec::ipsecctl::ServiceStats> services;
  for (auto svc : r.getStats()) {
    auto& s = services.emplace_back();
    s.service = svc.getService();
    for (auto c : svc.getCounters()) s.counters.push_back({c.getName(), c.getValue()});
    for (auto sa : svc.getSas()) {
      auto& e = s.sas.emplace_back();
      e.satype = satypeName(sa.getSatype());
      e.spi = sa.getSpi();
      if (sa.hasSrc()) e.src = addressText(sa.getSrc());
      e.dst = addressText(sa.getDst());
      for (auto c : sa.getCounters()) e.counters.push_back({c.getName(), c.getValue()});
    }
  }
  using namespace ipsec::ipsecctl;
  const std::string text = format == "json"         ? formatJson(services)
                           : format == "prometheus" ? formatPrometheus(services)
                           : format == "raw"        ? formatRaw(services)
                                                    : formatGrouped(services, group);
  std::fputs(text.c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  static const option kOptions[] = {{"runtime-dir", required_argument, nullptr, 'r'},
                                    {"socket", required_argument, nullptr, 's'},
                                    {"json", no_argument, nullptr, 'j'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  const char* env = std::getenv("IPSEC_RUNTIME_DIR");
  std::string runtimeDir = env ? env : "/run/ipsecd";
  std::string socketPath;
  bool json = false;
  for (int c; (c = getopt_long(argc, argv, "+r:s:jh", kOptions, nullptr)) != -1;) {
    switch (c) {
      case 'r': runtimeDir = optarg; break;
      case 's': socketPath = optarg; break;
      case 'j': json = true; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  std::vector<std::string> words(argv + optind, argv + argc);
  std::erase_if(words, [&](const std::string& w) { return w == "--json" || w == "-j" ? (json = true) : false; });
  if (words.empty()) {
    usage(stderr);
    return 2;
  }
  if (socketPath.empty()) socketPath = runtimeDir + "/control";

  capnp::MallocMessageBuilder req;
  auto root = req.initRoot<ipsec::proto::AdminRequest>();
  const std::string cmd = words[0];
  std::string format = json ? "json" : "grouped";
  std::string group = "all";
  if (cmd == "stats") {
    // stats [-p GROUP] [--raw | --prometheus]: options after the command word.
    for (std::size_t i = 1; i < words.size(); ++i) {
      const std::string& w = words[i];
      if (w == "--raw" || w == "--prometheus") {
        if (format != "grouped") {
          std::fprintf(stderr, "ipsecctl: --raw, --json and --prometheus exclude one another\n");
          return 2;
        }
        format = w.substr(2);
      } else if ((w == "-p" || w == "--protocol") && i + 1 < words.size()) {
        group = words[++i];
      } else if (w.starts_with("--protocol=")) {
        group = w.substr(11);
      } else {
        usage(stderr);
        return 2;
      }
    }
    if (!ipsec::ipsecctl::isStatGroup(group)) {
      std::fprintf(stderr, "ipsecctl: unknown group %s (esp, ah, ipcomp, ipsec, natt or all)\n", group.c_str());
      return 2;
    }
    words.resize(1);
  }
  if (cmd == "stats" && words.size() == 1) {
    root.setStats();
  } else if (cmd == "audit" && words.size() == 1) {
    root.setAudit();
  } else if (cmd == "sysctl" && words.size() <= 2) {
    std::string arg = words.size() == 2 ? words[1] : "";
    if (auto eq = arg.find('='); eq != std::string::npos) {
      char* end = nullptr;
      long long v = std::strtoll(arg.c_str() + eq + 1, &end, 0);
      if (eq + 1 == arg.size() || *end != '\0') {
        std::fprintf(stderr, "ipsecctl: bad value in %s\n", arg.c_str());
        return 2;
      }
      auto s = root.initSysctlSet();
      s.setName(arg.substr(0, eq));
      s.setValue(v);
    } else {
      root.setSysctlGet(arg);
    }
  } else {
    usage(stderr);
    return 2;
  }

  UniqueFd fd = connectTo(socketPath);
  if (!fd) {
    std::fprintf(stderr, "ipsecctl: cannot reach ipsecd at %s: %s\n", socketPath.c_str(), std::strerror(errno));
    return 1;
  }
  if (ipsec::control::sendMessage(fd.get(), req) != 0) {
    std::fprintf(stderr, "ipsecctl: send failed: %s\n", std::strerror(errno));
    return 1;
  }
  auto got = ipsec::control::receiveMessage(fd.get(), 10000);
  if (!got.reader) {
    std::fprintf(stderr, "ipsecctl: no answer from ipsecd: %s\n", got.error.c_str());
    return 1;
  }
  auto rep = got.reader->getRoot<ipsec::proto::AdminReply>();
  switch (rep.which()) {
    case ipsec::proto::AdminReply::STATS: return printStats(rep, format, group);
    case ipsec::proto::AdminReply::AUDIT:
      std::fputs(json ? rep.getAudit().getJson().cStr() : rep.getAudit().getTable().cStr(), stdout);
      std::fputs("\n", stdout);
      return 0;
    case ipsec::proto::AdminReply::SYSCTL: {
      nlohmann::json j = nlohmann::json::object();
      for (auto s : rep.getSysctl()) {
        if (json) {
          j[std::string(s.getName())] = s.getValue();
        } else {
          std::printf("%s: %lld\n", s.getName().cStr(), static_cast<long long>(s.getValue()));
        }
      }
      if (json) std::printf("%s\n", j.dump(2).c_str());
      return 0;
    }
    case ipsec::proto::AdminReply::ERROR:
      std::fprintf(stderr, "ipsecctl: %s\n", rep.getError().cStr());
      return 1;
  }
  return 1;
}
