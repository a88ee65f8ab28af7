// Channel: asio-driven control channel; see channel.h for the contract.
#include "control/channel.h"

#include <fcntl.h>

#include <boost/asio/post.hpp>
#include <kj/exception.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <exception>

namespace ipsec::control {
namespace {

// Datagrams handled per readiness event before yielding to other channels.
constexpr int kReadBurst = 64;

std::string errnoText(const char* what, int error) { return std::string(what) + ": " + std::strerror(error); }

bool transientSendError(int error) { return error == EAGAIN || error == ENOBUFS; }

}  // namespace

Channel::Channel(boost::asio::io_context& io, UniqueFd fd, std::string peerName)
    : Channel(io, std::move(fd), std::move(peerName), Options{}) {}

Channel::Channel(boost::asio::io_context& io, UniqueFd fd, std::string peerName, Options options)
    : socket_(io),
      peerName_(std::move(peerName)),
      options_(options),
      maxSendBytes_(sizeSocketBuffers(fd.get(), options.maxMessageBytes)),
      receiveBuffer_(kj::heapArray<capnp::word>((options.maxMessageBytes + 7) / sizeof(capnp::word))) {
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
  socket_.assign(fd.release());
}

Channel::~Channel() {
  alive_.reset();
  close();
  explicit_bzero(receiveBuffer_.begin(), receiveBuffer_.size() * sizeof(capnp::word));
}

void Channel::start(MessageHandler onMessage, CloseHandler onClose) {
  onMessage_ = std::move(onMessage);
  onClose_ = std::move(onClose);
  if (isOpen()) armRead();
}

void Channel::close() noexcept {
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

  if (queue_.empty()) {
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
  while (!queue_.empty()) {
    Pending& front = queue_.front();
    std::array<int, kMaxFdsPerMessage> raw{};
    for (std::size_t i = 0; i < front.fds.size(); ++i) raw[i] = front.fds[i].get();
    const int error =
        sendDatagram(socket_.native_handle(), front.words, std::span<const int>(raw.data(), front.fds.size()));
    if (transientSendError(error)) return armWrite();
    if (error != 0) return fail(errnoText("sendmsg", error));
    queuedBytes_ -= front.words.size() * sizeof(capnp::word);
    queue_.pop_front();
  }
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
  for (int i = 0; i < kReadBurst; ++i) {
    Datagram datagram;
    std::string reason;
    switch (receiveDatagram(socket_.native_handle(), receiveBuffer_, datagram, reason)) {
      case ReceiveStatus::kWouldBlock: return armRead();
      case ReceiveStatus::kPeerClosed:
      case ReceiveStatus::kError: return fail(std::move(reason));
      case ReceiveStatus::kDatagram: break;
    }
    auto reader = decodeDatagram(receiveBuffer_, datagram.bytes, reason);
    if (!reader) return fail("from " + peerName_ + ": " + reason);
    const bool ok = dispatch(*reader, datagram.fds, reason);
    if (alive.expired()) return;  // the handler destroyed us (the destructor wiped the buffer)
    // Key material crosses some channels: leave no copy in the receive buffer.
    explicit_bzero(receiveBuffer_.begin(), datagram.bytes);
    if (!isOpen()) return;  // the handler closed us
    if (!ok) return fail(std::move(reason));
  }
  armRead();  // more may be waiting; let other channels run first
}

}  // namespace ipsec::control
