// The batched paths of Channel (lib/control/channel.h): sends held back by a
// SendBatch and handed over with sendmmsg, receives of several datagrams per
// recvmmsg, messages coalesced into shared datagrams. Each test checks what
// batching must not change: order, which message a descriptor rides with,
// and that nothing after a bad message is handled.
#include "control/channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/message.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "test_messages.capnp.h"

namespace ipsec::control {
namespace {

using test::TestMessage;

// A Channel on one end of a socketpair, a raw socket on the other.
struct ChannelAndRaw {
  boost::asio::io_context io;
  UniqueFd raw;
  std::unique_ptr<Inbox> inbox;  // the raw end's messages, however coalesced
  std::optional<Channel> channel;
  std::string closed;

  explicit ChannelAndRaw(Channel::Options options = {}) {
    auto [mine, theirs] = makeSeqpacketPair();
    raw = std::move(theirs);
    inbox = std::make_unique<Inbox>(raw.get());
    channel.emplace(io, std::move(mine), "raw", options);
  }
  void runUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io.run_for(std::chrono::milliseconds(5));
      io.restart();
    }
  }
  bool rawHasData() const {
    char byte;
    return ::recv(raw.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
  }
};

Channel::SendResult sendPing(Channel& channel, std::uint64_t value) {
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().setPing(value);
  return channel.send(message);
}

int sendRawPing(int fd, std::uint64_t value, std::span<const int> fds = {}) {
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().setPing(value);
  return sendMessage(fd, message, fds);
}

UniqueFd memfdHolding(const std::string& text) {
  UniqueFd fd(::memfd_create("batch-test", MFD_CLOEXEC));
  EXPECT_EQ(::write(fd.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
  return fd;
}

std::string contentOf(int fd) {
  char buf[64] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  return std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
}

TEST(SendBatch, HoldsSendsBackUntilItEndsThenDeliversThemInOrder) {
  ChannelAndRaw t;
  {
    SendBatch batch;
    for (std::uint64_t i = 0; i < 300; ++i) ASSERT_EQ(sendPing(*t.channel, i), Channel::SendResult::kQueued);
    EXPECT_FALSE(t.rawHasData());  // nothing reaches the kernel inside the batch
    EXPECT_EQ(t.channel->queuedMessages(), 300u);
  }
  EXPECT_EQ(t.channel->queuedMessages(), 0u);
  for (std::uint64_t i = 0; i < 300; ++i) {
    auto got = t.inbox->receive(1000);
    ASSERT_TRUE(got.reader) << got.error;
    ASSERT_EQ(got.reader->getRoot<TestMessage>().getPing(), i);
  }
  EXPECT_FALSE(t.rawHasData());
}

TEST(SendBatch, NestedBatchesSendAtTheOutermostEnd) {
  ChannelAndRaw t;
  {
    SendBatch outer;
    {
      SendBatch inner;
      sendPing(*t.channel, 1);
    }
    EXPECT_FALSE(t.rawHasData());
  }
  auto got = t.inbox->receive(1000);
  ASSERT_TRUE(got.reader) << got.error;
  EXPECT_EQ(got.reader->getRoot<TestMessage>().getPing(), 1u);
}

TEST(SendBatch, CloseInsideABatchStillSendsWhatItHeldBack) {
  ChannelAndRaw t;
  {
    SendBatch batch;
    sendPing(*t.channel, 42);
    t.channel->close();
    EXPECT_EQ(sendPing(*t.channel, 43), Channel::SendResult::kClosed);
  }
  auto got = t.inbox->receive(1000);
  ASSERT_TRUE(got.reader) << got.error;
  EXPECT_EQ(got.reader->getRoot<TestMessage>().getPing(), 42u);
  auto end = t.inbox->receive(1000);
  EXPECT_FALSE(end.reader);  // then end of stream, not 43
}

TEST(SendBatch, ChannelDestroyedInsideABatchIsSkipped) {
  ChannelAndRaw t;
  {
    SendBatch batch;
    sendPing(*t.channel, 1);
    t.channel.reset();
  }
  SUCCEED();  // the batch's end touched no freed channel (ASan build checks)
}

TEST(SendBatch, DescriptorsStayWithTheirOwnMessages) {
  ChannelAndRaw t;
  std::vector<UniqueFd> memfds;
  {
    SendBatch batch;
    for (int i = 0; i < 100; ++i) {
      capnp::MallocMessageBuilder message;
      if (i % 3 == 0) {
        const std::string text = "message " + std::to_string(i);
        message.initRoot<TestMessage>().setFds(text);
        memfds.push_back(memfdHolding(text));
        const int fd = memfds.back().get();
        ASSERT_EQ(t.channel->send(message, std::span<const int>(&fd, 1)), Channel::SendResult::kQueued);
        memfds.pop_back();  // the channel holds its own copy
      } else {
        message.initRoot<TestMessage>().setPing(static_cast<std::uint64_t>(i));
        ASSERT_EQ(t.channel->send(message), Channel::SendResult::kQueued);
      }
    }
  }
  for (int i = 0; i < 100; ++i) {
    auto got = t.inbox->receive(1000);
    ASSERT_TRUE(got.reader) << got.error;
    auto root = got.reader->getRoot<TestMessage>();
    if (i % 3 == 0) {
      ASSERT_TRUE(root.isFds()) << i;
      ASSERT_EQ(got.fds.size(), 1u) << i;
      EXPECT_EQ(contentOf(got.fds[0].get()), std::string(root.getFds().cStr()));
      EXPECT_EQ(std::string(root.getFds().cStr()), "message " + std::to_string(i));
    } else {
      ASSERT_TRUE(root.isPing()) << i;
      EXPECT_EQ(root.getPing(), static_cast<std::uint64_t>(i));
      EXPECT_TRUE(got.fds.empty()) << i;
    }
  }
}

TEST(BatchedReceive, HandlesManyDatagramsOfMixedSizesInOrderWithTheirDescriptors) {
  ChannelAndRaw t;
  std::vector<std::string> seen;
  t.channel->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>& fds) {
        auto root = reader.getRoot<TestMessage>();
        if (root.isPing()) {
          if (!fds.empty()) return false;
          seen.push_back("ping " + std::to_string(root.getPing()));
        } else if (root.isBlob()) {
          seen.push_back("blob " + std::to_string(root.getBlob().size()));
        } else if (root.isFds()) {
          if (fds.size() != 1 || contentOf(fds[0].get()) != root.getFds().cStr()) return false;
          seen.push_back(root.getFds().cStr());
        } else {
          return false;
        }
        return true;
      },
      [&](std::string_view reason) { t.closed = reason; });
  // Everything is in the socket before the channel reads once, so that
  // recvmmsg takes full batches.
  std::vector<std::string> expected;
  for (int i = 0; i < 150; ++i) {
    if (i == 37 || i == 38) {
      capnp::MallocMessageBuilder message;
      message.initRoot<TestMessage>().initBlob(256 * 1024);
      ASSERT_EQ(sendMessage(t.raw.get(), message), 0);
      expected.push_back("blob " + std::to_string(256 * 1024));
    } else if (i % 7 == 0) {
      const std::string text = "fd " + std::to_string(i);
      UniqueFd memfd = memfdHolding(text);
      capnp::MallocMessageBuilder message;
      message.initRoot<TestMessage>().setFds(text);
      const int fd = memfd.get();
      ASSERT_EQ(sendMessage(t.raw.get(), message, std::span<const int>(&fd, 1)), 0);
      expected.push_back(text);
    } else {
      ASSERT_EQ(sendRawPing(t.raw.get(), static_cast<std::uint64_t>(i)), 0);
      expected.push_back("ping " + std::to_string(i));
    }
  }
  t.runUntil([&] { return seen.size() >= expected.size() || !t.closed.empty(); });
  EXPECT_EQ(t.closed, "");
  EXPECT_EQ(seen, expected);
}

TEST(BatchedReceive, BadDatagramInABatchClosesTheChannelAndNothingAfterItIsHandled) {
  ChannelAndRaw t;
  int handled = 0;
  t.channel->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
        ++handled;
        return reader.getRoot<TestMessage>().isPing();
      },
      [&](std::string_view reason) { t.closed = reason; });
  // After the bad datagram: a good one carrying a pipe's write end. If the
  // channel handled it or leaked it, the read end would never see EOF.
  int pipeFds[2];
  ASSERT_EQ(::pipe2(pipeFds, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd readEnd(pipeFds[0]), writeEnd(pipeFds[1]);
  ASSERT_EQ(sendRawPing(t.raw.get(), 1), 0);
  ASSERT_EQ(sendRawPing(t.raw.get(), 2), 0);
  ASSERT_EQ(::send(t.raw.get(), "abc", 3, 0), 3);
  const int w = writeEnd.get();
  ASSERT_EQ(sendRawPing(t.raw.get(), 3, std::span<const int>(&w, 1)), 0);
  ASSERT_EQ(sendRawPing(t.raw.get(), 4), 0);
  writeEnd.reset();
  t.runUntil([&] { return !t.closed.empty(); });
  EXPECT_NE(t.closed.find("whole number of words"), std::string::npos) << t.closed;
  EXPECT_EQ(handled, 2);
  EXPECT_FALSE(t.channel->isOpen());
  t.raw.reset();  // nothing in flight either
  char byte;
  EXPECT_EQ(::read(readEnd.get(), &byte, 1), 0);  // every copy of the write end is closed
}

// Starts the channel with a handler that records each ping and refuses `refused`.
void startRefusing(ChannelAndRaw& t, std::vector<std::uint64_t>& handled, std::uint64_t refused) {
  t.channel->start(
      [&handled, refused](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
        const auto ping = reader.getRoot<TestMessage>().getPing();
        handled.push_back(ping);
        return ping != refused;
      },
      [&t](std::string_view reason) { t.closed = reason; });
}

TEST(BatchedReceive, RefusedMessageInABatchStopsTheRestOfIt) {
  ChannelAndRaw t;
  std::vector<std::uint64_t> handled;
  startRefusing(t, handled, 5);  // the sixth
  for (std::uint64_t i = 0; i < 12; ++i) ASSERT_EQ(sendRawPing(t.raw.get(), i), 0);
  t.runUntil([&] { return !t.closed.empty(); });
  EXPECT_NE(t.closed.find("unexpected message from raw"), std::string::npos) << t.closed;
  EXPECT_EQ(handled, (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5}));
}

TEST(BatchedReceive, AnswersSentFromHandlersLeaveAfterTheBurstInOrder) {
  ChannelAndRaw t;
  t.channel->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
        // Inside the channel's read burst: the answer is held for the batch.
        return sendPing(*t.channel, reader.getRoot<TestMessage>().getPing() + 1000) ==
               Channel::SendResult::kQueued;
      },
      [&](std::string_view reason) { t.closed = reason; });
  for (std::uint64_t i = 0; i < 40; ++i) ASSERT_EQ(sendRawPing(t.raw.get(), i), 0);
  std::vector<std::uint64_t> answers;
  t.runUntil([&] {
    while (t.inbox->pending() != 0 || t.rawHasData()) {
      auto got = t.inbox->receive(0);
      if (!got.reader) break;
      answers.push_back(got.reader->getRoot<TestMessage>().getPing());
    }
    return answers.size() >= 40 || !t.closed.empty();
  });
  EXPECT_EQ(t.closed, "");
  ASSERT_EQ(answers.size(), 40u);
  for (std::uint64_t i = 0; i < 40; ++i) EXPECT_EQ(answers[i], i + 1000);
}

// The datagrams waiting on `fd`, each as the number of messages it holds.
std::vector<std::size_t> datagramsOn(int fd) {
  std::vector<std::size_t> out;
  auto storage = kj::heapArray<capnp::word>(kMaxMessageBytes / sizeof(capnp::word));
  for (;;) {
    Datagram d;
    std::string reason;
    if (receiveDatagram(fd, storage, d, reason) != ReceiveStatus::kDatagram) return out;
    DatagramMessages messages(storage, d.bytes, d.fds.size());
    std::size_t count = 0;
    while (messages.next(reason)) ++count;
    EXPECT_EQ(reason, "");
    out.push_back(count);
  }
}

TEST(Coalescing, ABurstOfSmallMessagesSharesFewDatagrams) {
  ChannelAndRaw t;
  {
    SendBatch batch;
    for (std::uint64_t i = 0; i < 300; ++i) sendPing(*t.channel, i);
  }
  const auto datagrams = datagramsOn(t.raw.get());
  std::size_t messages = 0;
  for (auto n : datagrams) messages += n;
  EXPECT_EQ(messages, 300u);
  // 64 messages per datagram at most: 300 pings need 5.
  EXPECT_EQ(datagrams.size(), 5u);
  EXPECT_EQ(datagrams.front(), kMaxMessagesPerDatagram);
}

TEST(Coalescing, OffSendsEachMessageInItsOwnDatagram) {
  Channel::Options options;
  options.coalesce = false;
  ChannelAndRaw t(options);
  {
    SendBatch batch;
    for (std::uint64_t i = 0; i < 10; ++i) sendPing(*t.channel, i);
  }
  EXPECT_EQ(datagramsOn(t.raw.get()), std::vector<std::size_t>(10, 1));
}

TEST(Coalescing, AMessageWithDescriptorsTravelsAloneAndLargeMessagesSplitTheRun) {
  ChannelAndRaw t;
  UniqueFd memfd = memfdHolding("x");
  const int fd = memfd.get();
  {
    SendBatch batch;
    sendPing(*t.channel, 1);
    sendPing(*t.channel, 2);
    capnp::MallocMessageBuilder withFd;
    withFd.initRoot<TestMessage>().setFds("x");
    t.channel->send(withFd, std::span<const int>(&fd, 1));
    sendPing(*t.channel, 3);
    capnp::MallocMessageBuilder blob;
    blob.initRoot<TestMessage>().initBlob(kCoalescedDatagramBytes);  // too big to share
    t.channel->send(blob);
    sendPing(*t.channel, 4);
  }
  EXPECT_EQ(datagramsOn(t.raw.get()), (std::vector<std::size_t>{2, 1, 1, 1, 1}));
}

// Sends `count` pings from a raw socket as one coalesced datagram.
void sendCoalescedPings(int fd, std::uint64_t first, std::size_t count, std::span<const int> fds = {}) {
  std::vector<kj::Array<capnp::word>> words;
  for (std::size_t i = 0; i < count; ++i) {
    capnp::MallocMessageBuilder message;
    message.initRoot<TestMessage>().setPing(first + i);
    words.push_back(serialize(message));
  }
  // sendDatagrams refuses descriptors beside several messages: by hand, then.
  std::vector<iovec> iov;
  for (auto& w : words) iov.push_back(iovec{w.asBytes().begin(), w.asBytes().size()});
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = iov.size();
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int));
  }
  ASSERT_GT(::sendmsg(fd, &msg, MSG_NOSIGNAL), 0);
}

TEST(Coalescing, EveryMessageOfAReceivedDatagramIsHandledInOrder) {
  ChannelAndRaw t;
  std::vector<std::uint64_t> handled;
  t.channel->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
        handled.push_back(reader.getRoot<TestMessage>().getPing());
        return true;
      },
      [&](std::string_view reason) { t.closed = reason; });
  sendCoalescedPings(t.raw.get(), 0, 5);
  ASSERT_EQ(sendRawPing(t.raw.get(), 5), 0);
  sendCoalescedPings(t.raw.get(), 6, 3);
  t.runUntil([&] { return handled.size() >= 9 || !t.closed.empty(); });
  EXPECT_EQ(t.closed, "");
  EXPECT_EQ(handled, (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(Coalescing, DescriptorsBesideSeveralMessagesCloseTheChannel) {
  ChannelAndRaw t;
  int handled = 0;
  t.channel->start(
      [&](capnp::MessageReader&, std::vector<UniqueFd>&) {
        ++handled;
        return true;
      },
      [&](std::string_view reason) { t.closed = reason; });
  UniqueFd memfd = memfdHolding("x");
  const int fd = memfd.get();
  sendCoalescedPings(t.raw.get(), 0, 3, std::span<const int>(&fd, 1));
  t.runUntil([&] { return !t.closed.empty(); });
  EXPECT_NE(t.closed.find("descriptors with more than one message"), std::string::npos) << t.closed;
  EXPECT_LE(handled, 1);  // at most the first, which the descriptors may belong to
}

TEST(Coalescing, RefusedMessageInsideADatagramStopsTheRestOfIt) {
  ChannelAndRaw t;
  std::vector<std::uint64_t> handled;
  startRefusing(t, handled, 2);
  sendCoalescedPings(t.raw.get(), 0, 6);
  t.runUntil([&] { return !t.closed.empty(); });
  EXPECT_EQ(handled, (std::vector<std::uint64_t>{0, 1, 2}));
}

}  // namespace
}  // namespace ipsec::control
