// Channel: asio-driven control channel; see channel.h for the contract.
#include "control/channel.h"

#include <fcntl.h>

#include <boost/asio/post.hpp>
#include <kj/exception.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <exception>

namespace ipsec::control {
namespace {

// Datagrams handled per readiness event before yielding to other channels.
constexpr std::size_t kReadBurst = 64;
// Receive buffers, so datagrams per recvmmsg. Each is maxMessageBytes of
// address space; only the pages datagrams reach are ever touched.
constexpr std::size_t kReceiveSlots = 16;

std::string errnoText(const char* what, int error) { return std::string(what) + ": " + std::strerror(error); }

bool transientSendError(int error) { return error == EAGAIN || error == ENOBUFS; }

// This thread's open SendBatches and the channels with sends held back.
struct BatchState {
  int depth = 0;
  std::vector<std::pair<Channel*, std::weak_ptr<int>>> channels;
};
thread_local BatchState tBatch;

}  // namespace

SendBatch::SendBatch() noexcept { ++tBatch.depth; }

SendBatch::~SendBatch() {
  if (--tBatch.depth > 0) return;
  // A flush may fail a channel (onClose is posted, never run here) but
  // sends nothing new, so the list does not grow while it is walked.
  auto channels = std::move(tBatch.channels);
  tBatch.channels.clear();
  for (auto& [channel, alive] : channels) {
    if (alive.expired() || !channel->inBatch_) continue;
    channel->inBatch_ = false;
    if (channel->isOpen()) channel->flush();
  }
  if (tBatch.channels.capacity() < channels.capacity()) tBatch.channels = std::move(channels);
  tBatch.channels.clear();
}

Channel::Channel(boost::asio::io_context& io, UniqueFd fd, std::string peerName)
    : Channel(io, std::move(fd), std::move(peerName), Options{}) {}

Channel::Channel(boost::asio::io_context& io, UniqueFd fd, std::string peerName, Options options)
    : socket_(io),
      peerName_(std::move(peerName)),
      options_(options),
      maxSendBytes_(sizeSocketBuffers(fd.get(), options.maxMessageBytes)),
      slotWords_((options.maxMessageBytes + 7) / sizeof(capnp::word)),
      receiveBuffer_(kj::heapArray<capnp::word>(slotWords_ * kReceiveSlots)),
      received_(kReceiveSlots),
      slotBytes_(kReceiveSlots, 0) {
  for (std::size_t i = 0; i < kReceiveSlots; ++i) slots_.push_back(receiveBuffer_.slice(i * slotWords_, (i + 1) * slotWords_));
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
  socket_.assign(fd.release());
}

Channel::~Channel() {
  alive_.reset();
  close();
  wipeSlots();
}

void Channel::wipeSlots() noexcept {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slotBytes_[i] != 0) explicit_bzero(slots_[i].begin(), slotBytes_[i]);
    slotBytes_[i] = 0;
    received_[i].fds.clear();
  }
}

void Channel::start(MessageHandler onMessage, CloseHandler onClose) {
  onMessage_ = std::move(onMessage);
  onClose_ = std::move(onClose);
  if (isOpen()) armRead();
}

void Channel::close() noexcept {
  // Without the batch these would already be in the kernel: send what fits.
  if (inBatch_ && socket_.is_open()) {
    try {
      sendQueued();
    } catch (...) {
    }
  }
  inBatch_ = false;
  boost::system::error_code ignored;
  socket_.close(ignored);  // cancels pending waits
  queue_.clear();
  queuedBytes_ = 0;
}

void Channel::fail(std::string reason) {
  if (!isOpen()) return;
  close();
  // Deliver from the loop, so that no caller of send() finds itself
  // destroyed by its own owner's close handler.
  std::weak_ptr<int> alive = alive_;
  boost::asio::post(socket_.get_executor(), [this, alive, reason = std::move(reason)] {
    if (alive.expired() || !onClose_) return;
    auto onClose = std::move(onClose_);
    onClose_ = nullptr;
    onClose(reason);
  });
}

Channel::SendResult Channel::send(capnp::MessageBuilder& message, std::span<const int> fds) {
  if (!isOpen()) return SendResult::kClosed;
  auto words = serialize(message);
  const std::size_t bytes = words.size() * sizeof(capnp::word);
  if (bytes > maxSendBytes_ || fds.size() > kMaxFdsPerMessage) return SendResult::kTooLarge;

  const bool batching = tBatch.depth > 0;
  if (queue_.empty() && !batching) {
    const int error = sendDatagram(socket_.native_handle(), words, fds);
    if (error == 0) return SendResult::kSent;
    if (error == EMSGSIZE) return SendResult::kTooLarge;
    if (!transientSendError(error)) {
      fail(errnoText("sendmsg", error));
      return SendResult::kClosed;
    }
  }
  if (queue_.size() >= options_.maxQueuedMessages || queuedBytes_ + bytes > options_.maxQueuedBytes) {
    fail("send queue full: " + peerName_ + " is not reading");
    return SendResult::kClosed;
  }
  Pending pending{std::move(words), {}};
  for (int fd : fds) {
    // The caller may close its descriptors as soon as send() returns.
    UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!copy) {
      fail(errnoText("dup of a descriptor to send", errno));
      return SendResult::kClosed;
    }
    pending.fds.push_back(std::move(copy));
  }
  queuedBytes_ += bytes;
  queue_.push_back(std::move(pending));
  if (batching && !writeArmed_) {
    // The batch's end sends it (or arms the write wait if the socket is full).
    if (!inBatch_) {
      inBatch_ = true;
      tBatch.channels.emplace_back(this, alive_);
    }
    return SendResult::kQueued;
  }
  armWrite();
  return SendResult::kQueued;
}

void Channel::armWrite() {
  if (writeArmed_) return;
  writeArmed_ = true;
  std::weak_ptr<int> alive = alive_;
  socket_.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                     [this, alive](const boost::system::error_code& ec) {
                       if (alive.expired()) return;
                       writeArmed_ = false;
                       if (ec == boost::asio::error::operation_aborted || !isOpen()) return;
                       if (ec) return fail("wait for write: " + ec.message());
                       flush();
                     });
}

void Channel::flush() {
  const int error = sendQueued();
  if (error == 0) return;
  if (transientSendError(error)) return armWrite();
  fail(errnoText("sendmsg", error));
}

int Channel::sendQueued() {
  std::array<OutDatagram, kMaxBatch> batch;
  std::array<std::array<int, kMaxFdsPerMessage>, kMaxBatch> raw{};
  std::array<std::size_t, kMaxBatch> messagesIn{};  // queue entries each datagram carries
  std::array<std::size_t, kMaxBatch> moreAt{};       // where its `more` starts in moreWords_
  const std::size_t coalesceBytes = std::min(kCoalescedDatagramBytes, maxSendBytes_);
  while (!queue_.empty()) {
    // Consecutive messages without descriptors share a datagram, up to
    // coalesceBytes; a message with descriptors, or a large one, goes alone.
    moreWords_.clear();
    std::size_t count = 0;
    std::size_t next = 0;
    while (count < kMaxBatch && next < queue_.size()) {
      Pending& first = queue_[next];
      for (std::size_t f = 0; f < first.fds.size(); ++f) raw[count][f] = first.fds[f].get();
      std::size_t taken = 1;
      std::size_t bytes = first.words.size() * sizeof(capnp::word);
      const std::size_t moreStart = moreWords_.size();
      if (options_.coalesce && first.fds.empty()) {
        while (next + taken < queue_.size() && taken < kMaxMessagesPerDatagram) {
          const Pending& p = queue_[next + taken];
          const std::size_t add = p.words.size() * sizeof(capnp::word);
          if (!p.fds.empty() || bytes + add > coalesceBytes) break;
          moreWords_.push_back(p.words);
          bytes += add;
          ++taken;
        }
      }
      batch[count] = OutDatagram{first.words, std::span<const int>(raw[count].data(), first.fds.size())};
      messagesIn[count] = taken;
      moreAt[count] = moreStart;
      next += taken;
      ++count;
    }
    // moreWords_ has stopped growing: its elements no longer move.
    for (std::size_t i = 0; i < count; ++i) {
      batch[i].more = std::span<const kj::ArrayPtr<const capnp::word>>(moreWords_.data() + moreAt[i], messagesIn[i] - 1);
    }
    int error = 0;
    const std::size_t sent =
        sendDatagrams(socket_.native_handle(), std::span<const OutDatagram>(batch.data(), count), error);
    for (std::size_t i = 0; i < sent; ++i) {
      for (std::size_t m = 0; m < messagesIn[i]; ++m) {
        queuedBytes_ -= queue_.front().words.size() * sizeof(capnp::word);
        queue_.pop_front();  // the words wipe themselves (serialize's disposer)
      }
    }
    if (error != 0) return error;
  }
  return 0;
}

void Channel::armRead() {
  std::weak_ptr<int> alive = alive_;
  socket_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                     [this, alive](const boost::system::error_code& ec) {
                       if (alive.expired()) return;
                       if (ec == boost::asio::error::operation_aborted || !isOpen()) return;
                       if (ec) return fail("wait for read: " + ec.message());
                       onReadable();
                     });
}

bool Channel::dispatch(capnp::MessageReader& reader, std::vector<UniqueFd>& fds, std::string& reason) {
  try {
    if (onMessage_ && onMessage_(reader, fds)) return true;
    reason = "unexpected message from " + peerName_;
  } catch (const kj::Exception& e) {
    reason = "bad message from " + peerName_ + ": " + e.getDescription().cStr();
  } catch (const std::exception& e) {
    reason = "bad message from " + peerName_ + ": " + e.what();
  }
  return false;
}

void Channel::onReadable() {
  std::weak_ptr<int> alive = alive_;
  SendBatch batch;  // the answers to this burst leave together, per channel
  for (std::size_t handled = 0; handled < kReadBurst;) {
    ReceiveStatus status = ReceiveStatus::kDatagram;
    std::string reason;
    const std::size_t got = receiveDatagrams(socket_.native_handle(), slots_, received_, status, reason);
    for (std::size_t i = 0; i < got; ++i) slotBytes_[i] = received_[i].bytes;
    for (std::size_t i = 0; i < got; ++i) {
      std::string why;
      DatagramMessages messages(slots_[i], received_[i].bytes, received_[i].fds.size());
      for (;;) {
        auto reader = messages.next(why);
        if (!reader) {
          if (why.empty()) break;  // the datagram's last message was handled
          wipeSlots();  // nothing after a bad message is handled
          return fail("from " + peerName_ + ": " + why);
        }
        const bool ok = dispatch(*reader, received_[i].fds, why);
        if (alive.expired()) return;  // the handler destroyed us (the destructor wiped the slots)
        reader.reset();
        if (!isOpen()) return wipeSlots();  // the handler closed us
        if (!ok) {
          wipeSlots();
          return fail(std::move(why));
        }
      }
      // Key material crosses some channels: leave no copy in the receive buffer.
      received_[i].fds.clear();
      explicit_bzero(slots_[i].begin(), slotBytes_[i]);
      slotBytes_[i] = 0;
    }
    handled += got;
    switch (status) {
      case ReceiveStatus::kWouldBlock: return armRead();
      case ReceiveStatus::kPeerClosed:
      case ReceiveStatus::kError: return fail(std::move(reason));
      case ReceiveStatus::kDatagram: break;
    }
  }
  armRead();  // more may be waiting; let other channels run first
}

}  // namespace ipsec::control
