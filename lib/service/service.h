// The common skeleton of the four child services, in the manner of OpenBSD's
// proc.c: take the channels from known descriptors, apply the sandbox profile,
// announce readiness to ipsecd, run the loop. A service's main.cpp then reads
// as its row of the privsep table: descriptors, peers, profile, one run call.
//
// Each service's descriptors are numbered in proto/fd_layout.h; the channel to
// ipsecd is always the first (3). ipsecd may send: stop, a stats request, a
// sysctl, and (to keydb and policy) new data-plane channels. Any other
// message, or descriptors where none are expected, is fatal.
#pragma once

#include <utility>  // before asio (Boost 1.74 with GCC 12)

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/unique_fd.h"
#include "proto/fd_layout.h"
#include "sandbox/profile.h"
#include "proto/supervisor.capnp.h"

namespace ipsec::service {

using control::UniqueFd;

inline constexpr int kSupervisorFd = fdlayout::kFirstFd;  // every layout's first entry

// What ipsecd passes on every child's command line.
struct Args {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string root;      // the empty directory to chroot into
  bool debug = false;
  unsigned workers = 1;  // crypto worker rings (crypto and forwarder only)
  bool printProfile = false;  // --print-profile: show the sandbox and exit
  // --local-address ADDR (repeatable, policy only): this host's addresses
  // from ipsecd.conf's local_addresses, to tell which way an SA goes when a
  // policy's selector covers both ends (services/policy/sa_direction.h).
  std::vector<std::string> localAddresses;
  // --tun-offloads FLAGS (forwarder only): its TUN was opened with
  // IFF_VNET_HDR (header size 10) and the kernel granted these TUN_F_* bits;
  // absent: a plain TUN. ipsecd probed the device once; a restarted data
  // plane gets the same TUN and the same flags.
  std::optional<unsigned> tunOffloads;
  // --forwarder-threads N (forwarder only): its TUN has N queues (the first
  // at the table's kTun, the others after the table: fdlayout::tunQueueNumber)
  // and it runs one thread per queue; 1..workers.
  unsigned forwarderThreads = 1;
};

// Throws std::runtime_error naming the bad argument.
Args parseArgs(int argc, char** argv);

// Takes ownership of a descriptor ipsecd placed at a known number; throws if
// it is not open (ipsecd and the child disagree on the table).
UniqueFd takeFd(int fd, std::string_view what);

// The same by the process's table (proto/fd_layout.h): takeFd(KeydbFd::kPolicy,
// args), takeFd(ForwarderFd::kRingMemfd, args, i) for crypto worker i. The
// error names the entry as the table does.
template <class Id>
UniqueFd takeFd(Id which, const Args& args, unsigned worker = 0) {
  const auto& layout = fdlayout::layoutOf(which);
  const auto& entry = layout[which];
  std::string what(entry.name);
  if (entry.perWorker) what = "crypto worker " + std::to_string(worker) + " " + what;
  return takeFd(layout.number(which, args.workers, worker), what);
}

// The profile every child starts from: its own uid/gid, the empty root, no
// capabilities, not dumpable, and the baseline allow-list. Each main.cpp adds
// what its process needs, with a reason per entry.
sandbox::SandboxProfile baseProfile(std::string role, const Args& args);

struct Handlers {
  std::function<void(proto::Stats::Builder)> stats;
  std::function<void(std::string_view, std::int64_t)> sysctl;
  // Only keydb and policy set this; elsewhere the message is fatal.
  std::function<bool(std::vector<UniqueFd>&)> dataPlaneRestarted;
  std::function<void()> stop;
  // Runs after the sandbox is applied and before ready: start threads here,
  // so that they inherit the seccomp filter and the dropped credentials.
  std::function<void()> sandboxed;
};

class Service {
 public:
  Service(std::string role, const Args& args);
  boost::asio::io_context& io() { return io_; }
  const Args& args() const { return args_; }

  // Applies the profile, says ready, and runs until ipsecd says stop or a
  // SIGTERM arrives (exit 0) or the channel to ipsecd breaks (exit 1).
  int run(const sandbox::SandboxProfile& profile, Handlers handlers);

 private:
  std::string role_;
  Args args_;
  boost::asio::io_context io_;
  int exitCode_ = 0;
};

// Prints a profile as a man-page-like table: ids, root, capabilities, flags,
// and each allowed system call with the reason it is allowed.
void printProfile(const sandbox::SandboxProfile& profile);

// Runs body with logging set up; an exception at start is logged with the
// role's name and gives exit status 1.
int serviceMain(std::string_view role, int argc, char** argv, const std::function<int(const Args&)>& body);

}  // namespace ipsec::service
