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

namespace {

using ipsec::control::UniqueFd;

void usage(FILE* out) {
  std::fputs(
      "Usage: ipsecctl [--runtime-dir DIR | --socket PATH] COMMAND [--json]\n"
      "\n"
      "Commands:\n"
      "  stats                counters of every service, in the spirit of netstat -s -p esp:\n"
      "                       one line per counter (one counter per drop reason), then\n"
      "                       per-SA counters under each SA\n"
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

int printStats(ipsec::proto::AdminReply::Reader r, bool json) {
  nlohmann::json out = nlohmann::json::object();
  for (auto svc : r.getStats()) {
    std::string name = svc.getService();
    if (json) {
      auto& j = out[name];
      for (auto c : svc.getCounters()) j["counters"][std::string(c.getName())] = c.getValue();
      for (auto sa : svc.getSas()) {
        nlohmann::json s;
        s["satype"] = satypeName(sa.getSatype());
        s["spi"] = sa.getSpi();
        s["dst"] = addressText(sa.getDst());
        for (auto c : sa.getCounters()) s["counters"][std::string(c.getName())] = c.getValue();
        j["sas"].push_back(s);
      }
      continue;
    }
    std::printf("%s:\n", name.c_str());
    for (auto c : svc.getCounters()) {
      std::printf("\t%llu %s\n", static_cast<unsigned long long>(c.getValue()), c.getName().cStr());
    }
    for (auto sa : svc.getSas()) {
      std::printf("  SA %s spi 0x%08x dst %s:\n", satypeName(sa.getSatype()), sa.getSpi(),
                  addressText(sa.getDst()).c_str());
      for (auto c : sa.getCounters()) {
        std::printf("\t%llu %s\n", static_cast<unsigned long long>(c.getValue()), c.getName().cStr());
      }
    }
  }
  if (json) std::printf("%s\n", out.dump(2).c_str());
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
  const std::string& cmd = words[0];
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
    case ipsec::proto::AdminReply::STATS: return printStats(rep, json);
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
