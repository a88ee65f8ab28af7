// udpgen: a paced UDP generator and a counting receiver for the comparison
// benchmark (bench/compare.py), which runs one in each namespace of its test
// bed to find the highest rate of small datagrams a path carries at <= 1 % loss.
// iperf3 sends one datagram per syscall and tops out below what a plain veth
// carries here; this sends bursts with sendmmsg and receives with recvmmsg.
//
//   udpgen send DST PORT --pps N --seconds S [--size B] [--run ID] [--gso N]
//   udpgen recv ADDR PORT --seconds S [--run ID] [--idle-ms MS]
//
// Each prints one JSON line at the end. The sender paces to N datagrams/s
// against the monotonic clock (bursts of up to 32, a sleep when ahead) and
// reports what the kernel accepted; the receiver prints "ready PORT" once bound,
// then counts datagrams carrying its run id (a late datagram of an earlier run
// is not counted) until S seconds pass or MS ms pass without one after the
// first. --gso N sends N datagrams per message with UDP_SEGMENT: the kernel
// cuts them apart (in software before a device without UDP GSO, such as a TUN;
// at the receiving socket over a veth), so the sender's cost per datagram falls
// and the path, not the generator, sets the rate. Trust: a benchmark tool run by root inside the test bed's namespaces;
// it reads nothing but datagrams, and only their first 16 bytes.

#include <arpa/inet.h>
#include <linux/udp.h>  // UDP_SEGMENT
#include <netinet/in.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr int kBurst = 32;
constexpr size_t kMaxPayload = 1472;
constexpr size_t kTagBytes = 16;  // run id, sequence number

struct Options {
  std::string mode, addr, port;
  double pps = 10000, seconds = 1;
  size_t size = 64;
  uint64_t run = 1;
  int idleMs = 300;
  uint64_t gso = 1;  // datagrams per message (UDP_SEGMENT); 1: none
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "udpgen: %s\n"
               "usage: udpgen send DST PORT --pps N --seconds S [--size B] [--run ID] [--gso N]\n"
               "       udpgen recv ADDR PORT --seconds S [--run ID] [--idle-ms MS]\n",
               why);
  std::exit(2);
}

double number(const char* text, const char* what) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(v >= 0)) usage(what);
  return v;
}

Options parse(int argc, char** argv) {
  if (argc < 4) usage("too few arguments");
  Options o{argv[1], argv[2], argv[3]};
  if (o.mode != "send" && o.mode != "recv") usage("mode is send or recv");
  for (int i = 4; i < argc; i += 2) {
    std::string_view flag = argv[i];
    if (i + 1 >= argc) usage("an option lacks its value");
    const char* v = argv[i + 1];
    if (flag == "--pps") o.pps = number(v, "bad --pps");
    else if (flag == "--seconds") o.seconds = number(v, "bad --seconds");
    else if (flag == "--size") o.size = static_cast<size_t>(number(v, "bad --size"));
    else if (flag == "--run") o.run = static_cast<uint64_t>(number(v, "bad --run"));
    else if (flag == "--idle-ms") o.idleMs = static_cast<int>(number(v, "bad --idle-ms"));
    else if (flag == "--gso") o.gso = static_cast<uint64_t>(number(v, "bad --gso"));
    else usage("unknown option");
  }
  if (o.size < kTagBytes || o.size > kMaxPayload) usage("--size is 16..1472");
  if (o.gso < 1 || o.gso > 64 || o.gso * o.size > 65000) usage("--gso is 1..64, and --gso x --size at most 65000");
  if (o.pps < 1 || o.seconds <= 0 || o.seconds > 600) usage("--pps >= 1, --seconds in (0, 600]");
  return o;
}

double now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// A datagram socket for addr:port (numeric only), connected when sending, bound when receiving.
int openSocket(const Options& o) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(o.addr.c_str(), o.port.c_str(), &hints, &found) != 0 || !found) usage("bad address or port");
  int fd = socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int rc = o.mode == "send" ? connect(fd, found->ai_addr, found->ai_addrlen)
                            : bind(fd, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  if (rc != 0) throw std::runtime_error(std::string(o.mode == "send" ? "connect: " : "bind: ") + std::strerror(errno));
  // Big buffers, so that a short stall of the reader is not what the figure measures.
  int bytes = 8 << 20;
  setsockopt(fd, SOL_SOCKET, o.mode == "send" ? SO_SNDBUFFORCE : SO_RCVBUFFORCE, &bytes, sizeof bytes);
  return fd;
}

// One call's worth of datagrams: kBurst messages of up to o.gso datagrams each
// (UDP_SEGMENT cuts a message into datagrams of o.size bytes).
class Burst {
 public:
  explicit Burst(const Options& o) : o_(o), bytes_(kBurst * o.gso * o.size) {}

  // Frames datagrams sent .. sent+n-1 (n <= capacity()); returns the number of messages.
  int frame(uint64_t sent, uint64_t n) {
    int messages = 0;
    for (uint64_t k = 0; k < n; ++k) {
      unsigned char* at = bytes_.data() + k * o_.size;
      uint64_t seq = sent + k;
      std::memcpy(at, &o_.run, 8);
      std::memcpy(at + 8, &seq, 8);
    }
    for (uint64_t first = 0; first < n; first += o_.gso, ++messages) {
      uint64_t segments = std::min<uint64_t>(o_.gso, n - first);
      iov_[messages] = {bytes_.data() + first * o_.size, segments * o_.size};
      segments_[messages] = segments;
      msgs_[messages] = {};
      msgs_[messages].msg_hdr.msg_iov = &iov_[messages];
      msgs_[messages].msg_hdr.msg_iovlen = 1;
    }
    return messages;
  }

  mmsghdr* messages() { return msgs_.data(); }
  uint64_t capacity() const { return kBurst * o_.gso; }
  // Datagrams in the first `messages` messages.
  uint64_t datagrams(int messages) const {
    uint64_t total = 0;
    for (int i = 0; i < messages; ++i) total += segments_[i];
    return total;
  }

 private:
  const Options& o_;
  std::vector<unsigned char> bytes_;
  std::array<iovec, kBurst> iov_{};
  std::array<mmsghdr, kBurst> msgs_{};
  std::array<uint64_t, kBurst> segments_{};
};

void send(const Options& o) {
  int fd = openSocket(o);
  if (o.gso > 1) {
    int size = static_cast<int>(o.size);
    if (setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &size, sizeof size) != 0)
      throw std::runtime_error(std::string("UDP_SEGMENT: ") + std::strerror(errno));
  }
  Burst burst(o);
  // Datagram k is due k/pps seconds after the start. A call waits until `batch`
  // are due (at most 1 ms of them), so a fast rate costs one syscall per burst.
  const uint64_t batch = std::clamp<uint64_t>(static_cast<uint64_t>(o.pps / 1000), 1, burst.capacity());
  uint64_t sent = 0, refused = 0;
  const double start = now(), end = start + o.seconds;
  for (double t = start; t < end; t = now()) {
    uint64_t due = static_cast<uint64_t>((t - start) * o.pps) + 1;
    if (due < sent + batch) {
      double wait = static_cast<double>(sent + batch - 1) / o.pps - (t - start);
      timespec ts{0, static_cast<long>(std::min(wait, end - t) * 1e9)};
      nanosleep(&ts, nullptr);
      continue;
    }
    int messages = burst.frame(sent, std::min(due - sent, burst.capacity()));
    int done = sendmmsg(fd, burst.messages(), static_cast<unsigned>(messages), 0);
    if (done >= 0) sent += burst.datagrams(done);
    // A full queue, or an ICMP error from an earlier datagram: go on.
    else if (errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED) ++refused;
    else throw std::runtime_error(std::string("sendmmsg: ") + std::strerror(errno));
  }
  double took = now() - start;
  std::printf("{\"sent\": %llu, \"seconds\": %.6f, \"pps\": %.1f, \"offered_pps\": %.1f, \"refused_calls\": %llu}\n",
              static_cast<unsigned long long>(sent), took, static_cast<double>(sent) / took, o.pps,
              static_cast<unsigned long long>(refused));
  close(fd);
}

void receive(const Options& o) {
  int fd = openSocket(o);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  uint16_t port = bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&bound)->sin_port;
  std::printf("ready %u\n", ntohs(port));  // the port bound, for a receiver asked for port 0
  std::fflush(stdout);
  std::vector<std::array<unsigned char, kTagBytes>> heads(kBurst);
  std::array<iovec, kBurst> iov{};
  std::array<mmsghdr, kBurst> msgs{};
  uint64_t received = 0, foreign = 0;
  double first = 0, last = 0;
  const double end = now() + o.seconds;
  for (;;) {
    double t = now();
    if (t >= end || (received && (t - last) * 1000 >= o.idleMs)) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0) continue;
    for (int i = 0; i < kBurst; ++i) {
      iov[i] = {heads[i].data(), kTagBytes};  // the tag is all we read; the rest is truncated
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, msgs.data(), kBurst, MSG_DONTWAIT, nullptr);
    if (n <= 0) continue;
    last = now();
    for (int i = 0; i < n; ++i) {
      uint64_t run = 0;
      if (msgs[i].msg_len >= 8) std::memcpy(&run, heads[i].data(), 8);
      if (run == o.run) {
        if (!received) first = last;
        ++received;
      } else {
        ++foreign;
      }
    }
  }
  std::printf("{\"received\": %llu, \"foreign\": %llu, \"seconds\": %.6f}\n", static_cast<unsigned long long>(received),
              static_cast<unsigned long long>(foreign), received ? last - first : 0.0);
  close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  try {
    if (o.mode == "send") send(o);
    else receive(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "udpgen: %s\n", e.what());
    return 1;
  }
  return 0;
}
