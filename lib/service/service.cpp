// See service.h.
#include "service/service.h"

#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>

#include <boost/asio/signal_set.hpp>
#include <capnp/message.h>
#include <cstdio>
#include <stdexcept>

#include "control/channel.h"
#include "log/log.h"
#include "sandbox/apply.h"

namespace ipsec::service {

Args parseArgs(int argc, char** argv) {
  static const option kOptions[] = {{"uid", required_argument, nullptr, 'u'},
                                    {"gid", required_argument, nullptr, 'g'},
                                    {"root", required_argument, nullptr, 'r'},
                                    {"workers", required_argument, nullptr, 'w'},
                                    {"debug", no_argument, nullptr, 'd'},
                                    {"print-profile", no_argument, nullptr, 'p'},
                                    {"local-address", required_argument, nullptr, 'l'},
                                    {"tun-offloads", required_argument, nullptr, 't'},
                                    {"forwarder-threads", required_argument, nullptr, 'f'},
                                    {nullptr, 0, nullptr, 0}};
  Args a;
  bool haveUid = false, haveGid = false;
  optind = 1;
  for (int c; (c = getopt_long(argc, argv, "", kOptions, nullptr)) != -1;) {
    switch (c) {
      case 'u': a.uid = static_cast<uid_t>(std::stoul(optarg)); haveUid = true; break;
      case 'g': a.gid = static_cast<gid_t>(std::stoul(optarg)); haveGid = true; break;
      case 'r': a.root = optarg; break;
      case 'w': a.workers = static_cast<unsigned>(std::stoul(optarg)); break;
      case 'd': a.debug = true; break;
      case 'p': a.printProfile = true; break;
      case 'l': a.localAddresses.emplace_back(optarg); break;
      case 't': a.tunOffloads = static_cast<unsigned>(std::stoul(optarg, nullptr, 0)); break;
      case 'f': a.forwarderThreads = static_cast<unsigned>(std::stoul(optarg)); break;
      default: throw std::runtime_error("unknown argument; this program is started by ipsecd");
    }
  }
  if (a.printProfile) {
    // Show the sandbox as ipsecd would configure it by default.
    if (!haveUid) a.uid = 65534;
    if (!haveGid) a.gid = 65534;
    if (a.root.empty()) a.root = "/run/ipsecd/empty";
    return a;
  }
  if (!haveUid || !haveGid || a.root.empty()) {
    throw std::runtime_error("--uid, --gid and --root are required; this program is started by ipsecd");
  }
  if (a.uid == 0 || a.gid == 0) throw std::runtime_error("refusing to run as uid or gid 0");
  if (a.workers == 0 || a.workers > 16) throw std::runtime_error("--workers must be 1..16");
  if (a.forwarderThreads == 0 || a.forwarderThreads > a.workers) {
    throw std::runtime_error("--forwarder-threads must be 1..--workers");
  }
  return a;
}

UniqueFd takeFd(int fd, std::string_view what) {
  if (fcntl(fd, F_GETFD) < 0) {
    throw std::runtime_error("descriptor " + std::to_string(fd) + " (" + std::string(what) + ") is not open");
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return UniqueFd(fd);
}

sandbox::SandboxProfile baseProfile(std::string role, const Args& args) {
  sandbox::SandboxProfile p;
  p.name = std::move(role);
  p.credentials = sandbox::Credentials{args.uid, args.gid, "its own unprivileged ids, distinct per service"};
  p.filesystem = sandbox::FilesystemView{args.root, "an empty root: nothing on disk to read or write"};
  p.nonDumpable = {true, "no core dumps, no ptrace by same-uid processes"};
  p.allow(sandbox::baselineSyscalls());
  p.allow(sandbox::socketIoSyscalls());
  p.seccompDefault = sandbox::seccompDefaultFromEnvironment();
  return p;
}

void printProfile(const sandbox::SandboxProfile& p) {
  std::printf("%s sandbox\n", p.name.c_str());
  if (p.credentials) std::printf("  uid/gid     %u/%u  (%s)\n", p.credentials->uid, p.credentials->gid, p.credentials->reason.c_str());
  if (p.filesystem) std::printf("  root        %s  (%s)\n", p.filesystem->chrootDir.c_str(), p.filesystem->reason.c_str());
  std::printf("  caps        %s\n", p.capabilities.empty() ? "none" : "");
  for (const auto& c : p.capabilities) std::printf("              %d  (%s)\n", c.capability, c.reason.c_str());
  std::printf("  no_new_privs yes\n");
  std::printf("  dumpable    %s  (%s)\n", p.nonDumpable.enabled ? "no" : "yes", p.nonDumpable.reason.c_str());
  if (p.lockMemory.enabled) std::printf("  mlock       yes  (%s)\n", p.lockMemory.reason.c_str());
  std::printf("  seccomp     allow-list, anything else kills the process\n");
  for (const auto& r : p.syscalls) {
    const std::string conditions = sandbox::describeConditions(r);
    std::string cond = conditions.empty() ? "" : " [only if " + conditions + "]";
    if (r.errnoValue) cond += " [answered errno " + std::to_string(*r.errnoValue) + "]";
    std::printf("    %-18s %s%s\n", r.name.c_str(), r.reason.c_str(), cond.c_str());
  }
}

Service::Service(std::string role, const Args& args) : role_(std::move(role)), args_(args) {}

int Service::run(const sandbox::SandboxProfile& profile, Handlers h) {
  control::Channel sup(io_, takeFd(kSupervisorFd, "ipsecd channel"), "ipsecd");
  boost::asio::signal_set signals(io_, SIGTERM, SIGINT);
  bool stopping = false;
  auto stop = [&](int code) {
    if (stopping) return;
    stopping = true;
    exitCode_ = code;
    if (h.stop) h.stop();
    signals.cancel();
    sup.close();
    io_.stop();
  };
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (!ec) stop(0);
  });
  sup.start(
      [&](capnp::MessageReader& m, std::vector<UniqueFd>& fds) {
        auto msg = m.getRoot<proto::ToService>();
        if (msg.which() != proto::ToService::DATA_PLANE_RESTARTED && !fds.empty()) return false;
        switch (msg.which()) {
          case proto::ToService::STOP:
            stop(0);
            return true;
          case proto::ToService::STATS_REQUEST: {
            capnp::MallocMessageBuilder b;
            auto s = b.initRoot<proto::FromService>().initStats();
            s.setRequestId(msg.getStatsRequest());
            if (h.stats) h.stats(s);
            sup.send(b);
            return true;
          }
          case proto::ToService::SYSCTL:
            if (msg.getSysctl().getName() == "net.inet.ipsec.debug") {
              log::setDebug(msg.getSysctl().getValue() != 0);
            }
            if (h.sysctl) h.sysctl(msg.getSysctl().getName().cStr(), msg.getSysctl().getValue());
            return true;
          case proto::ToService::DATA_PLANE_RESTARTED:
            return h.dataPlaneRestarted && h.dataPlaneRestarted(fds);
        }
        return false;
      },
      [&](std::string_view why) {
        if (stopping) return;
        log::error("channel to ipsecd closed: {}", why);
        stop(1);
      });

  sandbox::applySandbox(profile);
  if (h.sandboxed) h.sandboxed();
  capnp::MallocMessageBuilder ready;
  ready.initRoot<proto::FromService>().setReady();
  sup.send(ready);
  log::info("ready (uid {}, gid {}, sandboxed)", args_.uid, args_.gid);
  io_.run();
  return exitCode_;
}

int serviceMain(std::string_view role, int argc, char** argv, const std::function<int(const Args&)>& body) {
  log::setRole(role);
  // A burst of control messages (a window of SA ADDs: builders, queued
  // serialised copies) takes a few hundred KiB of heap and gives it back at
  // the burst's end. glibc's default returns the heap top to the kernel then
  // and page-faults it in again on the next burst: a third of keydb's time
  // during an ADD burst. Keep up to 64 MiB of free heap instead (key memory
  // is not on this heap: lib/securemem).
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  ::mallopt(M_TOP_PAD, 4 << 20);
  try {
    Args args = parseArgs(argc, argv);
    log::setDebug(args.debug);
    return body(args);
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return 1;
  }
}

}  // namespace ipsec::service
