// See io_paths.h.
#include "io_paths.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_xdp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <span>
#include <stdexcept>

#include "checksum/internet.h"
#include "esp/esp_ring.h"
#include "testbed.h"
#include "xdp_redirect.h"

namespace outer_io {

namespace {

class Fd {
 public:
  explicit Fd(int fd, const char* what) : fd_(fd) {
    if (fd_ < 0) throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
  }
  ~Fd() { close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

class Mapping {
 public:
  Mapping(int fd, std::size_t bytes, off_t offset = 0) : bytes_(bytes) {
    base_ = fd < 0 ? mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                   : mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset);
    if (base_ == MAP_FAILED) throw std::runtime_error(std::string("mmap ring: ") + std::strerror(errno));
  }
  ~Mapping() { munmap(base_, bytes_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::uint8_t* frame(std::size_t index, std::size_t frameSize) const {
    return static_cast<std::uint8_t*>(base_) + index * frameSize;
  }
  std::uint8_t* at(std::uint64_t offset) const { return static_cast<std::uint8_t*>(base_) + offset; }

 private:
  void* base_;
  std::size_t bytes_;
};

void setOption(int fd, int level, int name, int value, const char* what) {
  if (setsockopt(fd, level, name, &value, sizeof value) != 0) {
    throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
  }
}

void pinTo(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);  // best effort: a figure without pinning is still one
}

double threadCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// The calling thread's voluntary context switches so far: how often it slept.
std::uint64_t threadSleeps() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return static_cast<std::uint64_t>(usage.ru_nvcsw);
}

// Announces the thread ready and waits (bounded by the main thread, which
// sets stopSending and stopReceiving if a case is abandoned) for go.
bool waitForGo(CaseControl& control, const std::atomic<bool>& stop) {
  control.ready.fetch_add(1);
  while (!control.go.load() && !stop.load()) usleep(200);
  return !stop.load();
}

std::uint16_t ipv4Checksum(const std::uint8_t* header) {
  std::uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += static_cast<std::uint32_t>(header[i] << 8 | header[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

// Every packet sent carries a number of its own twice: as its ESP sequence
// number and in its last 4 bytes. A receiver that finds the two different
// read a packet whose bytes changed while it was on its way (a frame given
// back to the sender too early); one that finds a number twice read a later
// packet's bytes in place of an earlier one's.
void stamp(std::uint8_t* packet, std::size_t size, std::uint32_t number) {
  std::memcpy(packet + 24, &number, sizeof number);
  std::memcpy(packet + size - sizeof number, &number, sizeof number);
}

void waitWritable(int fd) {
  pollfd p{fd, POLLOUT, 0};
  poll(&p, 1, 10);
}

// --- senders ---------------------------------------------------------------

// The sendmmsg loop of cases (a) and (c): kSendBatch packets a call, each to
// `to` (the socket's kind of address), stamped anew before each call.
void sendmmsgLoop(int fd, const void* to, socklen_t toLength, const std::vector<std::vector<std::uint8_t>>& packets,
                  CaseControl& control, ThreadResult& result) {
  auto pool = packets;  // stamped before each send: the kernel copies them during the call
  std::array<mmsghdr, kSendBatch> msgs{};
  std::array<iovec, kSendBatch> iovs{};
  for (std::size_t i = 0; i < kSendBatch; ++i) {
    iovs[i] = {pool[i].data(), pool[i].size()};
    msgs[i].msg_hdr = {const_cast<void*>(to), toLength, &iovs[i], 1, nullptr, 0, 0};
  }
  if (!waitForGo(control, control.stopSending)) return;
  const double cpu0 = threadCpuSeconds();
  std::uint32_t number = 0;
  while (!control.stopSending.load(std::memory_order_relaxed)) {
    for (auto& p : pool) stamp(p.data(), p.size(), ++number);
    const int n = sendmmsg(fd, msgs.data(), kSendBatch, MSG_DONTWAIT);
    if (n > 0) {
      result.packets += static_cast<std::uint64_t>(n);
    } else {
      ++result.errors;
      if (errno == EAGAIN || errno == ENOBUFS) waitWritable(fd);
    }
  }
  result.cpuSeconds = threadCpuSeconds() - cpu0;
}

void sendRawHeaderIncluded(const std::vector<std::vector<std::uint8_t>>& packets, CaseControl& control,
                           ThreadResult& result) {
  // As ipsecd's openHeaderIncludedSocket: IP_HDRINCL is implied by IPPROTO_RAW.
  Fd fd(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW), "socket(AF_INET, SOCK_RAW, IPPROTO_RAW)");
  setOption(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20, "SO_SNDBUFFORCE");
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  inet_pton(AF_INET, "192.0.2.2", &dst.sin_addr);
  sendmmsgLoop(fd.get(), &dst, sizeof dst, packets, control, result);
}

sockaddr_ll linkAddress(const SendTarget& target) {
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_IP);
  addr.sll_ifindex = target.ifindex;
  addr.sll_halen = ETH_ALEN;
  std::memcpy(addr.sll_addr, target.nextHopMac.data(), ETH_ALEN);
  return addr;
}

// The Ethernet header cases (b) and (d) write in front of each packet: to the
// next hop, from the sender's veth end, IPv4.
std::array<std::uint8_t, ETH_HLEN> ethernetHeader(const SendTarget& target) {
  std::array<std::uint8_t, ETH_HLEN> ethernet{};
  std::memcpy(ethernet.data(), target.nextHopMac.data(), ETH_ALEN);
  std::memcpy(ethernet.data() + ETH_ALEN, target.sourceMac.data(), ETH_ALEN);
  ethernet[12] = ETH_P_IP >> 8;
  ethernet[13] = ETH_P_IP & 0xff;
  return ethernet;
}

// TX ring geometry: 1024 frames of 2 KiB (an Ethernet frame of up to 1500
// bytes of IP and the frame header), 2 MiB.
constexpr std::uint32_t kTxFrameSize = 2048;
constexpr std::uint32_t kTxBlockSize = 65536;
constexpr std::uint32_t kTxBlocks = 32;
constexpr std::uint32_t kTxFrames = kTxBlocks * (kTxBlockSize / kTxFrameSize);
// Where a V2 frame's data goes without PACKET_TX_HAS_OFF (tpacket_snd's default).
constexpr std::size_t kTxDataOffset = TPACKET2_HDRLEN - sizeof(sockaddr_ll);

void sendTxRing(const SendTarget& target, const std::vector<std::vector<std::uint8_t>>& packets, CaseControl& control,
                ThreadResult& result) {
  // Protocol 0: the socket receives nothing.
  Fd fd(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0), "socket(AF_PACKET, SOCK_RAW)");
  setOption(fd.get(), SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
  setOption(fd.get(), SOL_PACKET, PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS");
  tpacket_req ring{kTxBlockSize, kTxBlocks, kTxFrameSize, kTxFrames};
  if (setsockopt(fd.get(), SOL_PACKET, PACKET_TX_RING, &ring, sizeof ring) != 0) {
    throw std::runtime_error(std::string("PACKET_TX_RING: ") + std::strerror(errno));
  }
  Mapping map(fd.get(), std::size_t{kTxBlockSize} * kTxBlocks);
  sockaddr_ll self = linkAddress(target);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&self), sizeof self) != 0) {
    throw std::runtime_error(std::string("bind(AF_PACKET): ") + std::strerror(errno));
  }
  const std::array<std::uint8_t, ETH_HLEN> ethernet = ethernetHeader(target);
  if (!waitForGo(control, control.stopSending)) return;
  const double cpu0 = threadCpuSeconds();
  std::size_t next = 0, packet = 0;
  std::uint32_t number = 0;
  while (!control.stopSending.load(std::memory_order_relaxed)) {
    std::size_t queued = 0;
    for (; queued < kSendBatch; ++queued) {
      auto* header = reinterpret_cast<tpacket2_hdr*>(map.frame(next, kTxFrameSize));
      const std::uint32_t status = __atomic_load_n(&header->tp_status, __ATOMIC_ACQUIRE);
      if (status == TP_STATUS_WRONG_FORMAT) ++result.errors;  // refused by the kernel: reuse the frame
      else if (status != TP_STATUS_AVAILABLE) break;          // the ring is full: send what is queued
      const auto& p = packets[packet++ % packets.size()];
      std::uint8_t* data = map.frame(next, kTxFrameSize) + kTxDataOffset;
      std::memcpy(data, ethernet.data(), ethernet.size());
      std::memcpy(data + ethernet.size(), p.data(), p.size());
      stamp(data + ethernet.size(), p.size(), ++number);
      header->tp_len = static_cast<std::uint32_t>(ethernet.size() + p.size());
      __atomic_store_n(&header->tp_status, static_cast<std::uint32_t>(TP_STATUS_SEND_REQUEST), __ATOMIC_RELEASE);
      next = (next + 1) % kTxFrames;
    }
    if (queued == 0) {
      waitWritable(fd.get());  // frames come back as the receiver's side frees their buffers
      continue;
    }
    if (send(fd.get(), nullptr, 0, MSG_DONTWAIT) < 0 && errno != EAGAIN && errno != ENOBUFS) ++result.errors;
    result.packets += queued;  // handed to the kernel; a frame it refuses comes back WRONG_FORMAT (an error)
  }
  result.cpuSeconds = threadCpuSeconds() - cpu0;
}

void sendPacketDgram(const SendTarget& target, const std::vector<std::vector<std::uint8_t>>& packets,
                     CaseControl& control, ThreadResult& result) {
  Fd fd(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket(AF_PACKET, SOCK_DGRAM)");
  setOption(fd.get(), SOL_PACKET, PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS");
  setOption(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20, "SO_SNDBUFFORCE");
  const sockaddr_ll nextHop = linkAddress(target);
  sendmmsgLoop(fd.get(), &nextHop, sizeof nextHop, packets, control, result);
}


// --- (d) AF_XDP in copy mode ------------------------------------------------
// Transmit only, so no XDP program is needed (one is only for receiving):
// raw syscalls, no libbpf. The packets are written into the UMEM, their
// descriptors onto the TX ring, one sendto() kicks a batch; the completion
// ring hands the frames back once the kernel has copied them into an skb
// (copy mode: xsk_generic_xmit, then the device's transmit without a qdisc).

constexpr std::uint32_t kXdpFrameSize = 2048;
constexpr std::uint32_t kXdpFrames = 1024;  // also each ring's size (a power of two)

// One of the socket's rings as mapped: the kernel's producer and consumer
// indices and the entries.
template <typename Entry>
struct XdpRing {
  std::uint32_t* producer = nullptr;
  std::uint32_t* consumer = nullptr;
  Entry* entries = nullptr;
};

template <typename Entry>
XdpRing<Entry> xdpRing(const Mapping& map, const xdp_ring_offset& offsets) {
  return {reinterpret_cast<std::uint32_t*>(map.at(offsets.producer)),
          reinterpret_cast<std::uint32_t*>(map.at(offsets.consumer)),
          reinterpret_cast<Entry*>(map.at(offsets.desc))};
}

void sendXdpCopy(const SendTarget& target, const std::vector<std::vector<std::uint8_t>>& packets, CaseControl& control,
                 ThreadResult& result) {
  Fd fd(socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0), "socket(AF_XDP)");
  Mapping umem(-1, std::size_t{kXdpFrameSize} * kXdpFrames);
  xdp_umem_reg reg{};
  reg.addr = reinterpret_cast<std::uint64_t>(umem.at(0));
  reg.len = std::uint64_t{kXdpFrameSize} * kXdpFrames;
  reg.chunk_size = kXdpFrameSize;
  if (setsockopt(fd.get(), SOL_XDP, XDP_UMEM_REG, &reg, sizeof reg) != 0) {
    throw std::runtime_error(std::string("XDP_UMEM_REG: ") + std::strerror(errno));
  }
  // The fill ring is required by bind even when nothing is received.
  setOption(fd.get(), SOL_XDP, XDP_UMEM_FILL_RING, static_cast<int>(kXdpFrames), "XDP_UMEM_FILL_RING");
  setOption(fd.get(), SOL_XDP, XDP_UMEM_COMPLETION_RING, static_cast<int>(kXdpFrames), "XDP_UMEM_COMPLETION_RING");
  setOption(fd.get(), SOL_XDP, XDP_TX_RING, static_cast<int>(kXdpFrames), "XDP_TX_RING");
  xdp_mmap_offsets offsets{};
  socklen_t length = sizeof offsets;
  if (getsockopt(fd.get(), SOL_XDP, XDP_MMAP_OFFSETS, &offsets, &length) != 0) {
    throw std::runtime_error(std::string("XDP_MMAP_OFFSETS: ") + std::strerror(errno));
  }
  Mapping txMap(fd.get(), offsets.tx.desc + kXdpFrames * sizeof(xdp_desc), static_cast<off_t>(XDP_PGOFF_TX_RING));
  Mapping completionMap(fd.get(), offsets.cr.desc + kXdpFrames * sizeof(std::uint64_t),
                        static_cast<off_t>(XDP_UMEM_PGOFF_COMPLETION_RING));
  auto tx = xdpRing<xdp_desc>(txMap, offsets.tx);
  auto completions = xdpRing<std::uint64_t>(completionMap, offsets.cr);
  sockaddr_xdp self{};
  self.sxdp_family = AF_XDP;
  self.sxdp_flags = XDP_COPY;
  self.sxdp_ifindex = static_cast<std::uint32_t>(target.ifindex);
  self.sxdp_queue_id = 0;
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&self), sizeof self) != 0) {
    throw std::runtime_error(std::string("bind(AF_XDP, XDP_COPY): ") + std::strerror(errno));
  }
  std::vector<std::uint64_t> freeFrames;
  for (std::uint64_t i = 0; i < kXdpFrames; ++i) freeFrames.push_back(i * kXdpFrameSize);
  const std::array<std::uint8_t, ETH_HLEN> ethernet = ethernetHeader(target);
  if (!waitForGo(control, control.stopSending)) return;
  const double cpu0 = threadCpuSeconds();
  std::uint32_t number = 0;
  std::size_t packet = 0;
  std::uint32_t txProducer = *tx.producer, completionConsumer = *completions.consumer;
  constexpr std::uint32_t kMask = kXdpFrames - 1;
  // Frames the kernel is done with come back; each one a packet sent.
  auto reapCompletions = [&] {
    const std::uint32_t completed = __atomic_load_n(completions.producer, __ATOMIC_ACQUIRE);
    for (; completionConsumer != completed; ++completionConsumer) {
      freeFrames.push_back(completions.entries[completionConsumer & kMask]);
      ++result.packets;
    }
    __atomic_store_n(completions.consumer, completionConsumer, __ATOMIC_RELEASE);
  };
  while (!control.stopSending.load(std::memory_order_relaxed)) {
    reapCompletions();
    const std::uint32_t txConsumer = __atomic_load_n(tx.consumer, __ATOMIC_ACQUIRE);
    std::size_t queued = 0;
    for (; queued < kSendBatch && !freeFrames.empty() && txProducer - txConsumer < kXdpFrames; ++queued) {
      const std::uint64_t address = freeFrames.back();
      freeFrames.pop_back();
      const auto& p = packets[packet++ % packets.size()];
      std::uint8_t* data = umem.at(address);
      std::memcpy(data, ethernet.data(), ethernet.size());
      std::memcpy(data + ethernet.size(), p.data(), p.size());
      stamp(data + ethernet.size(), p.size(), ++number);
      tx.entries[txProducer++ & kMask] = {address, static_cast<std::uint32_t>(ethernet.size() + p.size()), 0};
    }
    __atomic_store_n(tx.producer, txProducer, __ATOMIC_RELEASE);
    if (sendto(fd.get(), nullptr, 0, MSG_DONTWAIT, nullptr, 0) < 0 && errno != EAGAIN && errno != EBUSY &&
        errno != ENOBUFS) {
      ++result.errors;
    }
  }
  reapCompletions();  // the last kick's (copy mode completes them within the call)
  result.cpuSeconds = threadCpuSeconds() - cpu0;
}

// --- receivers -------------------------------------------------------------

// What a receiver found in the packets' numbers (stamp).
class NumberCheck {
 public:
  // True if the packet is the size sent and its two numbers agree and were not seen before.
  bool accept(std::span<const std::uint8_t> packet, std::size_t size, ThreadResult& result) {
    if (packet.size() != size) return false;
    std::uint32_t first = 0, last = 0;
    std::memcpy(&first, packet.data() + 24, sizeof first);
    std::memcpy(&last, packet.data() + size - sizeof last, sizeof last);
    if (first != last) {
      ++result.changed;
      return false;
    }
    if (first / 64 < seen_.size()) {
      std::uint64_t& word = seen_[first / 64];
      const std::uint64_t bit = std::uint64_t{1} << (first % 64);
      if ((word & bit) != 0) {
        ++result.duplicates;
        return false;
      }
      word |= bit;
    }
    return true;
  }

 private:
  std::vector<std::uint64_t> seen_ = std::vector<std::uint64_t>(std::size_t{1} << 21);  // numbers below 2^27
};

void waitReadable(int fd) {
  pollfd p{fd, POLLIN, 0};
  poll(&p, 1, 10);
}

// As ipsecd's openRawSocket(AF_INET, IPPROTO_ESP).
int rawEspSocket() { return socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_ESP); }
constexpr const char* kRawEspSocket = "socket(AF_INET, SOCK_RAW, 50)";

// The drops of the raw socket for protocol 50 in this thread's namespace:
// the last column of its line in /proc/net/raw (local address 00000000:0032).
std::uint64_t rawEspSocketDrops() {
  std::ifstream table("/proc/thread-self/net/raw");
  std::string line;
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, last;
    fields >> slot >> local;
    if (local != "00000000:0032") continue;
    for (std::string field; fields >> field;) last = field;
    return std::stoull(last);
  }
  return 0;
}

void receiveRawSocket(std::size_t size, CaseControl& control, ThreadResult& result) {
  Fd fd(rawEspSocket(), kRawEspSocket);
  setOption(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20, "SO_RCVBUFFORCE");
  std::vector<std::uint8_t> buffers(kReceiveBatch * 2048);
  std::array<mmsghdr, kReceiveBatch> msgs{};
  std::array<iovec, kReceiveBatch> iovs{};
  for (std::size_t i = 0; i < kReceiveBatch; ++i) iovs[i] = {buffers.data() + i * 2048, 2048};
  NumberCheck numbers;
  if (!waitForGo(control, control.stopReceiving)) return;
  const double cpu0 = threadCpuSeconds();
  const std::uint64_t sleeps0 = threadSleeps();
  while (!control.stopReceiving.load(std::memory_order_relaxed)) {
    for (std::size_t i = 0; i < kReceiveBatch; ++i) msgs[i].msg_hdr = {nullptr, 0, &iovs[i], 1, nullptr, 0, 0};
    const int n = recvmmsg(fd.get(), msgs.data(), kReceiveBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) {
      waitReadable(fd.get());
      continue;
    }
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
      const std::span<const std::uint8_t> packet(buffers.data() + i * 2048, msgs[i].msg_len);
      ++(numbers.accept(packet, size, result) ? result.packets : result.errors);
    }
  }
  result.cpuSeconds = threadCpuSeconds() - cpu0;
  result.sleeps = threadSleeps() - sleeps0;
  result.socketDrops = rawEspSocketDrops();
}

void receiveRxRing(std::size_t size, CaseControl& control, ThreadResult& result) {
  Fd raw(rawEspSocket(), kRawEspSocket);  // kept, as ipsecd does: the kernel has a listener for protocol 50
  Fd fd(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), "socket(AF_PACKET, SOCK_DGRAM)");
  // The rest as ipsecd's openEspRing4 and renewEspRing4 (services/ipsecd/netsetup.cpp).
  auto filter = ipsec::esp::espRingFilter();
  sock_fprog program{static_cast<unsigned short>(filter.size()), filter.data()};
  if (setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program) != 0) {
    throw std::runtime_error(std::string("SO_ATTACH_FILTER: ") + std::strerror(errno));
  }
  setOption(fd.get(), SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
  using namespace ipsec::esp;
  tpacket_req ring{kEspRingBlockSize, kEspRingBlocks, kEspRingFrameSize, kEspRingFrames};
  if (setsockopt(fd.get(), SOL_PACKET, PACKET_RX_RING, &ring, sizeof ring) != 0) {
    throw std::runtime_error(std::string("PACKET_RX_RING: ") + std::strerror(errno));
  }
  Mapping map(fd.get(), kEspRingBytes);
  sockaddr_ll all{};
  all.sll_family = AF_PACKET;
  all.sll_protocol = htons(ETH_P_IP);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&all), sizeof all) != 0) {
    throw std::runtime_error(std::string("bind(AF_PACKET): ") + std::strerror(errno));
  }
  auto nothing = dropAllFilter();
  sock_fprog none{static_cast<unsigned short>(nothing.size()), nothing.data()};
  if (setsockopt(raw.get(), SOL_SOCKET, SO_ATTACH_FILTER, &none, sizeof none) != 0) {
    throw std::runtime_error(std::string("SO_ATTACH_FILTER (raw socket): ") + std::strerror(errno));
  }
  tpacket_stats stats{};
  socklen_t length = sizeof stats;
  getsockopt(fd.get(), SOL_PACKET, PACKET_STATISTICS, &stats, &length);  // reading resets the counts
  NumberCheck numbers;
  if (!waitForGo(control, control.stopReceiving)) return;
  const double cpu0 = threadCpuSeconds();
  const std::uint64_t sleeps0 = threadSleeps();
  std::size_t next = 0;
  while (!control.stopReceiving.load(std::memory_order_relaxed)) {
    std::uint8_t* frame = map.frame(next, kEspRingFrameSize);
    auto* status = reinterpret_cast<std::uint32_t*>(frame);  // tp_status leads the tpacket2_hdr
    if ((__atomic_load_n(status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) == 0) {
      waitReadable(fd.get());
      continue;
    }
    const RingEsp esp = parseRingFrame(std::span<const std::uint8_t>(frame, kEspRingFrameSize));
    ++(esp.error == RingFrameError::kNone && numbers.accept(esp.packet, size, result) ? result.packets
                                                                                     : result.errors);
    __atomic_store_n(status, static_cast<std::uint32_t>(TP_STATUS_KERNEL), __ATOMIC_RELEASE);
    next = (next + 1) % kEspRingFrames;
  }
  result.cpuSeconds = threadCpuSeconds() - cpu0;
  result.sleeps = threadSleeps() - sleeps0;
  length = sizeof stats;
  if (getsockopt(fd.get(), SOL_PACKET, PACKET_STATISTICS, &stats, &length) == 0) result.ringDrops = stats.tp_drops;
}

// --- (3) AF_XDP receive ------------------------------------------------------
// The XDP program (xdp_redirect.h) hands plain ESP/IPv4 to this socket from
// the receiving veth's NAPI, before ip_rcv. Copy mode (a veth has no
// zero-copy): the kernel copies each frame into a UMEM chunk this thread
// posted on the fill ring and puts its descriptor on the RX ring; the chunk
// goes back on the fill ring once its packet has been checked.

constexpr std::uint32_t kXdpRxFrames = 4096;  // the UMEM's chunks, and each ring's size (a power of two)
constexpr std::uint64_t kUmemBytes = std::uint64_t{kXdpFrameSize} * kXdpRxFrames;

// The IPv4 packet of an Ethernet frame the XSK received, cut to its total
// length (the link layer's padding off); nothing if it is not a whole,
// well-formed IPv4 protocol-50 packet. The frame comes before ip_rcv, so its
// checks are ours: those parseRingFrame makes for receive side (2).
std::optional<std::span<const std::uint8_t>> espPacketOfFrame(std::span<const std::uint8_t> frame) {
  if (frame.size() < ETH_HLEN + 20 || frame[12] != 0x08 || frame[13] != 0x00) return std::nullopt;
  const auto ip = frame.subspan(ETH_HLEN);
  const std::size_t headerLength = (ip[0] & 0x0fu) * 4u;
  const std::size_t totalLength = static_cast<std::size_t>(ip[2] << 8 | ip[3]);
  if ((ip[0] >> 4) != 4 || headerLength < 20 || totalLength < headerLength || totalLength > ip.size()) {
    return std::nullopt;
  }
  if (ipsec::checksum::fold(ipsec::checksum::add(0, ip.first(headerLength))) != 0xffff) return std::nullopt;
  if (ip[9] != IPPROTO_ESP || ((ip[6] << 8 | ip[7]) & 0x3fff) != 0) return std::nullopt;  // the program passes fragments
  return ip.first(totalLength);
}

// The previous case's socket leaves queue 0 only when the kernel's deferred
// release of its UMEM has run (a work item after close): until then bind
// says EBUSY. Retried for at most a second.
void bindXsk(int fd, const sockaddr_xdp& address) {
  for (int attempt = 0;; ++attempt) {
    if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) return;
    if (errno != EBUSY || attempt == 100) {
      throw std::runtime_error(std::string("bind(AF_XDP, XDP_COPY): ") + std::strerror(errno));
    }
    usleep(10000);
  }
}

// An AF_XDP socket set up to receive in copy mode: its UMEM, fill and RX
// rings mapped, every chunk on the fill ring, bound to (ifindex, queue 0).
class XskReceiver {
 public:
  explicit XskReceiver(int ifindex)
      : fd_(socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0), "socket(AF_XDP)"), umem_(-1, kUmemBytes) {
    xdp_umem_reg reg{};
    reg.addr = reinterpret_cast<std::uint64_t>(umem_.at(0));
    reg.len = kUmemBytes;
    reg.chunk_size = kXdpFrameSize;
    if (setsockopt(fd_.get(), SOL_XDP, XDP_UMEM_REG, &reg, sizeof reg) != 0) {
      throw std::runtime_error(std::string("XDP_UMEM_REG: ") + std::strerror(errno));
    }
    const int ringSize = static_cast<int>(kXdpRxFrames);
    setOption(fd_.get(), SOL_XDP, XDP_UMEM_FILL_RING, ringSize, "XDP_UMEM_FILL_RING");
    // The completion ring is required by bind even when nothing is sent.
    setOption(fd_.get(), SOL_XDP, XDP_UMEM_COMPLETION_RING, ringSize, "XDP_UMEM_COMPLETION_RING");
    setOption(fd_.get(), SOL_XDP, XDP_RX_RING, ringSize, "XDP_RX_RING");
    xdp_mmap_offsets offsets{};
    socklen_t length = sizeof offsets;
    if (getsockopt(fd_.get(), SOL_XDP, XDP_MMAP_OFFSETS, &offsets, &length) != 0) {
      throw std::runtime_error(std::string("XDP_MMAP_OFFSETS: ") + std::strerror(errno));
    }
    rxMap_.emplace(fd_.get(), offsets.rx.desc + kXdpRxFrames * sizeof(xdp_desc), static_cast<off_t>(XDP_PGOFF_RX_RING));
    fillMap_.emplace(fd_.get(), offsets.fr.desc + kXdpRxFrames * sizeof(std::uint64_t),
                     static_cast<off_t>(XDP_UMEM_PGOFF_FILL_RING));
    rx_ = xdpRing<xdp_desc>(*rxMap_, offsets.rx);
    fill_ = xdpRing<std::uint64_t>(*fillMap_, offsets.fr);
    // Every chunk on the fill ring: chunks on it + on the RX ring + in our
    // hands stay kXdpRxFrames, so giving back what the RX ring gave never
    // overflows it.
    fillProducer_ = *fill_.producer;
    for (std::uint64_t i = 0; i < kXdpRxFrames; ++i) fill_.entries[fillProducer_++ & kMask] = i * kXdpFrameSize;
    __atomic_store_n(fill_.producer, fillProducer_, __ATOMIC_RELEASE);
    rxConsumer_ = *rx_.consumer;
    sockaddr_xdp self{};
    self.sxdp_family = AF_XDP;
    self.sxdp_flags = XDP_COPY;
    self.sxdp_ifindex = static_cast<std::uint32_t>(ifindex);
    self.sxdp_queue_id = 0;  // a veth made by `ip link add` has one RX queue
    bindXsk(fd_.get(), self);
  }

  int fd() const { return fd_.get(); }
  std::uint32_t waiting() const { return __atomic_load_n(rx_.producer, __ATOMIC_ACQUIRE) - rxConsumer_; }

  // Checks up to kReceiveBatch waiting packets and gives their chunks back.
  void take(std::uint32_t waiting, std::size_t size, NumberCheck& numbers, ThreadResult& result) {
    const std::uint32_t batch = std::min<std::uint32_t>(waiting, kReceiveBatch);
    for (std::uint32_t i = 0; i < batch; ++i) {
      // The descriptor lives in memory shared with the kernel: checked against the UMEM like any input.
      const xdp_desc d = rx_.entries[(rxConsumer_ + i) & kMask];
      const std::uint64_t chunk = d.addr & ~std::uint64_t{kXdpFrameSize - 1};
      const bool inChunk = chunk < kUmemBytes && d.addr - chunk + d.len <= kXdpFrameSize;
      const auto packet = inChunk ? espPacketOfFrame({umem_.at(d.addr), d.len}) : std::nullopt;
      ++(packet && numbers.accept(*packet, size, result) ? result.packets : result.errors);
      fill_.entries[fillProducer_++ & kMask] = chunk % kUmemBytes;  // the chunk, not the data
    }
    __atomic_store_n(rx_.consumer, rxConsumer_ += batch, __ATOMIC_RELEASE);
    __atomic_store_n(fill_.producer, fillProducer_, __ATOMIC_RELEASE);
  }

  // Busy-polls the empty RX ring for up to `micros` (a sleep avoided is a
  // wake-up the sender's softirq does not pay for, at the price of this
  // thread's CPU); true once the kernel has produced a descriptor.
  bool spinUntilFilled(int micros) const {
    if (micros <= 0) return false;
    const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
    do {
      for (int i = 0; i < 64; ++i) {
        if (waiting() != 0) return true;
        __builtin_ia32_pause();
      }
    } while (std::chrono::steady_clock::now() < end);
    return false;
  }

  void readStatistics(ThreadResult& result) const {
    xdp_statistics stats{};
    socklen_t length = sizeof stats;
    if (getsockopt(fd_.get(), SOL_XDP, XDP_STATISTICS, &stats, &length) != 0) {
      throw std::runtime_error(std::string("XDP_STATISTICS: ") + std::strerror(errno));
    }
    result.xskRingFull = stats.rx_ring_full;
    result.xskDropped = stats.rx_dropped;
    result.xskFillEmpty = stats.rx_fill_ring_empty_descs;
  }

 private:
  static constexpr std::uint32_t kMask = kXdpRxFrames - 1;
  Fd fd_;
  Mapping umem_;
  std::optional<Mapping> rxMap_, fillMap_;  // mapped once the socket has its rings
  XdpRing<xdp_desc> rx_;
  XdpRing<std::uint64_t> fill_;
  std::uint32_t rxConsumer_ = 0, fillProducer_ = 0;
};

void receiveXdp(const ReceiveTarget& target, std::size_t size, CaseControl& control, ThreadResult& result) {
  XskReceiver xsk(target.ifindex);
  in_addr local{};
  inet_pton(AF_INET, "192.0.2.2", &local);
  // Detached (its link closed) when this returns or throws, before the socket closes.
  const XdpRedirect redirect(target.ifindex, local.s_addr, xsk.fd(),
                             target.xdpGenericOnly ? XdpMode::kGeneric : XdpMode::kDriver);
  result.note = std::string("XDP program in ") + xdpModeName(redirect.mode()) + " mode";
  NumberCheck numbers;
  if (!waitForGo(control, control.stopReceiving)) return;
  const double cpu0 = threadCpuSeconds();
  const std::uint64_t sleeps0 = threadSleeps();
  while (!control.stopReceiving.load(std::memory_order_relaxed)) {
    const std::uint32_t waiting = xsk.waiting();
    if (waiting != 0) xsk.take(waiting, size, numbers, result);
    else if (!xsk.spinUntilFilled(target.xskSpinMicros)) waitReadable(xsk.fd());
  }
  result.cpuSeconds = threadCpuSeconds() - cpu0;
  result.sleeps = threadSleeps() - sleeps0;
  xsk.readStatistics(result);
}

}  // namespace

std::vector<std::vector<std::uint8_t>> makePackets(std::size_t size) {
  std::mt19937 random(0x65737020);
  std::vector<std::vector<std::uint8_t>> packets(kSendBatch, std::vector<std::uint8_t>(size));
  for (std::size_t i = 0; i < packets.size(); ++i) {
    auto& p = packets[i];
    for (auto& byte : p) byte = static_cast<std::uint8_t>(random());
    const std::uint8_t header[20] = {0x45, 0, static_cast<std::uint8_t>(size >> 8), static_cast<std::uint8_t>(size),
                                     0, static_cast<std::uint8_t>(i + 1), 0x40, 0,  // an id, DF
                                     64, 50, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2};
    std::memcpy(p.data(), header, sizeof header);
    const std::uint16_t sum = ipv4Checksum(p.data());
    p[10] = static_cast<std::uint8_t>(sum >> 8);
    p[11] = static_cast<std::uint8_t>(sum);
    const std::uint8_t esp[8] = {0, 0, 0x10, 0, 0, 0, 0, static_cast<std::uint8_t>(i + 1)};  // SPI 0x1000, sequence i + 1
    std::memcpy(p.data() + 20, esp, sizeof esp);
  }
  return packets;
}

void runSender(SendPath path, const SendTarget& target, const std::vector<std::vector<std::uint8_t>>& packets,
               CaseControl& control, ThreadResult& result) noexcept {
  try {
    enterNamespace(target.ns);
    pinTo(target.cpu);
    switch (path) {
      case SendPath::kRawHeaderIncluded: sendRawHeaderIncluded(packets, control, result); break;
      case SendPath::kTxRing: sendTxRing(target, packets, control, result); break;
      case SendPath::kPacketDgram: sendPacketDgram(target, packets, control, result); break;
      case SendPath::kXdpCopy: sendXdpCopy(target, packets, control, result); break;
    }
  } catch (const std::exception& e) {
    result.error = e.what();
    control.ready.fetch_add(1);  // the main thread waits for no more; the error voids the case
  }
}

void runReceiver(ReceivePath path, const ReceiveTarget& target, std::size_t size, CaseControl& control,
                 ThreadResult& result) noexcept {
  try {
    enterNamespace(target.ns);
    pinTo(target.cpu);
    switch (path) {
      case ReceivePath::kRawSocket: receiveRawSocket(size, control, result); break;
      case ReceivePath::kRxRing: receiveRxRing(size, control, result); break;
      case ReceivePath::kXdp: receiveXdp(target, size, control, result); break;
    }
  } catch (const std::exception& e) {
    result.error = e.what();
    control.ready.fetch_add(1);  // the main thread waits for no more; the error voids the case
  }
}

}  // namespace outer_io
