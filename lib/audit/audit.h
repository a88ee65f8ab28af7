// What the kernel says each process may do: read by the supervisor (ipsecd,
// root) from /proc/PID of its children and of itself, and shown by
// `ipsecctl audit [--json]`. It trusts only /proc; it is the check that the
// sandbox profiles (lib/sandbox) were really applied.
//
// Dumpable flag: /proc does not publish it directly. Inference: the files of
// a non-dumpable process's /proc/PID (such as /proc/PID/status) are owned by
// root:root (the kernel's task_dump_owner), whereas a dumpable process's are
// owned by its euid/egid. So for a process whose euid is not 0, status owned
// by uid 0 means "not dumpable". For euid 0 both cases look alike, and the
// flag is reported as unknown (null / "n/a"), except for the calling process
// itself, which asks prctl(PR_GET_DUMPABLE). (Not /proc/PID itself: that
// directory keeps the euid either way.)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ipsec::audit {

struct CapabilitySet {
  std::uint64_t mask = 0;          // as in /proc/PID/status
  std::vector<std::string> names;  // decoded by libcap: "cap_net_admin", ...
};

struct FdEntry {
  int fd = -1;
  std::string target;  // readlink of /proc/PID/fd/N: "socket:[123]", "/dev/net/tun", ...
};

struct ProcessAudit {
  pid_t pid = 0;
  std::string name;  // /proc/PID/comm
  uid_t uidReal = 0, uidEffective = 0;
  gid_t gidReal = 0, gidEffective = 0;
  CapabilitySet capEffective, capPermitted, capBounding, capAmbient;
  bool noNewPrivs = false;
  int seccompMode = 0;  // 0 none, 1 strict, 2 filter
  int seccompFilters = 0;
  std::string root;                               // readlink /proc/PID/root
  std::map<std::string, std::string> namespaces;  // "net" -> "net:[4026531840]"
  std::vector<FdEntry> fds;                       // sorted by fd
  std::optional<bool> dumpable;                   // nullopt: unknown (euid 0)
  std::vector<std::string> errors;                // what could not be read, and why
};

// The namespaces reported, in this order.
const std::vector<std::string>& namespaceKinds();

// Reads /proc/PID. Throws std::system_error if the process does not exist
// (or /proc/PID/status cannot be read); anything else that cannot be read
// (e.g. fds of a process that exits meanwhile) is noted in `errors`.
ProcessAudit auditProcess(pid_t pid);

// Decodes a capability mask with libcap's names (unknown bits as numbers).
CapabilitySet decodeCapabilities(std::uint64_t mask);

// An aligned table, one row per process, then per process its namespaces,
// non-empty capability names and descriptors.
std::string formatTable(const std::vector<ProcessAudit>& audits);

// Stable field names: pid, name, uid {real, effective}, gid {real,
// effective}, capabilities {effective, permitted, bounding, ambient} (lists of
// names), no_new_privs, seccomp, seccomp_filters, root, namespaces {net, mnt,
// pid, user, uts, ipc}, fds [{fd, target}], dumpable (true/false/null),
// errors [strings].
nlohmann::json toJson(const ProcessAudit& audit);
nlohmann::json toJson(const std::vector<ProcessAudit>& audits);

// The inverse, for ipsecctl receiving JSON from the supervisor: capability
// masks are rebuilt from the names. Throws nlohmann::json::exception on a
// document of the wrong shape.
ProcessAudit fromJson(const nlohmann::json& j);

}  // namespace ipsec::audit
