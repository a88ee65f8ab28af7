// outer_io_bench: CPU per packet of the kernel interfaces the forwarder's
// outer side could send and receive plain ESP/IPv4 with (issue 13 item 3):
// today's raw sockets against AF_PACKET rings and sockets and AF_XDP, over a veth
// between two namespaces of its own. Not a test: it never fails on timing; a
// non-zero exit means a figure could not be measured (or, with --check, that
// a case received nothing).
//
// Trust: run as root on a machine the user controls; sends only between the
// two namespaces it creates (192.0.2.1 → 192.0.2.2) and removes them, and
// every thread it started, on every exit path.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "io_paths.h"
#include "testbed.h"

namespace outer_io {
namespace {

constexpr const char* kUsage = R"(NAME
    outer_io_bench - CPU per packet of raw sockets, packet rings and AF_XDP on the outer side

SYNOPSIS
    outer_io_bench [--seconds S] [--size N[,N...]] [--send a,b,c,d] [--receive 1,2,3]
                   [--xdp-generic] [--xsk-spin US] [--no-pin] [--check]

DESCRIPTION
    Creates two network namespaces (oio-<pid>-s and oio-<pid>-r) joined by a
    veth (192.0.2.1/24 and 192.0.2.2/24, no default route) and, for each case,
    blasts IPv4 protocol-50 packets (a valid IPv4 header, an 8-byte ESP header,
    random bytes) from a sender thread in the first to a receiver thread in the
    second, as fast as the sender can, for S seconds. Needs root.

    Send side (each a letter):
      a  an IPPROTO_RAW socket (IP_HDRINCL), sendmmsg of 32: the forwarder today
      b  AF_PACKET SOCK_RAW with PACKET_TX_RING (TPACKET_V2) and
         PACKET_QDISC_BYPASS, the Ethernet header written per frame (the
         receiving veth's MAC), one send(MSG_DONTWAIT) per 32 frames
      c  AF_PACKET SOCK_DGRAM, sendmmsg of 32 to the next hop's MAC
         (sll_addr), PACKET_QDISC_BYPASS, no ring
      d  AF_XDP in copy mode (XDP_COPY) on the veth: the packets written
         into its UMEM, 32 descriptors on its TX ring per sendto(), frames
         back through its completion ring (raw syscalls; no XDP program is
         needed to transmit)
    Receive side (each a digit):
      1  the raw ESP/IPv4 socket, recvmmsg of 64 (ipsecd's default)
      2  ipsecd's esp_ring: PACKET_RX_RING (lib/esp/esp_ring.h geometry and
         filter), the raw socket kept with a filter that takes nothing
      3  AF_XDP in copy mode (XDP_COPY, queue 0) on the receiving veth, with
         an XDP program (raw eBPF, loaded and attached with bpf(2): driver
         mode, else generic) that redirects IPv4 protocol-50 frames to
         192.0.2.2, unfragmented, into it through an XSKMAP before the IP
         stack, and passes every other frame; 4096 chunks of 2 KiB on its
         fill ring, up to 64 descriptors taken per turn; the program is
         detached (its bpf_link closed) at the end of the case

    Every pair is a case, a+1 first: it is the baseline of the ratios.

    Per case (a row): packets the sender handed to the kernel ("sent"),
    packets the receiver got, well formed and of the size sent ("received"),
    the receive rate over the sending time, the loss, and CPU per packet
    received, in microseconds:
      CPU us/p    the whole machine's busy time from /proc/stat (user, nice,
                  system, irq, softirq, all CPUs) over the case; on a veth
                  the receiver's network stack runs in the sender's softirq,
                  so only the whole machine sees the whole cost, but it also
                  sees every other process's
      send us/p   the sender thread's own user + system time (RUSAGE_THREAD;
                  this kernel's tick accounting counts the softirq run in a
                  thread's context to that thread)
      recv us/p   the receiver thread's
      sirqd us/p  the ksoftirqd threads' (softirq work the kernel deferred)
      thr us/p    the sum of the three: this case's own cost, which other
                  loads on the machine disturb far less than CPU us/p
    "busy%" is the machine's busy time over the case, in CPUs' worth (200 is
    both of two CPUs): when it is well above what the case's own threads used
    (thr us/p x kpps rx / 10), another load ran beside the case and CPU us/p
    is not usable. "vs a+1" divides CPU us/p by the baseline's, "thr a+1"
    divides thr us/p by the baseline's. "rx sl/kp" is how often the receiver
    slept (its voluntary context switches) per 1000 packets received: each
    sleep is a wake-up that the sender's softirq pays for. A line under a row
    gives the sender's refused sends, the receiver's malformed packets and where the
    lost ones went: the RX ring full, the raw socket's queue full, a CPU's
    input backlog full (netdev_max_backlog; machine-wide), and for (3) the
    socket's XDP_STATISTICS (dropped for its RX ring full, dropped for want
    of a chunk or too long for one, how often the kernel found its fill ring
    empty) and the mode the XDP program ran in.

OPTIONS
    --seconds S     how long each case sends (default 3; 0.05 to 60)
    --size LIST     IPv4 packet sizes in bytes, comma-separated, each 32 to
                    1500 (default 1438)
    --send LIST     send sides to run, comma-separated letters (default a,b,c,d)
    --receive LIST  receive sides to run, comma-separated digits (default 1,2,3)
    --xdp-generic   attach case (3)'s XDP program in generic (SKB) mode, where
                    it runs on an skb already built, instead of driver mode
    --xsk-spin US   case (3)'s receiver busy-polls its empty RX ring up to US
                    microseconds before it sleeps in poll() (default 0)
    --no-pin        do not pin the sender to CPU 0 and the receiver to CPU 1
                    (pinned by default when there are two CPUs or more)
    --check         exit 1 if a case received no packet (the smoke test)
    --help          this text

EXIT STATUS
    0 when every case was measured; 1 when a case could not be (setup
    failed, or with --check a case received nothing); 2 on bad usage or
    without root.

EXAMPLE
    sudo build/bin/outer_io_bench --seconds 3 --size 1438,100
)";

std::atomic<bool> interrupted{false};
extern "C" void onSignal(int) { interrupted.store(true); }

struct Options {
  double seconds = 3;
  std::vector<std::size_t> sizes{1438};
  std::vector<SendPath> sends{SendPath::kRawHeaderIncluded, SendPath::kTxRing, SendPath::kPacketDgram,
                              SendPath::kXdpCopy};
  std::vector<ReceivePath> receives{ReceivePath::kRawSocket, ReceivePath::kRxRing, ReceivePath::kXdp};
  bool pin = true;
  bool xdpGeneric = false;
  int xskSpinMicros = 0;
  bool check = false;
};

std::vector<std::string> splitCommas(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  return items;
}

Options parseOptions(int argc, char** argv) {
  Options o;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw std::invalid_argument(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--seconds") {
      o.seconds = std::stod(value(i));
      if (!(o.seconds >= 0.05 && o.seconds <= 60)) throw std::invalid_argument("--seconds must be 0.05 to 60");
    } else if (arg == "--size") {
      o.sizes.clear();
      for (const auto& s : splitCommas(value(i))) {
        const unsigned long size = std::stoul(s);
        if (size < 32 || size > 1500) throw std::invalid_argument("--size: each 32 to 1500");
        o.sizes.push_back(size);
      }
    } else if (arg == "--send") {
      o.sends.clear();
      for (const auto& s : splitCommas(value(i))) {
        if (s == "a") o.sends.push_back(SendPath::kRawHeaderIncluded);
        else if (s == "b") o.sends.push_back(SendPath::kTxRing);
        else if (s == "c") o.sends.push_back(SendPath::kPacketDgram);
        else if (s == "d") o.sends.push_back(SendPath::kXdpCopy);
        else throw std::invalid_argument("--send: a, b, c or d, not " + s);
      }
    } else if (arg == "--receive") {
      o.receives.clear();
      for (const auto& s : splitCommas(value(i))) {
        if (s == "1") o.receives.push_back(ReceivePath::kRawSocket);
        else if (s == "2") o.receives.push_back(ReceivePath::kRxRing);
        else if (s == "3") o.receives.push_back(ReceivePath::kXdp);
        else throw std::invalid_argument("--receive: 1, 2 or 3, not " + s);
      }
    } else if (arg == "--xdp-generic") {
      o.xdpGeneric = true;
    } else if (arg == "--xsk-spin") {
      o.xskSpinMicros = std::stoi(value(i));
      if (o.xskSpinMicros < 0 || o.xskSpinMicros > 10000) throw std::invalid_argument("--xsk-spin must be 0 to 10000");
    } else if (arg == "--no-pin") {
      o.pin = false;
    } else if (arg == "--check") {
      o.check = true;
    } else {
      throw std::invalid_argument("unknown option " + arg + " (see --help)");
    }
  }
  if (o.sizes.empty() || o.sends.empty() || o.receives.empty()) throw std::invalid_argument("an empty list");
  return o;
}

// The machine's busy and total time so far, in seconds (/proc/stat's first line).
struct MachineTime {
  double busy = 0, total = 0;
};

MachineTime readMachineTime() {
  std::ifstream stat("/proc/stat");
  std::string cpu;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  if (cpu != "cpu") throw std::runtime_error("/proc/stat: no cpu line");
  const double tick = 1.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  const auto busy = user + nice + system + irq + softirq;
  return {static_cast<double>(busy) * tick, static_cast<double>(busy + idle + iowait + steal) * tick};
}

// Packets the machine's CPUs dropped because their input backlog was full
// (netdev_max_backlog; a veth's receive goes through it): the second column of
// /proc/net/softnet_stat, summed. Machine-wide, not only this run's.
std::uint64_t backlogDrops() {
  std::ifstream stat("/proc/net/softnet_stat");
  std::uint64_t drops = 0;
  for (std::string processed, dropped; stat >> processed >> dropped;) {
    drops += std::stoull(dropped, nullptr, 16);
    std::string rest;
    std::getline(stat, rest);
  }
  return drops;
}

// The CPU time so far of the kernel's ksoftirqd threads (/proc/<pid>/stat's
// utime + stime): the softirq work the kernel deferred there instead of
// running it in the context of the thread that raised it.
double softirqThreadSeconds() {
  double seconds = 0;
  const double tick = 1.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line) || line.find("(ksoftirqd/") == std::string::npos) continue;
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    std::vector<std::string> f;
    for (std::string field; fields >> field && f.size() < 13;) f.push_back(field);
    if (f.size() == 13) seconds += static_cast<double>(std::stoull(f[11]) + std::stoull(f[12])) * tick;  // utime, stime
  }
  return seconds;
}

std::string loadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

struct CaseFigures {
  std::string name;
  std::uint64_t sent = 0, received = 0, senderErrors = 0, receiverErrors = 0, changed = 0, duplicates = 0, ringDrops = 0,
                socketDrops = 0, receiverSleeps = 0, xskRingFull = 0, xskDropped = 0, xskFillEmpty = 0, backlogDrops = 0;
  double sendSeconds = 0, machineBusy = 0, machineTotal = 0, senderCpu = 0, receiverCpu = 0, softirqCpu = 0;
  std::string error, note;
};

const char* sendName(SendPath p) {
  switch (p) {
    case SendPath::kRawHeaderIncluded: return "a";
    case SendPath::kTxRing: return "b";
    case SendPath::kPacketDgram: return "c";
    case SendPath::kXdpCopy: return "d";
  }
  return "?";
}

const char* receiveName(ReceivePath p) {
  switch (p) {
    case ReceivePath::kRawSocket: return "1";
    case ReceivePath::kRxRing: return "2";
    case ReceivePath::kXdp: return "3";
  }
  return "?";
}

// The two threads of a case, stopped and joined on every way out of runCase.
struct CaseThreads {
  CaseControl& control;
  std::thread sender, receiver;
  ~CaseThreads() {
    control.stopSending.store(true);
    control.stopReceiving.store(true);
    if (sender.joinable()) sender.join();
    if (receiver.joinable()) receiver.join();
  }
};

void sleepFor(double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end && !interrupted.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

CaseFigures runCase(const Testbed& bed, const Options& o, SendPath send, ReceivePath receive,
                    const std::vector<std::vector<std::uint8_t>>& packets) {
  CaseFigures f;
  f.name = std::string(sendName(send)) + "+" + receiveName(receive);
  const int cpus = static_cast<int>(std::thread::hardware_concurrency());
  const bool pin = o.pin && cpus >= 2;
  SendTarget target{bed.senderNamespace(), bed.senderIfindex(), bed.senderMac(), bed.receiverMac(), pin ? 0 : -1};
  ReceiveTarget receiver{bed.receiverNamespace(), bed.receiverIfindex(), pin ? 1 : -1, o.xdpGeneric, o.xskSpinMicros};
  CaseControl control;
  ThreadResult sent, received;
  {
    CaseThreads threads{control, {}, {}};
    threads.receiver = std::thread(runReceiver, receive, std::cref(receiver), packets[0].size(), std::ref(control),
                                   std::ref(received));
    threads.sender = std::thread(runSender, send, std::cref(target), std::cref(packets), std::ref(control),
                                 std::ref(sent));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (control.ready.load() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (control.ready.load() < 2) {
      f.error = "a thread's sockets were not ready within 5 s";
      return f;
    }
    // The /proc scans stay outside the machine's interval: they are the main thread's work, not the case's.
    const std::uint64_t backlogBefore = backlogDrops();
    const double softirqBefore = softirqThreadSeconds();
    const MachineTime before = readMachineTime();
    const auto start = std::chrono::steady_clock::now();
    control.go.store(true);
    sleepFor(o.seconds);
    control.stopSending.store(true);
    threads.sender.join();
    f.sendSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    sleepFor(0.1);  // what is still in flight reaches the receiver
    control.stopReceiving.store(true);
    threads.receiver.join();
    const MachineTime after = readMachineTime();
    f.softirqCpu = softirqThreadSeconds() - softirqBefore;
    f.machineBusy = after.busy - before.busy;
    f.machineTotal = after.total - before.total;
    f.backlogDrops = backlogDrops() - backlogBefore;
  }
  f.error = !sent.error.empty() ? "sender: " + sent.error : !received.error.empty() ? "receiver: " + received.error : "";
  f.sent = sent.packets;
  f.received = received.packets;
  f.senderErrors = sent.errors;
  f.receiverErrors = received.errors;
  f.changed = received.changed;
  f.duplicates = received.duplicates;
  f.ringDrops = received.ringDrops;
  f.socketDrops = received.socketDrops;
  f.xskRingFull = received.xskRingFull;
  f.xskDropped = received.xskDropped;
  f.xskFillEmpty = received.xskFillEmpty;
  f.note = received.note;
  f.senderCpu = sent.cpuSeconds;
  f.receiverCpu = received.cpuSeconds;
  f.receiverSleeps = received.sleeps;
  return f;
}

double microsPer(double seconds, std::uint64_t packets) {
  return packets == 0 ? 0 : seconds * 1e6 / static_cast<double>(packets);
}

void printTable(std::size_t size, const std::vector<CaseFigures>& rows) {
  std::printf("%-5s %5s %9s %9s %7s %6s %5s %8s %9s %9s %9s %9s %6s %7s %8s\n", "case", "size", "sent", "received",
              "kpps rx", "loss%", "busy%", "CPU us/p", "send us/p", "recv us/p", "sirqd us/p", "thr us/p", "vs a+1",
              "thr a+1", "rx sl/kp");
  const CaseFigures* base = rows.empty() || rows[0].name != "a+1" || !rows[0].error.empty() ? nullptr : &rows[0];
  for (const auto& r : rows) {
    if (!r.error.empty()) {
      std::printf("%-5s %5zu  not measured: %s\n", r.name.c_str(), size, r.error.c_str());
      continue;
    }
    const double cpu = microsPer(r.machineBusy, r.received);
    const double threads = microsPer(r.senderCpu + r.receiverCpu + r.softirqCpu, r.received);
    const double loss = r.sent == 0 ? 0 : 100.0 * (1.0 - static_cast<double>(r.received) / static_cast<double>(r.sent));
    std::string ratio = "-", threadRatio = "-";
    if (base != nullptr && base->received > 0 && r.received > 0) {
      char text[32];
      std::snprintf(text, sizeof text, "%.2f", cpu / microsPer(base->machineBusy, base->received));
      ratio = text;
      std::snprintf(text, sizeof text, "%.2f",
                    threads / microsPer(base->senderCpu + base->receiverCpu + base->softirqCpu, base->received));
      threadRatio = text;
    }
    std::printf("%-5s %5zu %9llu %9llu %7.1f %6.1f %5.0f %8.3f %9.3f %9.3f %10.3f %8.3f %6s %7s %8.1f\n", r.name.c_str(), size,
                static_cast<unsigned long long>(r.sent), static_cast<unsigned long long>(r.received),
                static_cast<double>(r.received) / r.sendSeconds / 1e3, loss,
                r.machineTotal > 0 ? 100.0 * r.machineBusy / r.machineTotal * std::thread::hardware_concurrency() : 0,
                cpu, microsPer(r.senderCpu, r.received), microsPer(r.receiverCpu, r.received),
                microsPer(r.softirqCpu, r.received), threads, ratio.c_str(),
                threadRatio.c_str(), r.received == 0 ? 0.0 : 1e3 * static_cast<double>(r.receiverSleeps) / static_cast<double>(r.received));
    if (r.senderErrors + r.receiverErrors + r.ringDrops + r.socketDrops + r.backlogDrops > 0) {
      std::printf("      (sender refusals %llu; receiver bad %llu, of which changed on the way %llu, duplicates %llu;"
                  " drops: rx ring full %llu, raw socket queue full %llu, backlog full %llu)\n",
                  static_cast<unsigned long long>(r.senderErrors), static_cast<unsigned long long>(r.receiverErrors),
                  static_cast<unsigned long long>(r.changed), static_cast<unsigned long long>(r.duplicates),
                  static_cast<unsigned long long>(r.ringDrops), static_cast<unsigned long long>(r.socketDrops),
                  static_cast<unsigned long long>(r.backlogDrops));
    }
    if (!r.note.empty()) {
      std::printf("      (%s; xsk drops: rx ring full %llu, no chunk or too long %llu; fill ring found empty %llu)\n",
                  r.note.c_str(), static_cast<unsigned long long>(r.xskRingFull),
                  static_cast<unsigned long long>(r.xskDropped), static_cast<unsigned long long>(r.xskFillEmpty));
    }
  }
  std::fflush(stdout);
}

int run(const Options& o) {
  Testbed bed;
  std::printf("outer_io_bench: %u CPUs, %s, %.2f s per case, load average %s\n", std::thread::hardware_concurrency(),
              o.pin ? "sender pinned to CPU 0 and receiver to CPU 1" : "not pinned", o.seconds,
              loadAverage().c_str());
  bool measured = true;
  for (std::size_t size : o.sizes) {
    const auto packets = makePackets(size);
    std::vector<CaseFigures> rows;
    for (SendPath send : o.sends) {
      for (ReceivePath receive : o.receives) {
        if (interrupted.load()) return 1;
        rows.push_back(runCase(bed, o, send, receive, packets));
        const auto& r = rows.back();
        if (!r.error.empty() || (o.check && r.received == 0)) measured = false;
      }
    }
    printTable(size, rows);
    std::printf("load average after size %zu: %s\n", size, loadAverage().c_str());
  }
  return measured ? 0 : 1;
}

}  // namespace
}  // namespace outer_io

int main(int argc, char** argv) {
  using namespace outer_io;
  Options options;
  try {
    options = parseOptions(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "outer_io_bench: %s\n", e.what());
    return 2;
  }
  if (geteuid() != 0) {
    std::fprintf(stderr, "outer_io_bench: must run as root (it creates network namespaces and raw sockets)\n");
    return 2;
  }
  struct sigaction action{};
  action.sa_handler = onSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  try {
    return run(options);  // the Testbed's destructor removes the namespaces, also on an exception
  } catch (const std::exception& e) {
    std::fprintf(stderr, "outer_io_bench: %s\n", e.what());
    return 1;
  }
}
