// The batched paths of Channel (lib/control/channel.h): sends held back by a
// SendBatch and handed over with sendmmsg, receives of several datagrams per
// recvmmsg. Each test checks what batching must not change: order, which
// message a descriptor rides with, and that nothing after a bad message is
// handled.
#include "control/channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/message.h>

#include <chrono>
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
  std::optional<Channel> channel;
  std::string closed;

  ChannelAndRaw() {
    auto [mine, theirs] = makeSeqpacketPair();
    raw = std::move(theirs);
    channel.emplace(io, std::move(mine), "raw");
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
    auto got = receiveMessage(t.raw.get(), 1000);
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
  auto got = receiveMessage(t.raw.get(), 1000);
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
  auto got = receiveMessage(t.raw.get(), 1000);
  ASSERT_TRUE(got.reader) << got.error;
  EXPECT_EQ(got.reader->getRoot<TestMessage>().getPing(), 42u);
  auto end = receiveMessage(t.raw.get(), 1000);
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
    auto got = receiveMessage(t.raw.get(), 1000);
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

TEST(BatchedReceive, RefusedMessageInABatchStopsTheRestOfIt) {
  ChannelAndRaw t;
  std::vector<std::uint64_t> handled;
  t.channel->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
        const auto ping = reader.getRoot<TestMessage>().getPing();
        handled.push_back(ping);
        return ping != 5;  // the handler refuses the sixth
      },
      [&](std::string_view reason) { t.closed = reason; });
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
    while (t.rawHasData()) {
      auto got = receiveMessage(t.raw.get(), 0);
      if (!got.reader) break;
      answers.push_back(got.reader->getRoot<TestMessage>().getPing());
    }
    return answers.size() >= 40 || !t.closed.empty();
  });
  EXPECT_EQ(t.closed, "");
  ASSERT_EQ(answers.size(), 40u);
  for (std::uint64_t i = 0; i < 40; ++i) EXPECT_EQ(answers[i], i + 1000);
}

}  // namespace
}  // namespace ipsec::control
