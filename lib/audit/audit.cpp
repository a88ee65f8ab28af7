// Reading /proc/PID into a ProcessAudit, and showing it (table, JSON).
// Run by the supervisor (root), so every child's /proc is readable; a field
// that still cannot be read is recorded in `errors`, never guessed.
#include "audit/audit.h"

#include <dirent.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <memory>
#include <sstream>
#include <system_error>

namespace ipsec::audit {

namespace {

std::string procPath(pid_t pid, const std::string& rest) {
  return "/proc/" + std::to_string(pid) + "/" + rest;
}

std::optional<std::string> readLink(const std::string& path) {
  std::string buf(4096, '\0');
  const ssize_t n = readlink(path.c_str(), buf.data(), buf.size());
  if (n < 0) return std::nullopt;
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

std::string errnoText() { return std::strerror(errno); }

template <typename T>
T parseNumber(std::string_view text, int base = 10) {
  T value{};
  std::from_chars(text.data(), text.data() + text.size(), value, base);
  return value;
}

// "Uid:\t0\t0\t0\t0" → the first two fields (real, effective).
std::pair<std::uint32_t, std::uint32_t> realAndEffective(std::string_view value) {
  std::istringstream in{std::string(value)};
  std::uint32_t real = 0, effective = 0;
  in >> real >> effective;
  return {real, effective};
}

void readStatus(ProcessAudit& a) {
  std::ifstream in(procPath(a.pid, "status"));
  if (!in) {
    throw std::system_error(errno ? errno : ESRCH, std::generic_category(),
                            "audit: cannot read /proc/" + std::to_string(a.pid) + "/status");
  }
  std::string line;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string_view key(line.data(), colon);
    std::string_view value(line);
    value.remove_prefix(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
      value.remove_prefix(1);
    }
    if (key == "Uid") {
      std::tie(a.uidReal, a.uidEffective) = realAndEffective(value);
    } else if (key == "Gid") {
      std::tie(a.gidReal, a.gidEffective) = realAndEffective(value);
    } else if (key == "CapEff") {
      a.capEffective = decodeCapabilities(parseNumber<std::uint64_t>(value, 16));
    } else if (key == "CapPrm") {
      a.capPermitted = decodeCapabilities(parseNumber<std::uint64_t>(value, 16));
    } else if (key == "CapBnd") {
      a.capBounding = decodeCapabilities(parseNumber<std::uint64_t>(value, 16));
    } else if (key == "CapAmb") {
      a.capAmbient = decodeCapabilities(parseNumber<std::uint64_t>(value, 16));
    } else if (key == "NoNewPrivs") {
      a.noNewPrivs = parseNumber<int>(value) != 0;
    } else if (key == "Seccomp") {
      a.seccompMode = parseNumber<int>(value);
    } else if (key == "Seccomp_filters") {
      a.seccompFilters = parseNumber<int>(value);
    }
  }
}

void readFds(ProcessAudit& a) {
  const std::string dirPath = procPath(a.pid, "fd");
  std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir(dirPath.c_str()), closedir);
  if (!dir) {
    a.errors.push_back("fds: " + errnoText());
    return;
  }
  // Auditing ourselves, the directory stream is one of our descriptors.
  const int ownDirFd = a.pid == getpid() ? dirfd(dir.get()) : -1;
  errno = 0;
  while (const dirent* entry = readdir(dir.get())) {
    const std::string_view name(entry->d_name);
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) {
          return c >= '0' && c <= '9';
        })) {
      continue;
    }
    const int fd = parseNumber<int>(name);
    if (fd == ownDirFd) continue;
    if (auto target = readLink(dirPath + "/" + std::string(name))) {
      a.fds.push_back({fd, std::move(*target)});
    } else if (errno != ENOENT) {  // ENOENT: closed since readdir, simply gone
      a.errors.push_back("fds: " + errnoText());  // once: the others fail alike
      a.fds.clear();
      return;
    }
  }
  std::sort(a.fds.begin(), a.fds.end(),
            [](const FdEntry& x, const FdEntry& y) { return x.fd < y.fd; });
}

std::optional<bool> readDumpable(const ProcessAudit& a) {
  if (a.pid == getpid()) return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1;
  if (a.uidEffective == 0) return std::nullopt;  // root-owned either way
  struct stat st {};
  if (stat(procPath(a.pid, "status").c_str(), &st) != 0) return std::nullopt;
  if (st.st_uid == 0) return false;
  if (st.st_uid == a.uidEffective) return true;
  return std::nullopt;  // e.g. owned by a user-namespace root: cannot tell
}

std::string hex16(std::uint64_t mask) {
  std::ostringstream out;
  out << std::hex << std::setw(16) << std::setfill('0') << mask;
  return out.str();
}

std::string dumpableText(const std::optional<bool>& d) {
  return d ? (*d ? "yes" : "no") : "n/a";
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += ',';
    out += n;
  }
  return out;
}

nlohmann::json capNames(const CapabilitySet& s) { return s.names; }

CapabilitySet capsFromNames(const nlohmann::json& names) {
  std::uint64_t mask = 0;
  for (const auto& n : names) {
    cap_value_t v = 0;
    const auto name = n.get<std::string>();
    if (cap_from_name(name.c_str(), &v) == 0 && v >= 0 && v < 64) mask |= std::uint64_t{1} << v;
  }
  return decodeCapabilities(mask);
}

}  // namespace

const std::vector<std::string>& namespaceKinds() {
  static const std::vector<std::string> kKinds = {"net", "mnt", "pid", "user", "uts", "ipc"};
  return kKinds;
}

CapabilitySet decodeCapabilities(std::uint64_t mask) {
  CapabilitySet set;
  set.mask = mask;
  for (cap_value_t bit = 0; bit < 64; ++bit) {
    if (!(mask & (std::uint64_t{1} << bit))) continue;
    char* name = cap_to_name(bit);
    set.names.emplace_back(name ? name : std::to_string(bit));
    cap_free(name);
  }
  return set;
}

ProcessAudit auditProcess(pid_t pid) {
  ProcessAudit a;
  a.pid = pid;
  readStatus(a);
  {
    std::ifstream comm(procPath(pid, "comm"));
    if (!std::getline(comm, a.name)) a.errors.push_back("name: unreadable");
  }
  if (auto root = readLink(procPath(pid, "root"))) {
    a.root = std::move(*root);
  } else {
    a.errors.push_back("root: " + errnoText());
  }
  for (const auto& kind : namespaceKinds()) {
    if (auto ns = readLink(procPath(pid, "ns/" + kind))) {
      a.namespaces[kind] = std::move(*ns);
    } else {
      a.errors.push_back("ns/" + kind + ": " + errnoText());
    }
  }
  readFds(a);
  a.dumpable = readDumpable(a);
  return a;
}

std::string formatTable(const std::vector<ProcessAudit>& audits) {
  const std::vector<std::string> header = {"PID",    "NAME",   "UID",    "GID",  "CAPEFF",
                                           "CAPPRM", "CAPBND", "CAPAMB", "NNP",  "SECCOMP",
                                           "DUMP",   "ROOT"};
  std::vector<std::vector<std::string>> rows = {header};
  for (const auto& a : audits) {
    rows.push_back({std::to_string(a.pid), a.name,
                    std::to_string(a.uidReal) + "/" + std::to_string(a.uidEffective),
                    std::to_string(a.gidReal) + "/" + std::to_string(a.gidEffective),
                    hex16(a.capEffective.mask), hex16(a.capPermitted.mask),
                    hex16(a.capBounding.mask), hex16(a.capAmbient.mask),
                    a.noNewPrivs ? "1" : "0",
                    std::to_string(a.seccompMode) + " (" + std::to_string(a.seccompFilters) +
                        " filters)",
                    dumpableText(a.dumpable), a.root});
  }
  std::vector<std::size_t> width(header.size(), 0);
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::ostringstream out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << line << '\n';
  }
  for (const auto& a : audits) {
    out << '\n' << a.pid << ' ' << a.name << ":\n";
    out << "  namespaces:";
    for (const auto& kind : namespaceKinds()) {
      const auto it = a.namespaces.find(kind);
      out << ' ' << (it == a.namespaces.end() ? kind + ":?" : it->second);
    }
    out << '\n';
    const std::pair<const char*, const CapabilitySet*> sets[] = {{"effective", &a.capEffective},
                                                                 {"permitted", &a.capPermitted},
                                                                 {"ambient", &a.capAmbient}};
    for (const auto& [label, set] : sets) {
      if (!set->names.empty()) out << "  caps " << label << ": " << joined(set->names) << '\n';
    }
    out << "  fds:\n";
    for (const auto& f : a.fds) out << "    " << std::setw(4) << f.fd << "  " << f.target << '\n';
    for (const auto& e : a.errors) out << "  unreadable: " << e << '\n';
  }
  return out.str();
}

nlohmann::json toJson(const ProcessAudit& a) {
  nlohmann::json fds = nlohmann::json::array();
  for (const auto& f : a.fds) fds.push_back({{"fd", f.fd}, {"target", f.target}});
  nlohmann::json namespaces = nlohmann::json::object();
  for (const auto& [kind, id] : a.namespaces) namespaces[kind] = id;
  return {
      {"pid", a.pid},
      {"name", a.name},
      {"uid", {{"real", a.uidReal}, {"effective", a.uidEffective}}},
      {"gid", {{"real", a.gidReal}, {"effective", a.gidEffective}}},
      {"capabilities",
       {{"effective", capNames(a.capEffective)},
        {"permitted", capNames(a.capPermitted)},
        {"bounding", capNames(a.capBounding)},
        {"ambient", capNames(a.capAmbient)}}},
      {"no_new_privs", a.noNewPrivs},
      {"seccomp", a.seccompMode},
      {"seccomp_filters", a.seccompFilters},
      {"root", a.root},
      {"namespaces", namespaces},
      {"fds", fds},
      {"dumpable", a.dumpable ? nlohmann::json(*a.dumpable) : nlohmann::json(nullptr)},
      {"errors", a.errors},
  };
}

nlohmann::json toJson(const std::vector<ProcessAudit>& audits) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& a : audits) out.push_back(toJson(a));
  return out;
}

ProcessAudit fromJson(const nlohmann::json& j) {
  ProcessAudit a;
  a.pid = j.at("pid").get<pid_t>();
  a.name = j.at("name").get<std::string>();
  a.uidReal = j.at("uid").at("real").get<uid_t>();
  a.uidEffective = j.at("uid").at("effective").get<uid_t>();
  a.gidReal = j.at("gid").at("real").get<gid_t>();
  a.gidEffective = j.at("gid").at("effective").get<gid_t>();
  const auto& caps = j.at("capabilities");
  a.capEffective = capsFromNames(caps.at("effective"));
  a.capPermitted = capsFromNames(caps.at("permitted"));
  a.capBounding = capsFromNames(caps.at("bounding"));
  a.capAmbient = capsFromNames(caps.at("ambient"));
  a.noNewPrivs = j.at("no_new_privs").get<bool>();
  a.seccompMode = j.at("seccomp").get<int>();
  a.seccompFilters = j.at("seccomp_filters").get<int>();
  a.root = j.at("root").get<std::string>();
  for (const auto& [kind, id] : j.at("namespaces").items()) a.namespaces[kind] = id.get<std::string>();
  for (const auto& f : j.at("fds")) {
    a.fds.push_back({f.at("fd").get<int>(), f.at("target").get<std::string>()});
  }
  if (!j.at("dumpable").is_null()) a.dumpable = j.at("dumpable").get<bool>();
  if (j.contains("errors")) a.errors = j.at("errors").get<std::vector<std::string>>();
  return a;
}

}  // namespace ipsec::audit
