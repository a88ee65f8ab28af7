// Channel: one end of a control socketpair, driven by a Boost.Asio loop.
//
// Every process talks to its peers through Channels (DESIGN.md §2; the peer
// table in services/<name>/main.cpp says which). A message is a Cap'n Proto
// message in a SOCK_SEQPACKET datagram (several share one when a burst is
// sent), with optional descriptors in SCM_RIGHTS (wire.h). The peer is not trusted to be well-formed: any framing
// error, malformed message, or message the handler refuses (unknown union
// member, wrong sender) closes the channel and reports why; the owner then
// fails closed (STYLE.md §3, §6).
//
// Single-threaded: all calls and callbacks happen on the io_context's thread.
// onClose runs from the io_context, never inside send() or close(), so an
// owner may destroy the Channel from any callback.
//
// Batching (fewer system calls and datagrams per message): a readable channel
// takes up to kMaxBatch datagrams per recvmmsg and handles a burst of them
// before yielding to the loop; while a SendBatch is alive on the thread (one
// is, around every such burst) send() queues, and the batch's end hands each
// channel's queue to the kernel with sendmmsg, consecutive messages without
// descriptors sharing datagrams (wire.h). Order per channel is kept,
// descriptors travel with their own message, and a message queued by a batch
// is still sent if its channel is close()d before the batch ends.
#pragma once

#include <utility>  // before asio: Boost 1.74 with GCC 12 in C++20 misses it

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <capnp/message.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "control/unique_fd.h"
#include "control/wire.h"

namespace ipsec::control {

class Channel;

// Holds back the sends of this thread's channels until the outermost
// SendBatch ends, then sends each channel's queue in sendmmsg batches, in the
// order the channels were first sent to. For loops that handle a burst of
// requests (a read burst on a channel, on PF_KEY sockets) and answer each.
class SendBatch {
 public:
  SendBatch() noexcept;
  ~SendBatch();
  SendBatch(const SendBatch&) = delete;
  SendBatch& operator=(const SendBatch&) = delete;
};

class Channel {
 public:
  // Returns false (or throws) when the message is unexpected: the channel closes.
  // Descriptors the handler leaves in the vector are closed after it returns.
  using MessageHandler = std::function<bool(capnp::MessageReader&, std::vector<UniqueFd>&)>;
  using CloseHandler = std::function<void(std::string_view reason)>;

  struct Options {
    std::size_t maxMessageBytes = kMaxMessageBytes;  // receive buffer and send limit
    // The send queue is bounded: a peer that stops reading is a peer that
    // misbehaves. Between services one message per SA or policy can be due
    // at once (a restarted data plane is given every SA and policy again, a
    // FLUSH removes each, a burst of ADDs outruns the forwarder, a million
    // lifetimes expire together), so the bound is sized for tables of a
    // million entries, not for a burst.
    std::size_t maxQueuedMessages = std::size_t{1} << 20;
    std::size_t maxQueuedBytes = std::size_t{1} << 30;
    // Queued messages without descriptors share datagrams (wire.h). Off for
    // a peer that reads one message per datagram (ipsecctl's receiveMessage).
    bool coalesce = true;
  };

  enum class SendResult {
    kSent,      // handed to the kernel
    kQueued,    // socket buffer full; sent in order when it drains
    kClosed,    // the channel is (now) closed; onClose will say why
    kTooLarge,  // above the datagram limit: split the message
  };

  Channel(boost::asio::io_context& io, UniqueFd fd, std::string peerName);
  Channel(boost::asio::io_context& io, UniqueFd fd, std::string peerName, Options options);
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  ~Channel();

  // `fds` stay owned by the caller (they are duplicated if the message queues).
  // While a SendBatch is alive the message queues (kQueued) for the batch's end.
  SendResult send(capnp::MessageBuilder& message, std::span<const int> fds = {});

  // Begins reading. onClose runs once, for a close this end did not ask for.
  void start(MessageHandler onMessage, CloseHandler onClose);

  // Closes the socket and drops queued messages; onClose does not run.
  void close() noexcept;

  bool isOpen() const noexcept { return socket_.is_open(); }
  const std::string& peerName() const noexcept { return peerName_; }
  std::size_t queuedMessages() const noexcept { return queue_.size(); }
  // The largest message send() accepts on this socket.
  std::size_t maxSendBytes() const noexcept { return maxSendBytes_; }

 private:
  friend class SendBatch;

  struct Pending {
    kj::Array<capnp::word> words;
    std::vector<UniqueFd> fds;
  };

  void armRead();
  void onReadable();
  void armWrite();
  void flush();
  // Sends what the queue holds, in batches, until it is empty or the socket
  // refuses one. Returns 0, EAGAIN (the rest waits) or the errno that failed.
  int sendQueued();
  void wipeSlots() noexcept;
  void fail(std::string reason);
  bool dispatch(capnp::MessageReader& reader, std::vector<UniqueFd>& fds, std::string& reason);

  boost::asio::posix::stream_descriptor socket_;
  std::string peerName_;
  Options options_;
  std::size_t maxSendBytes_;
  // kReceiveSlots receive buffers of maxMessageBytes each, one per datagram
  // of a recvmmsg (malloc'ed, untouched: pages only count once used).
  std::size_t slotWords_;
  kj::Array<capnp::word> receiveBuffer_;
  std::vector<kj::ArrayPtr<capnp::word>> slots_;
  std::vector<Datagram> received_;
  std::vector<std::size_t> slotBytes_;  // bytes in each slot not yet wiped
  std::deque<Pending> queue_;
  std::vector<kj::ArrayPtr<const capnp::word>> moreWords_;  // sendQueued's coalesced messages
  std::size_t queuedBytes_ = 0;
  bool writeArmed_ = false;
  bool inBatch_ = false;  // listed in this thread's SendBatch with queued sends
  MessageHandler onMessage_;
  CloseHandler onClose_;
  // Handlers hold a weak_ptr to this: a callback that destroyed the Channel
  // is noticed before any member is touched again.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace ipsec::control
