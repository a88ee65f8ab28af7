// Datagram framing of control messages; see wire.h for what is checked.
#include "control/wire.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <kj/exception.h>
#include <kj/io.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace ipsec::control {
namespace {

// Room for kMaxFdsPerMessage descriptors plus one more cmsg header, so that a
// peer sending more is seen as MSG_CTRUNC rather than silently accepted.
constexpr std::size_t kControlBytes = CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage);

int retryPoll(int fd, short events, int timeoutMs) noexcept {
  pollfd pfd{fd, events, 0};
  int n;
  do {
    n = ::poll(&pfd, 1, timeoutMs);
  } while (n < 0 && errno == EINTR);
  return n;
}

}  // namespace

capnp::ReaderOptions readerOptions() noexcept {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = kTraversalLimitWords;
  options.nestingLimit = kNestingLimit;
  return options;
}

std::size_t sizeSocketBuffers(int fd, std::size_t messageBytes) noexcept {
  // The kernel doubles the value and refuses a datagram above sndbuf - 32.
  const int want = static_cast<int>(messageBytes + 4096);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) != 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
  }
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  }
  int have = 0;
  socklen_t len = sizeof have;
  if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &have, &len) != 0 || have <= 64) return 0;
  return std::min<std::size_t>(static_cast<std::size_t>(have) - 64, messageBytes);
}

std::pair<UniqueFd, UniqueFd> makeSeqpacketPair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    throw std::system_error(errno, std::generic_category(), "socketpair");
  }
  std::pair<UniqueFd, UniqueFd> pair{UniqueFd(sv[0]), UniqueFd(sv[1])};
  sizeSocketBuffers(sv[0], kMaxMessageBytes);
  sizeSocketBuffers(sv[1], kMaxMessageBytes);
  return pair;
}

namespace {
// Serialized messages may hold key material (keydb → crypto): wipe them when
// they are released, whether sent at once or after waiting in a queue.
class WipingDisposer final : public kj::ArrayDisposer {
 public:
  void disposeImpl(void* first, size_t elementSize, size_t elementCount, size_t capacity,
                   void (*destroyElement)(void*)) const override {
    explicit_bzero(first, elementSize * capacity);
    delete[] static_cast<capnp::word*>(first);
  }
};
const WipingDisposer kWipingDisposer;
}  // namespace

void wipeMessage(capnp::MallocMessageBuilder& message) noexcept {
  for (auto seg : message.getSegmentsForOutput()) {
    explicit_bzero(const_cast<capnp::word*>(seg.begin()), seg.size() * sizeof(capnp::word));
  }
}

kj::Array<capnp::word> serialize(capnp::MessageBuilder& message) {
  const size_t words = capnp::computeSerializedSizeInWords(message);
  auto* storage = new capnp::word[words];
  kj::Array<capnp::word> out(storage, words, kWipingDisposer);
  kj::ArrayOutputStream stream(out.asBytes());
  capnp::writeMessage(stream, message);
  return out;
}

int sendDatagram(int fd, kj::ArrayPtr<const capnp::word> words, std::span<const int> fds, bool blocking) noexcept {
  if (fds.size() > kMaxFdsPerMessage) return EINVAL;
  auto bytes = words.asBytes();
  iovec iov{const_cast<kj::byte*>(bytes.begin()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[kControlBytes];
  if (!fds.empty()) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  const int flags = MSG_NOSIGNAL | (blocking ? 0 : MSG_DONTWAIT);
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno == EWOULDBLOCK ? EAGAIN : errno;
  return 0;  // SOCK_SEQPACKET sends a datagram whole or not at all
}

namespace {

// Judges one datagram recvmsg/recvmmsg put in `msg` (`n` bytes of a buffer of
// `capacity`): owns its descriptors first, then checks truncation and the
// control messages. Shared by the single and the batched receive.
ReceiveStatus classifyReceived(msghdr& msg, ssize_t n, std::size_t capacity, Datagram& out,
                               std::string& reason) noexcept {
  // Own every descriptor that arrived before judging the datagram, so that
  // each rejection path closes them.
  bool unexpectedControl = false;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      const std::size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const unsigned char* data = CMSG_DATA(cmsg);
      for (std::size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, data + i * sizeof(int), sizeof(int));
        out.fds.emplace_back(received);
      }
    } else {
      unexpectedControl = true;
    }
  }

  ReceiveStatus status = ReceiveStatus::kDatagram;
  if (n == 0) {
    // On SOCK_SEQPACKET, end of stream; an empty datagram would be a
    // protocol error anyway.
    status = ReceiveStatus::kPeerClosed;
    reason = "peer closed the channel";
  } else if (msg.msg_flags & MSG_TRUNC) {
    status = ReceiveStatus::kError;
    reason = "datagram truncated: larger than " + std::to_string(capacity) + " bytes";
  } else if (msg.msg_flags & MSG_CTRUNC) {
    status = ReceiveStatus::kError;
    reason = "descriptors truncated: more than " + std::to_string(kMaxFdsPerMessage) + " per message";
  } else if (unexpectedControl) {
    status = ReceiveStatus::kError;
    reason = "unexpected control message (not SCM_RIGHTS)";
  } else if (out.fds.size() > kMaxFdsPerMessage) {
    status = ReceiveStatus::kError;
    reason = "too many descriptors in one message";
  }
  if (status != ReceiveStatus::kDatagram) {
    out.fds.clear();
    return status;
  }
  out.bytes = static_cast<std::size_t>(n);
  return status;
}

}  // namespace

ReceiveStatus receiveDatagram(int fd, kj::ArrayPtr<capnp::word> buffer, Datagram& out, std::string& reason,
                              bool blocking) noexcept {
  out.bytes = 0;
  out.fds.clear();
  auto bytes = buffer.asBytes();
  iovec iov{bytes.begin(), bytes.size()};
  alignas(cmsghdr) char control[kControlBytes + CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const int flags = MSG_CMSG_CLOEXEC | (blocking ? 0 : MSG_DONTWAIT);
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return ReceiveStatus::kWouldBlock;
    reason = std::string("recvmsg: ") + std::strerror(errno);
    return ReceiveStatus::kError;
  }

  return classifyReceived(msg, n, bytes.size(), out, reason);
}


std::size_t sendDatagrams(int fd, std::span<const OutDatagram> batch, int& error) noexcept {
  error = 0;
  std::size_t count = std::min(batch.size(), kMaxBatch);
  bool refused = false;
  for (std::size_t i = 0; i < count; ++i) {
    const OutDatagram& d = batch[i];
    if (d.fds.size() > kMaxFdsPerMessage || (!d.fds.empty() && !d.more.empty()) ||
        d.more.size() + 1 > kMaxMessagesPerDatagram) {
      count = i;  // send the ones before it, refuse it as sendDatagram does
      refused = true;
    }
  }
  std::array<mmsghdr, kMaxBatch> msgs{};
  // Every message of a coalesced datagram is one iovec of it.
  static thread_local std::array<iovec, kMaxBatch * kMaxMessagesPerDatagram> iovs;
  struct alignas(cmsghdr) Control {
    char bytes[kControlBytes];
  };
  std::array<Control, kMaxBatch> controls;
  std::size_t iov = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const OutDatagram& d = batch[i];
    msghdr& m = msgs[i].msg_hdr;
    m.msg_iov = &iovs[iov];
    m.msg_iovlen = 1 + d.more.size();
    auto bytes = d.words.asBytes();
    iovs[iov++] = iovec{const_cast<kj::byte*>(bytes.begin()), bytes.size()};
    for (const auto& words : d.more) {
      auto more = words.asBytes();
      iovs[iov++] = iovec{const_cast<kj::byte*>(more.begin()), more.size()};
    }
    if (!d.fds.empty()) {
      std::memset(controls[i].bytes, 0, sizeof controls[i].bytes);
      m.msg_control = controls[i].bytes;
      m.msg_controllen = CMSG_SPACE(sizeof(int) * d.fds.size());
      cmsghdr* cmsg = CMSG_FIRSTHDR(&m);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * d.fds.size());
      std::memcpy(CMSG_DATA(cmsg), d.fds.data(), sizeof(int) * d.fds.size());
    }
  }
  // sendmmsg stops at the first datagram that fails and reports the ones
  // before it; only a call that sends none gives the errno. Retry the rest
  // until all are sent or one fails first in its call.
  std::size_t sent = 0;
  while (sent < count) {
    const int n = ::sendmmsg(fd, msgs.data() + sent, static_cast<unsigned>(count - sent), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      error = errno == EWOULDBLOCK ? EAGAIN : errno;
      break;
    }
    sent += static_cast<std::size_t>(n);
  }
  if (error == 0 && refused) error = EINVAL;
  return sent;
}

std::size_t receiveDatagrams(int fd, std::span<kj::ArrayPtr<capnp::word>> buffers, std::span<Datagram> out,
                             ReceiveStatus& status, std::string& reason) noexcept {
  const std::size_t count = std::min({buffers.size(), out.size(), kMaxBatch});
  std::array<mmsghdr, kMaxBatch> msgs{};
  std::array<iovec, kMaxBatch> iovs{};
  struct alignas(cmsghdr) Control {
    char bytes[kControlBytes + CMSG_SPACE(sizeof(int))];
  };
  std::array<Control, kMaxBatch> controls;
  for (std::size_t i = 0; i < count; ++i) {
    out[i].bytes = 0;
    out[i].fds.clear();
    auto bytes = buffers[i].asBytes();
    iovs[i] = iovec{bytes.begin(), bytes.size()};
    msghdr& m = msgs[i].msg_hdr;
    m.msg_iov = &iovs[i];
    m.msg_iovlen = 1;
    m.msg_control = controls[i].bytes;
    m.msg_controllen = sizeof controls[i].bytes;
  }
  int n;
  do {
    n = ::recvmmsg(fd, msgs.data(), static_cast<unsigned>(count), MSG_CMSG_CLOEXEC | MSG_DONTWAIT, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      status = ReceiveStatus::kWouldBlock;
    } else {
      status = ReceiveStatus::kError;
      reason = std::string("recvmmsg: ") + std::strerror(errno);
    }
    return 0;
  }
  const auto got = static_cast<std::size_t>(n);
  status = got < count ? ReceiveStatus::kWouldBlock : ReceiveStatus::kDatagram;
  std::size_t good = 0;
  for (std::size_t i = 0; i < got; ++i) {
    const ReceiveStatus s =
        classifyReceived(msgs[i].msg_hdr, static_cast<ssize_t>(msgs[i].msg_len), buffers[i].asBytes().size(), out[i],
                         reason);
    if (s == ReceiveStatus::kDatagram) {
      ++good;
      continue;
    }
    status = s;
    // Nothing past a bad datagram is handed out: close what came after it
    // and wipe its bytes (they may hold keys).
    for (std::size_t j = i; j < got; ++j) {
      if (j > i) {  // own its descriptors (classifyReceived does), then close them
        std::string ignored;
        classifyReceived(msgs[j].msg_hdr, static_cast<ssize_t>(msgs[j].msg_len), buffers[j].asBytes().size(), out[j],
                         ignored);
      }
      out[j].fds.clear();
      out[j].bytes = 0;
      explicit_bzero(buffers[j].asBytes().begin(), std::min<std::size_t>(msgs[j].msg_len, buffers[j].asBytes().size()));
    }
    break;
  }
  return good;
}

namespace {

// Checks the size of a received datagram against its buffer; returns its
// words, or an empty array with `reason` set.
kj::ArrayPtr<const capnp::word> datagramWords(kj::ArrayPtr<const capnp::word> words, std::size_t bytes,
                                              std::string& reason) {
  if (bytes == 0) {
    reason = "empty datagram";
    return {};
  }
  if (bytes % sizeof(capnp::word) != 0) {
    reason = "datagram of " + std::to_string(bytes) + " bytes is not a whole number of words";
    return {};
  }
  if (bytes / sizeof(capnp::word) > words.size()) {
    reason = "datagram larger than its buffer";
    return {};
  }
  return words.slice(0, bytes / sizeof(capnp::word));
}

// A reader over the message at the start of `rest`, fully traversed once (bounds, nesting and
// traversal limits are checked on every pointer now rather than in the middle of a handler);
// `rest` then starts after it.
std::unique_ptr<capnp::FlatArrayMessageReader> decodeFirst(kj::ArrayPtr<const capnp::word>& rest,
                                                           std::string& reason,
                                                           const capnp::ReaderOptions& options) {
  try {
    auto reader = std::make_unique<capnp::FlatArrayMessageReader>(rest, options);
    reader->getRoot<capnp::AnyPointer>().targetSize();
    rest = kj::arrayPtr(reader->getEnd(), rest.end());
    return reader;
  } catch (const kj::Exception& e) {
    reason = std::string("malformed message: ") + e.getDescription().cStr();
    return nullptr;
  }
}

}  // namespace

std::unique_ptr<capnp::FlatArrayMessageReader> decodeDatagram(kj::ArrayPtr<const capnp::word> words,
                                                              std::size_t bytes, std::string& reason,
                                                              const capnp::ReaderOptions& options) {
  auto rest = datagramWords(words, bytes, reason);
  if (rest.size() == 0) return nullptr;
  auto reader = decodeFirst(rest, reason, options);
  if (reader && rest.size() != 0) {
    reason = "trailing bytes after the message";
    return nullptr;
  }
  return reader;
}

DatagramMessages::DatagramMessages(kj::ArrayPtr<const capnp::word> words, std::size_t bytes, std::size_t fdCount,
                                   const capnp::ReaderOptions& options)
    : rest_(datagramWords(words, bytes, error_)), fdCount_(fdCount), options_(options) {}

std::unique_ptr<capnp::FlatArrayMessageReader> DatagramMessages::next(std::string& reason,
                                                                     kj::ArrayPtr<const capnp::word>* words) {
  if (!error_.empty()) {
    reason = std::move(error_);
    error_.clear();
    rest_ = {};
    return nullptr;
  }
  if (rest_.size() == 0) return nullptr;
  if (taken_ == kMaxMessagesPerDatagram) {
    reason = "more than " + std::to_string(kMaxMessagesPerDatagram) + " messages in one datagram";
    rest_ = {};
    return nullptr;
  }
  const capnp::word* start = rest_.begin();
  auto reader = decodeFirst(rest_, reason, options_);
  if (!reader) {
    rest_ = {};
    return nullptr;
  }
  if (words != nullptr) *words = kj::arrayPtr(start, rest_.begin());
  ++taken_;
  if (fdCount_ != 0 && rest_.size() != 0) {
    reason = "descriptors with more than one message in a datagram";
    rest_ = {};
    return nullptr;
  }
  return reader;
}

int sendMessage(int fd, capnp::MessageBuilder& message, std::span<const int> fds) {
  const auto words = serialize(message);
  for (;;) {
    const int error = sendDatagram(fd, words, fds, /*blocking=*/true);
    if (error != EAGAIN) return error;
    if (retryPoll(fd, POLLOUT, -1) < 0) return errno;  // the socket is non-blocking: wait for room
  }
}

ReceivedMessage receiveMessage(int fd, int timeoutMs, std::size_t maxBytes) {
  ReceivedMessage result;
  result.storage = kj::heapArray<capnp::word>((maxBytes + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  for (;;) {
    const int ready = retryPoll(fd, POLLIN, timeoutMs);
    if (ready == 0) {
      result.error = "timed out";
      return result;
    }
    if (ready < 0) {
      result.error = std::string("poll: ") + std::strerror(errno);
      return result;
    }
    Datagram datagram;
    const ReceiveStatus status = receiveDatagram(fd, result.storage, datagram, result.error);
    if (status == ReceiveStatus::kWouldBlock) continue;
    if (status != ReceiveStatus::kDatagram) return result;
    result.reader = decodeDatagram(result.storage, datagram.bytes, result.error);
    if (result.reader) result.fds = std::move(datagram.fds);
    return result;
  }
}

}  // namespace ipsec::control

namespace ipsec::control {

ReceivedMessage Inbox::receive(int timeoutMs) {
  if (pending_.empty()) {
    ReceivedMessage datagram;
    auto storage = kj::heapArray<capnp::word>((maxBytes_ + sizeof(capnp::word) - 1) / sizeof(capnp::word));
    Datagram got;
    for (;;) {
      const int ready = retryPoll(fd_, POLLIN, timeoutMs);
      if (ready <= 0) {
        datagram.error = ready == 0 ? "timed out" : std::string("poll: ") + std::strerror(errno);
        return datagram;
      }
      const ReceiveStatus status = receiveDatagram(fd_, storage, got, datagram.error);
      if (status == ReceiveStatus::kWouldBlock) continue;
      if (status != ReceiveStatus::kDatagram) return datagram;
      break;
    }
    // Each message gets words of its own, so that each result stands alone.
    DatagramMessages messages(storage, got.bytes, got.fds.size());
    std::vector<ReceivedMessage> all;
    std::string reason;
    kj::ArrayPtr<const capnp::word> words;
    while (messages.next(reason, &words)) {
      ReceivedMessage one;
      one.storage = kj::heapArray<capnp::word>(words.size());
      std::memcpy(static_cast<void*>(one.storage.begin()), words.begin(), words.asBytes().size());
      one.reader = std::make_unique<capnp::FlatArrayMessageReader>(one.storage, readerOptions());
      all.push_back(std::move(one));
    }
    if (!reason.empty()) {
      datagram.error = std::move(reason);
      return datagram;
    }
    if (all.empty()) {
      datagram.error = "empty datagram";
      return datagram;
    }
    all.front().fds = std::move(got.fds);
    pending_.assign(std::make_move_iterator(all.rbegin()), std::make_move_iterator(all.rend()));
  }
  ReceivedMessage next = std::move(pending_.back());
  pending_.pop_back();
  return next;
}

}  // namespace ipsec::control
