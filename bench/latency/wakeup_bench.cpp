// wakeup_bench: what one cross-process wake-up costs on this machine, the unit
// of a ping's time through the tunnel (bench/latency/ping_stages.py counts the
// wake-ups; this prices them). Two processes ping-pong a counter:
//
//   epoll  the waiter sleeps in epoll_wait() on an eventfd, as the forwarder's
//          and the broker's asio loops do, then read()s it; the sender write()s
//   read   the waiter sleeps in a blocking read() on the eventfd (no epoll)
//   spin   the waiter spins on a counter in shared memory: no syscall, no
//          sleep (the floor: what busy polling would cost per hand-off)
//
// each with the two processes unpinned, pinned to two different CPUs, or
// pinned to the same CPU (spin on one CPU is skipped: the spinner would hold
// the CPU its peer needs). The sender stamps CLOCK_MONOTONIC into shared
// memory just before it signals; the waiter reads the clock as soon as it
// wakes, so each sample is one one-way hand-off, wake-up included. A gap
// between rounds lets the CPUs go idle first, as they do between pings 10 ms
// apart. Prints median, p90 and p99 in µs and the median time the sender spent
// in its write() (the doorbell's cost to whoever rings it).
//
// Trust: a benchmark; it reads only its own shared memory. No root needed.
// Every case is bounded by --seconds; the child dies with its parent
// (PR_SET_PDEATHSIG) and after an alarm() in any case.

#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::size_t kMaxSamples = 1 << 16;  // per direction and case

enum class Wait { kEpoll, kRead, kSpin };
enum class Pin { kNone, kSplit, kSame };

struct Case {
  Wait wait;
  Pin pin;
  unsigned gapUs;
};

// One direction's hand-off, each on its own cache line so that the spinning
// waiter's line moves only when its sender writes it.
struct alignas(64) Lane {
  std::atomic<std::uint64_t> seq{0};      // the round the sender signalled
  std::atomic<std::uint64_t> stampNs{0};  // when, just before signalling
};

struct Shared {
  Lane toChild, toParent;
  alignas(64) std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> childSamples{0};
  std::uint64_t childLatencyNs[kMaxSamples];
};

struct Options {
  double seconds = 0.5;  // per case
  std::vector<unsigned> gapsUs = {0, 1000};
  int cpuA = 0, cpuB = 1;
};

std::uint64_t nowNs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}

void pinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    std::perror("sched_setaffinity");
    std::exit(1);
  }
}

// One end of the ping-pong: waits on `in` (its eventfd `inFd`), signals `out`.
class End {
 public:
  End(Wait wait, Lane& in, Lane& out, int inFd, int outFd) noexcept
      : wait_(wait), in_(in), out_(out), inFd_(inFd), outFd_(outFd) {
    if (wait_ == Wait::kEpoll) {
      epollFd_ = epoll_create1(EPOLL_CLOEXEC);
      epoll_event ev{};
      ev.events = EPOLLIN;
      epoll_ctl(epollFd_, EPOLL_CTL_ADD, inFd_, &ev);
    }
  }
  ~End() {
    if (epollFd_ >= 0) close(epollFd_);
  }
  End(const End&) = delete;
  End& operator=(const End&) = delete;

  // Signals round `seq`; returns the ns spent signalling (the doorbell's cost).
  std::uint64_t signal(std::uint64_t seq) noexcept {
    std::uint64_t before = nowNs();
    out_.stampNs.store(before, std::memory_order_relaxed);
    out_.seq.store(seq, std::memory_order_release);
    if (wait_ == Wait::kSpin) return 0;
    std::uint64_t one = 1;
    if (write(outFd_, &one, sizeof one) != sizeof one) std::perror("write eventfd");
    return nowNs() - before;
  }

  // Waits for round `seq` or stop; returns the one-way latency in ns, or 0 on stop.
  std::uint64_t waitFor(std::uint64_t seq, const std::atomic<bool>& stop) noexcept {
    if (wait_ == Wait::kSpin) {
      while (in_.seq.load(std::memory_order_acquire) < seq) {
        if (stop.load(std::memory_order_relaxed)) return 0;
      }
    } else {
      while (in_.seq.load(std::memory_order_acquire) < seq) {
        if (stop.load(std::memory_order_relaxed)) return 0;
        if (wait_ == Wait::kEpoll) {
          epoll_event ev;
          if (epoll_wait(epollFd_, &ev, 1, 1000) <= 0) continue;
        }
        std::uint64_t count;
        if (read(inFd_, &count, sizeof count) < 0 && errno != EINTR) std::perror("read eventfd");
      }
    }
    std::uint64_t woke = nowNs();
    return woke - in_.stampNs.load(std::memory_order_relaxed);
  }

 private:
  Wait wait_;
  Lane& in_;
  Lane& out_;
  int inFd_, outFd_;
  int epollFd_ = -1;
};

void childLoop(const Case& c, const Options& o, Shared& sh, int toChildFd, int toParentFd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  alarm(unsigned(o.seconds) + 10);  // a bound even if the parent hangs
  if (c.pin == Pin::kSplit) pinTo(o.cpuB);
  if (c.pin == Pin::kSame) pinTo(o.cpuA);
  End end(c.wait, sh.toChild, sh.toParent, toChildFd, toParentFd);
  for (std::uint64_t seq = 1;; ++seq) {
    std::uint64_t latency = end.waitFor(seq, sh.stop);
    if (latency == 0) break;
    std::uint64_t n = sh.childSamples.load(std::memory_order_relaxed);
    if (n < kMaxSamples) sh.childLatencyNs[n] = latency;
    sh.childSamples.store(n + 1, std::memory_order_relaxed);
    end.signal(seq);
  }
  _exit(0);
}

void sleepUs(unsigned us) {
  timespec ts{time_t(us / 1000000), long(us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

double percentileUs(std::vector<std::uint64_t>& v, double p) {
  if (v.empty()) return 0;
  std::size_t i = std::min(v.size() - 1, std::size_t(p * double(v.size())));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(i), v.end());
  return double(v[i]) / 1e3;
}

const char* name(Wait w) { return w == Wait::kEpoll ? "epoll" : w == Wait::kRead ? "read" : "spin"; }
const char* name(Pin p) { return p == Pin::kNone ? "unpinned" : p == Pin::kSplit ? "2 CPUs" : "1 CPU"; }

// Runs one case for o.seconds and prints its line.
bool runCase(const Case& c, const Options& o) {
  auto* sh = static_cast<Shared*>(
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (sh == MAP_FAILED) return std::perror("mmap"), false;
  new (sh) Shared();
  int toChildFd = eventfd(0, EFD_CLOEXEC), toParentFd = eventfd(0, EFD_CLOEXEC);
  if (toChildFd < 0 || toParentFd < 0) return std::perror("eventfd"), false;
  std::fflush(stdout);
  pid_t child = fork();
  if (child < 0) return std::perror("fork"), false;
  if (child == 0) childLoop(c, o, *sh, toChildFd, toParentFd);

  cpu_set_t all;
  sched_getaffinity(0, sizeof all, &all);
  if (c.pin != Pin::kNone) pinTo(o.cpuA);
  std::vector<std::uint64_t> latencies, signalNs;
  {
    End end(c.wait, sh->toParent, sh->toChild, toParentFd, toChildFd);
    std::uint64_t deadline = nowNs() + std::uint64_t(o.seconds * 1e9);
    for (std::uint64_t seq = 1; nowNs() < deadline && latencies.size() < kMaxSamples; ++seq) {
      if (c.gapUs) sleepUs(c.gapUs);
      signalNs.push_back(end.signal(seq));
      std::uint64_t latency = end.waitFor(seq, sh->stop);
      if (latency == 0) break;
      latencies.push_back(latency);
    }
  }
  sh->stop.store(true);
  std::uint64_t one = 1;
  if (write(toChildFd, &one, sizeof one) < 0) std::perror("write eventfd");
  int status = 0;
  waitpid(child, &status, 0);
  sched_setaffinity(0, sizeof all, &all);

  std::size_t childN = std::min<std::uint64_t>(sh->childSamples.load(), kMaxSamples);
  latencies.insert(latencies.end(), sh->childLatencyNs, sh->childLatencyNs + childN);
  double sig = c.wait == Wait::kSpin ? 0 : percentileUs(signalNs, 0.5);
  std::printf("%-6s %-9s %7u %8zu %9.2f %9.2f %9.2f %11.2f\n", name(c.wait), name(c.pin), c.gapUs,
              latencies.size(), percentileUs(latencies, 0.5), percentileUs(latencies, 0.9),
              percentileUs(latencies, 0.99), sig);
  close(toChildFd);
  close(toParentFd);
  munmap(sh, sizeof(Shared));
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

[[noreturn]] void usage(const char* why) {
  if (why) std::fprintf(stderr, "wakeup_bench: %s\n", why);
  std::fprintf(why ? stderr : stdout,
               "usage: wakeup_bench [--seconds S] [--gaps US,US...] [--cpus A,B]\n"
               "  Ping-pongs a counter between two processes through eventfds (waiter in epoll_wait\n"
               "  or read) and through shared memory (waiter spinning), unpinned, on two CPUs and on\n"
               "  one, and prints each one-way hand-off's latency (median, p90, p99 in us) and the\n"
               "  median time the sender spends in its eventfd write().\n"
               "  --seconds S   per case (default 0.5; 8 cases per gap)\n"
               "  --gaps LIST   us slept before each round, so the CPUs go idle (default 0,1000)\n"
               "  --cpus A,B    the two CPUs for the pinned cases (default 0,1)\n");
  std::exit(why ? 2 : 0);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") usage(nullptr);
    if (arg != "--seconds" && arg != "--gaps" && arg != "--cpus") usage("unknown option");
    if (i + 1 >= argc) usage("an option lacks its value");
    std::string value = argv[++i];
    if (arg == "--seconds") {
      o.seconds = std::atof(value.c_str());
      if (!(o.seconds > 0 && o.seconds <= 60)) usage("--seconds is in (0, 60]");
    } else if (arg == "--gaps") {
      o.gapsUs.clear();
      for (char* p = value.data(); *p;) {
        char* end;
        long us = std::strtol(p, &end, 10);
        if (end == p || us < 0 || us > 1000000) usage("--gaps is a list of 0..1000000");
        o.gapsUs.push_back(unsigned(us));
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') usage("--gaps is a comma-separated list");
      }
    } else {
      if (std::sscanf(value.c_str(), "%d,%d", &o.cpuA, &o.cpuB) != 2 || o.cpuA < 0 || o.cpuB < 0)
        usage("--cpus is A,B");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  std::printf("one-way hand-off latency between two processes, us (CPUs online: %ld)\n",
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("%-6s %-9s %7s %8s %9s %9s %9s %11s\n", "wait", "pinning", "gap_us", "samples", "median", "p90",
              "p99", "write_med");
  bool ok = true;
  for (unsigned gap : o.gapsUs) {
    for (Wait w : {Wait::kEpoll, Wait::kRead, Wait::kSpin}) {
      for (Pin p : {Pin::kNone, Pin::kSplit, Pin::kSame}) {
        if (w == Wait::kSpin && p == Pin::kSame) continue;  // the spinner would starve its peer
        ok &= runCase({w, p, gap}, o);
      }
    }
  }
  return ok ? 0 : 1;
}
