// Control messages in SOCK_SEQPACKET datagrams, with descriptors in
// SCM_RIGHTS: the framing every process uses on its control channels. A
// datagram holds one message, or several back to back when none of them
// carries descriptors (a Channel coalesces a burst of sends that way: the
// kernel's work is per datagram, and a burst of SA installs is thousands).
//
// Runs in every process. The peer is another process of ours but is not
// trusted to be well-formed (DESIGN.md §2): a received datagram is checked
// for truncation (data or descriptors), for being a whole number of words and
// whole messages (descriptors only beside a single one), and each message is
// traversed once under capnp::ReaderOptions limits before any handler reads
// it. Received descriptors are owned by UniqueFd from the first moment, so a
// rejected message leaks none.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "control/unique_fd.h"

namespace ipsec::control {

// Control messages are small; an SA dump may be large. Above this, split.
inline constexpr std::size_t kMaxMessageBytes = std::size_t{1} << 20;
// Descriptors per message; more arrive as MSG_CTRUNC and close the channel.
inline constexpr std::size_t kMaxFdsPerMessage = 16;
// A 1 MiB message is 128 Ki words; 1 Mi words of traversal leaves room for
// handlers that read fields twice while stopping pointer amplification.
inline constexpr std::uint64_t kTraversalLimitWords = std::uint64_t{1} << 20;
inline constexpr int kNestingLimit = 16;

capnp::ReaderOptions readerOptions() noexcept;

// socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC) with buffers sized for a
// kMaxMessageBytes datagram. Throws std::system_error.
std::pair<UniqueFd, UniqueFd> makeSeqpacketPair();

// Raises SO_SNDBUF/SO_RCVBUF so that a datagram of `messageBytes` fits
// (SO_*BUFFORCE when privileged, else capped by net.core.[rw]mem_max).
// Returns the largest datagram the socket can now send.
std::size_t sizeSocketBuffers(int fd, std::size_t messageBytes) noexcept;

// Serialises a message into one flat array of words.
kj::Array<capnp::word> serialize(capnp::MessageBuilder& message);

// Zeroes every segment of a message we built (one that held key material),
// once it has been sent: Channel wipes its own serialized copy, not ours.
void wipeMessage(capnp::MallocMessageBuilder& message) noexcept;

// sendmsg of one datagram with `fds` in SCM_RIGHTS (the caller keeps
// ownership of them). MSG_NOSIGNAL | MSG_DONTWAIT unless `blocking`.
// Returns 0 or an errno value (EAGAIN when the socket buffer is full).
int sendDatagram(int fd, kj::ArrayPtr<const capnp::word> words, std::span<const int> fds,
                 bool blocking = false) noexcept;

// One datagram of a batch for sendDatagrams: `words`, then each of `more`
// back to back. Descriptors only with a single message (`more` empty).
struct OutDatagram {
  kj::ArrayPtr<const capnp::word> words;
  std::span<const int> fds;  // at most kMaxFdsPerMessage
  std::span<const kj::ArrayPtr<const capnp::word>> more = {};
};

// Messages one coalesced datagram may hold, and its size: small enough that
// the kernel's copy stays cheap, large enough for a burst of SA messages.
inline constexpr std::size_t kMaxMessagesPerDatagram = 64;
inline constexpr std::size_t kCoalescedDatagramBytes = 64 * 1024;

// Datagrams one sendDatagrams or receiveDatagrams call hands to the kernel.
inline constexpr std::size_t kMaxBatch = 64;

// sendmmsg of `batch` (at most kMaxBatch) in order, each with its own
// descriptors, without blocking. A datagram with descriptors and `more`
// messages, or more than kMaxMessagesPerDatagram in all, is refused (EINVAL)
// as one with too many descriptors is. Returns how many datagrams the kernel took;
// they are always a prefix of `batch`. `error` is 0 when all were taken, else
// the errno that stopped the next one (EAGAIN when the socket buffer is full).
std::size_t sendDatagrams(int fd, std::span<const OutDatagram> batch, int& error) noexcept;

enum class ReceiveStatus { kDatagram, kWouldBlock, kPeerClosed, kError };

struct Datagram {
  std::size_t bytes = 0;
  std::vector<UniqueFd> fds;
};

// recvmsg of one datagram into `buffer` (MSG_CMSG_CLOEXEC). kError with
// `reason` set for truncated data, truncated descriptors, an unexpected
// control message, or a socket error; the descriptors that did arrive are
// closed in every error case. `blocking` waits for a datagram.
ReceiveStatus receiveDatagram(int fd, kj::ArrayPtr<capnp::word> buffer, Datagram& out, std::string& reason,
                              bool blocking = false) noexcept;

// recvmmsg of up to `buffers.size()` datagrams (at most kMaxBatch), datagram
// i into buffers[i] and out[i] (out.size() >= buffers.size()), without
// blocking. Returns how many good datagrams arrived, in order; `status` says
// what ended the batch: kDatagram (every buffer was filled: more may wait),
// kWouldBlock (the socket is drained), or kPeerClosed / kError with `reason`
// for the datagram right after the good ones (as receiveDatagram). Datagrams
// after a bad one are dropped with their descriptors closed, and their bytes
// wiped: nothing past a bad datagram is ever handed out.
std::size_t receiveDatagrams(int fd, std::span<kj::ArrayPtr<capnp::word>> buffers, std::span<Datagram> out,
                             ReceiveStatus& status, std::string& reason) noexcept;

// Checks one received datagram of `bytes` bytes held at the start of
// `words` and returns a reader over it, or nullptr with `reason` set. The
// whole message is traversed once here under `options`, so a message that is
// empty, not a whole number of words, followed by trailing bytes, out of
// bounds, too deep or too large to traverse never reaches a handler. `words`
// must outlive the reader. For peers that send one message per datagram.
std::unique_ptr<capnp::FlatArrayMessageReader> decodeDatagram(kj::ArrayPtr<const capnp::word> words,
                                                              std::size_t bytes, std::string& reason,
                                                              const capnp::ReaderOptions& options = readerOptions());

// The messages of one received datagram, in order, each checked as
// decodeDatagram checks a single one. next() returns nullptr at the end (with
// `reason` empty) or on a bad message (with `reason` set: the rest of the
// datagram must not be used). A datagram with descriptors must hold exactly
// one message. `words`, when given, is set to the message's own words. The
// datagram's words must outlive the readers. This is the step the fuzz
// target drives.
class DatagramMessages {
 public:
  DatagramMessages(kj::ArrayPtr<const capnp::word> words, std::size_t bytes, std::size_t fdCount,
                   const capnp::ReaderOptions& options = readerOptions());
  std::unique_ptr<capnp::FlatArrayMessageReader> next(std::string& reason,
                                                      kj::ArrayPtr<const capnp::word>* words = nullptr);

 private:
  std::string error_;  // a framing error found before the first message (set while rest_ is)
  kj::ArrayPtr<const capnp::word> rest_;
  std::size_t fdCount_;
  std::size_t taken_ = 0;
  capnp::ReaderOptions options_;
};

// A message received with the blocking helper: storage, reader, descriptors.
struct ReceivedMessage {
  kj::Array<capnp::word> storage;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;  // null on failure
  std::vector<UniqueFd> fds;
  std::string error;  // why reader is null
};

// Blocking helpers for simple tools (ipsecctl) and tests: one message out,
// one message in, on a blocking or non-blocking socket. receiveMessage takes
// one datagram and wants one message in it; read what a Channel sends (it
// may coalesce) with an Inbox.
// sendMessage returns 0 or an errno value.
int sendMessage(int fd, capnp::MessageBuilder& message, std::span<const int> fds = {});
// timeoutMs < 0 waits forever.
ReceivedMessage receiveMessage(int fd, int timeoutMs, std::size_t maxBytes = kMaxMessageBytes);

// Reads the messages of a socket one at a time, however the sender grouped
// them into datagrams: for tests and tools that play a Channel's peer.
class Inbox {
 public:
  explicit Inbox(int fd, std::size_t maxBytes = kMaxMessageBytes) : fd_(fd), maxBytes_(maxBytes) {}
  // The next message (waiting up to timeoutMs for a datagram when none is
  // left); reader null with `error` set on a timeout or a bad datagram.
  ReceivedMessage receive(int timeoutMs);
  // Messages of the last datagram not yet returned.
  std::size_t pending() const noexcept { return pending_.size(); }

 private:
  int fd_;
  std::size_t maxBytes_;
  std::vector<ReceivedMessage> pending_;  // in reverse order
};

}  // namespace ipsec::control
