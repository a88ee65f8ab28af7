// ipsecd — the supervisor of the five-process userspace IPsec service.
//
// Holds no key and parses no packet. It alone is privileged: it creates the
// TUN device, the raw ESP/AH sockets, the NAT-T UDP sockets, the PF_KEY and control sockets, the
// shared-memory rings and every socketpair, then starts each child with
// exactly its descriptors (fork+exec, renumbered from 3). Which descriptor
// each child finds at which number, who is on its other end and what losing
// that peer means is the privilege-separation table, proto/fd_layout.h;
// child_fds.h builds each child's vector from it.
//
// A child's stdout and stderr are the write end of a pipe of its own, which
// ipsecd reads and relays line by line, tagged (child_output.h). The runtime
// directory is used only when root owns it and nobody else can write it
// (runtime_dir.h).
//
// Each child drops to its own uid/gid, chroots into an empty directory, sheds
// every capability, sets no_new_privs and loads its seccomp allow-list before
// it says ready (see services/<name>/main.cpp).
#include <getopt.h>
#include <stdexcept>
#include <cerrno>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "config/config.h"
#include "log/log.h"
#include "supervisor.h"

namespace {

void usage(FILE* out) {
  std::fputs(
      "Usage: ipsecd --config FILE [--runtime-dir DIR] [--debug]\n"
      "\n"
      "Runs the userspace IPsec service in the foreground: the supervisor and its four\n"
      "privilege-separated children (ipsec-keydb, ipsec-policy, ipsec-crypto,\n"
      "ipsec-forwarder). Logs go to standard error, the children's tagged by ipsecd\n"
      "with their name and pid. SIGTERM or SIGINT stops all\n"
      "processes and removes the TUN device and the runtime sockets.\n"
      "\n"
      "Options:\n"
      "  -c, --config FILE       configuration file of `key = value` lines (required);\n"
      "                          the keys are documented in lib/config/README.md\n"
      "  -r, --runtime-dir DIR   overrides runtime_dir (default /run/ipsecd): holds the\n"
      "                          PF_KEY socket DIR/pfkey, the ipsecctl socket\n"
      "                          DIR/control and DIR/ipsecd.pid (written when ready);\n"
      "                          one directory per instance, e.g. per network namespace;\n"
      "                          it must be root's and not writable by group or others\n"
      "  -d, --debug             per-packet tracing (as IPSEC_DEBUG; also the sysctl\n"
      "                          net.inet.ipsec.debug)\n"
      "  -h, --help              this text\n"
      "\n"
      "Exit status: 0 after a clean stop; 1 if the service failed closed (a key\n"
      "process died, or the data plane restarted too often); 2 for bad usage or\n"
      "configuration, with a message naming the file and line.\n",
      out);
}

std::string binDir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  buf[n] = '\0';
  return std::filesystem::path(buf).parent_path().string();
}

// Where the four children are: <prefix>/libexec/ipsecd beside an installed
// <prefix>/sbin/ipsecd, else beside ipsecd (a build tree). ipsecd runs them as
// root before they confine themselves, so a binary anyone but root could have
// written is refused: its writer would own the next start.
std::string childDir(const std::string& bin) {
  const auto installed = std::filesystem::path(bin).parent_path() / "libexec" / "ipsecd";
  const std::string dir = std::filesystem::exists(installed / "ipsec-keydb") ? installed.string() : bin;
  for (const char* name : {"ipsec-keydb", "ipsec-policy", "ipsec-crypto", "ipsec-forwarder"}) {
    const std::string path = dir + "/" + name;
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) throw std::runtime_error(path + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
      throw std::runtime_error(path + ": refused: a child binary must be a regular file owned by root that "
                                      "neither group nor others can write");
    }
  }
  return dir;
}

}  // namespace

int main(int argc, char** argv) {
  ipsec::log::setRole("ipsecd");
  ipsec::log::setSyslogPrefix(true);  // stderr is journald's under the units
  static const option kOptions[] = {{"config", required_argument, nullptr, 'c'},
                                    {"runtime-dir", required_argument, nullptr, 'r'},
                                    {"debug", no_argument, nullptr, 'd'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  std::string configPath, runtimeDir;
  bool debug = false;
  for (int c; (c = getopt_long(argc, argv, "c:r:dh", kOptions, nullptr)) != -1;) {
    switch (c) {
      case 'c': configPath = optarg; break;
      case 'r': runtimeDir = optarg; break;
      case 'd': debug = true; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (configPath.empty() || optind != argc) {
    usage(stderr);
    return 2;
  }
  if (geteuid() != 0) {
    std::fprintf(stderr, "ipsecd: must run as root (it creates a TUN device and raw sockets)\n");
    return 2;
  }
  ipsec::supervisor::Options opt;
  try {
    opt.config = ipsec::config::loadConfigFile(configPath);
  } catch (const ipsec::config::ConfigError& e) {
    std::fprintf(stderr, "ipsecd: %s\n", e.what());
    return 2;
  }
  if (!runtimeDir.empty()) opt.config.runtimeDir = runtimeDir;
  if (debug) opt.config.debug = true;
  ipsec::log::setDebug(opt.config.debug);
  opt.configPath = configPath;
  opt.binDir = binDir();
  try {
    opt.childDir = childDir(opt.binDir);
    return ipsec::supervisor::runSupervisor(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipsecd: %s\n", e.what());
    return 2;
  }
}
