// Tests of lib/audit on real processes: the test process itself, and forked
// children that applied a sandbox profile (lib/sandbox) for real.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <sstream>
#include <system_error>

#include <gtest/gtest.h>

#include "audit/audit.h"
#include "sandbox/apply.h"
#include "sandbox/profile.h"
#include "sandboxed_child.h"

namespace ipsec::audit {
namespace {

using sandbox::testing::SandboxedChild;

bool hasFdTarget(const ProcessAudit& a, const std::string& prefix) {
  return std::any_of(a.fds.begin(), a.fds.end(),
                     [&](const FdEntry& f) { return f.target.rfind(prefix, 0) == 0; });
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(Audit, DecodesCapabilityMasksWithLibcapNames) {
  const auto set = decodeCapabilities((1u << 10) | (1u << 12));
  EXPECT_EQ(set.mask, 0x1400u);
  EXPECT_EQ(set.names, (std::vector<std::string>{"cap_net_bind_service", "cap_net_admin"}));
  EXPECT_TRUE(decodeCapabilities(0).names.empty());
}

TEST(Audit, ReadsTheTestProcessItself) {
  int pipeFds[2];
  ASSERT_EQ(pipe(pipeFds), 0);
  const int efd = eventfd(0, EFD_CLOEXEC);
  const int mfd = memfd_create("audit-test", MFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  ASSERT_GE(mfd, 0);

  const ProcessAudit a = auditProcess(getpid());
  EXPECT_EQ(a.pid, getpid());
  EXPECT_EQ(a.name, "audit_test");
  EXPECT_EQ(a.uidReal, getuid());
  EXPECT_EQ(a.uidEffective, geteuid());
  EXPECT_EQ(a.gidEffective, getegid());
  EXPECT_FALSE(a.noNewPrivs);
  EXPECT_EQ(a.seccompMode, 0);
  EXPECT_EQ(a.seccompFilters, 0);
  EXPECT_EQ(a.root, "/");
  ASSERT_EQ(a.namespaces.size(), 6u);
  EXPECT_EQ(a.namespaces.at("net").rfind("net:[", 0), 0u);
  EXPECT_EQ(a.namespaces.at("user").rfind("user:[", 0), 0u);
  EXPECT_EQ(a.dumpable, std::optional<bool>(true));  // asked with prctl for ourselves
  EXPECT_TRUE(hasFdTarget(a, "pipe:["));
  EXPECT_TRUE(hasFdTarget(a, "anon_inode:[eventfd]"));
  EXPECT_TRUE(hasFdTarget(a, "/memfd:audit-test (deleted)"));
  EXPECT_TRUE(std::is_sorted(a.fds.begin(), a.fds.end(),
                             [](const FdEntry& x, const FdEntry& y) { return x.fd < y.fd; }));
  EXPECT_TRUE(a.errors.empty());
  if (geteuid() == 0) {
    EXPECT_TRUE(contains(a.capEffective.names, "cap_sys_admin"));
    EXPECT_NE(a.capBounding.mask, 0u);
  }
  close(pipeFds[0]);
  close(pipeFds[1]);
  close(efd);
  close(mfd);
}

TEST(Audit, AMissingProcessIsAnError) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(0);
  ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
  EXPECT_THROW(auditProcess(pid), std::system_error);
}

class AuditOfChild : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    char tmpl[] = "/tmp/audit_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    sandbox::ensureEmptyDir(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) rmdir(dir_.c_str());
  }
  sandbox::SandboxProfile profile() const {
    sandbox::SandboxProfile p;
    p.name = "audited-child";
    p.credentials = sandbox::Credentials{59997, 59996, "test ids"};
    p.filesystem = sandbox::FilesystemView{dir_, "empty root"};
    p.seccompDefault = sandbox::SeccompDefault::kKillProcess;
    p.allow(sandbox::baselineSyscalls());
    return p;
  }
  std::string dir_;
};

TEST_F(AuditOfChild, ShowsWhatTheSandboxEnforced) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair), 0);
  const int efd = eventfd(0, 0);
  ASSERT_GE(efd, 0);
  SandboxedChild child(profile(), [] { return 0; });
  ASSERT_EQ(child.applyResult(), "ok");

  const ProcessAudit a = auditProcess(child.pid());
  EXPECT_EQ(a.name, "audit_test");  // forked, not exec'd: comm is inherited
  EXPECT_EQ(a.uidReal, 59997u);
  EXPECT_EQ(a.uidEffective, 59997u);
  EXPECT_EQ(a.gidReal, 59996u);
  EXPECT_EQ(a.gidEffective, 59996u);
  EXPECT_EQ(a.capEffective.mask, 0u);
  EXPECT_EQ(a.capPermitted.mask, 0u);
  EXPECT_EQ(a.capBounding.mask, 0u);
  EXPECT_EQ(a.capAmbient.mask, 0u);
  EXPECT_TRUE(a.noNewPrivs);
  EXPECT_EQ(a.seccompMode, 2);
  EXPECT_EQ(a.seccompFilters, 1);
  EXPECT_EQ(a.root, dir_);
  EXPECT_EQ(a.dumpable, std::optional<bool>(false));
  EXPECT_TRUE(hasFdTarget(a, "socket:["));
  EXPECT_TRUE(hasFdTarget(a, "anon_inode:[eventfd]"));
  EXPECT_EQ(a.namespaces, auditProcess(getpid()).namespaces);
  EXPECT_TRUE(a.errors.empty());

  const auto j = toJson(a);
  EXPECT_EQ(j["uid"]["effective"], 59997);
  EXPECT_EQ(j["capabilities"]["bounding"], nlohmann::json::array());
  EXPECT_EQ(j["no_new_privs"], true);
  EXPECT_EQ(j["seccomp"], 2);
  EXPECT_EQ(j["dumpable"], false);
  EXPECT_EQ(j["root"], dir_);

  child.finish();
  close(pair[0]);
  close(pair[1]);
  close(efd);
}

TEST_F(AuditOfChild, ADumpableChildIsReportedDumpable) {
  // Changing the euid resets "dumpable" to fs.suid_dumpable (0 on Debian),
  // so this child sets it back explicitly after dropping root.
  int ready[2], go[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(go), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(ready[0]);
    close(go[1]);
    const bool ok = setresgid(59996, 59996, 59996) == 0 && setresuid(59997, 59997, 59997) == 0 &&
                    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0;
    (void)!write(ready[1], ok ? "y" : "n", 1);
    char c;
    (void)!read(go[0], &c, 1);
    _exit(0);
  }
  close(ready[1]);
  close(go[0]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  EXPECT_EQ(c, 'y');
  const ProcessAudit a = auditProcess(pid);
  EXPECT_EQ(a.uidEffective, 59997u);
  EXPECT_EQ(a.dumpable, std::optional<bool>(true));
  EXPECT_EQ(toJson(a)["dumpable"], true);
  close(go[1]);
  close(ready[0]);
  waitpid(pid, nullptr, 0);
}

TEST_F(AuditOfChild, ARootChildsDumpableFlagIsUnknown) {
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(go[1]);
    char c;
    (void)!read(go[0], &c, 1);
    _exit(0);
  }
  close(go[0]);
  const ProcessAudit a = auditProcess(pid);
  EXPECT_EQ(a.uidEffective, 0u);
  EXPECT_FALSE(a.dumpable.has_value());
  EXPECT_TRUE(toJson(a)["dumpable"].is_null());
  EXPECT_NE(formatTable({a}).find("n/a"), std::string::npos);
  close(go[1]);
  waitpid(pid, nullptr, 0);
}

TEST(AuditJson, HasTheStableFieldNames) {
  const auto j = toJson(auditProcess(getpid()));
  std::set<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.insert(k);
  EXPECT_EQ(keys, (std::set<std::string>{"pid", "name", "uid", "gid", "capabilities",
                                         "no_new_privs", "seccomp", "seccomp_filters", "root",
                                         "namespaces", "fds", "dumpable", "errors"}));
  std::set<std::string> capKeys;
  for (const auto& [k, v] : j["capabilities"].items()) capKeys.insert(k);
  EXPECT_EQ(capKeys, (std::set<std::string>{"effective", "permitted", "bounding", "ambient"}));
  std::set<std::string> nsKeys;
  for (const auto& [k, v] : j["namespaces"].items()) nsKeys.insert(k);
  EXPECT_EQ(nsKeys, (std::set<std::string>{"net", "mnt", "pid", "user", "uts", "ipc"}));
  ASSERT_FALSE(j["fds"].empty());
  EXPECT_TRUE(j["fds"][0].contains("fd"));
  EXPECT_TRUE(j["fds"][0].contains("target"));
  EXPECT_TRUE(j["no_new_privs"].is_boolean());
  EXPECT_TRUE(j["seccomp"].is_number_integer());
  EXPECT_TRUE(toJson(std::vector<ProcessAudit>{}).is_array());
}

TEST(AuditJson, RoundTripsThroughFromJson) {
  ProcessAudit a = auditProcess(getpid());
  a.capAmbient = decodeCapabilities(1u << 12);
  const ProcessAudit b = fromJson(nlohmann::json::parse(toJson(a).dump()));
  EXPECT_EQ(b.pid, a.pid);
  EXPECT_EQ(b.name, a.name);
  EXPECT_EQ(b.uidEffective, a.uidEffective);
  EXPECT_EQ(b.capEffective.mask, a.capEffective.mask);
  EXPECT_EQ(b.capBounding.mask, a.capBounding.mask);
  EXPECT_EQ(b.capAmbient.mask, 0x1000u);
  EXPECT_EQ(b.namespaces, a.namespaces);
  ASSERT_EQ(b.fds.size(), a.fds.size());
  EXPECT_EQ(b.fds.front().target, a.fds.front().target);
  EXPECT_EQ(b.dumpable, a.dumpable);
  EXPECT_EQ(formatTable({b}), formatTable({a}));
}

TEST(AuditTable, HasAnAlignedRowPerProcessAndAnFdListing) {
  ProcessAudit a;
  a.pid = 101;
  a.name = "ipsec-forwarder";
  a.uidReal = a.uidEffective = 64704;
  a.gidReal = a.gidEffective = 64704;
  a.noNewPrivs = true;
  a.seccompMode = 2;
  a.seccompFilters = 1;
  a.root = "/run/ipsecd/empty";
  a.dumpable = false;
  a.fds = {{0, "/dev/null"}, {3, "/dev/net/tun"}, {4, "socket:[1234]"}};
  ProcessAudit b;
  b.pid = 7;
  b.name = "ipsecd";
  b.capEffective = decodeCapabilities(1u << 12);
  b.root = "/";
  b.dumpable = std::nullopt;
  const std::string table = formatTable({a, b});
  std::istringstream in(table);
  std::string header, row1, row2;
  std::getline(in, header);
  std::getline(in, row1);
  std::getline(in, row2);
  EXPECT_EQ(header.rfind("PID", 0), 0u);
  EXPECT_EQ(row1.rfind("101", 0), 0u);
  EXPECT_EQ(row2.rfind("7 ", 0), 0u);
  // Columns line up: NAME starts at the same offset in every line.
  EXPECT_EQ(header.find("NAME"), row1.find("ipsec-forwarder"));
  EXPECT_EQ(header.find("NAME"), row2.find("ipsecd"));
  EXPECT_EQ(header.find("ROOT"), row1.find("/run/ipsecd/empty"));
  EXPECT_NE(row1.find("64704/64704"), std::string::npos);
  EXPECT_NE(row1.find("2 (1 filters)"), std::string::npos);
  EXPECT_NE(row2.find("0000000000001000"), std::string::npos);
  EXPECT_NE(row2.find("n/a"), std::string::npos);
  EXPECT_NE(table.find("       3  /dev/net/tun\n"), std::string::npos) << table;
  EXPECT_NE(table.find("caps effective: cap_net_admin"), std::string::npos);
}

}  // namespace
}  // namespace ipsec::audit
