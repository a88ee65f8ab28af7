// Channel over a real socketpair in one io_context (lib/control/channel.h):
// round trips, descriptors, peer close, misbehaving peers, send queueing.
#include "control/channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
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

struct Pair {
  boost::asio::io_context io;
  std::optional<Channel> a;
  std::optional<Channel> b;
  std::string closedA, closedB;  // onClose reasons

  explicit Pair(Channel::Options options = {}) {
    auto [fdA, fdB] = makeSeqpacketPair();
    a.emplace(io, std::move(fdA), "peer-b", options);
    b.emplace(io, std::move(fdB), "peer-a", options);
  }
  void runUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io.run_for(std::chrono::milliseconds(5));
      io.restart();
    }
  }
};

Channel::CloseHandler recordClose(std::string& into) {
  return [&into](std::string_view reason) { into = reason; };
}

void sendPing(Channel& channel, std::uint64_t value) {
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().setPing(value);
  ASSERT_NE(channel.send(message), Channel::SendResult::kClosed);
}

TEST(Channel, PingPongsMessagesBothWays) {
  Pair p;
  std::uint64_t lastAtA = 0;
  p.b->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
        auto root = reader.getRoot<TestMessage>();
        if (!root.isPing()) return false;
        sendPing(*p.b, root.getPing() + 1);
        return true;
      },
      recordClose(p.closedB));
  p.a->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
        lastAtA = reader.getRoot<TestMessage>().getPing();
        if (lastAtA < 200) sendPing(*p.a, lastAtA + 1);
        return true;
      },
      recordClose(p.closedA));
  sendPing(*p.a, 0);
  p.runUntil([&] { return lastAtA >= 201; });
  EXPECT_EQ(lastAtA, 201u);  // a sends the evens, b answers with the odds
  EXPECT_TRUE(p.a->isOpen() && p.b->isOpen());
  EXPECT_EQ(p.closedA + p.closedB, "");
}

TEST(Channel, PassesAnEventfdAndAMemfdThatTheReceiverUses) {
  Pair p;
  UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  UniqueFd memory(::memfd_create("control-test", MFD_CLOEXEC));
  ASSERT_EQ(::write(memory.get(), "shared bytes", 12), 12);

  bool handled = false;
  p.b->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>& fds) {
        auto root = reader.getRoot<TestMessage>();
        if (!root.isFds() || fds.size() != 2) return false;
        char content[32] = {};
        const ssize_t n = ::pread(fds[1].get(), content, sizeof content, 0);
        EXPECT_EQ(std::string(content, n > 0 ? n : 0), std::string(root.getFds().cStr()));
        const std::uint64_t three = 3;
        EXPECT_EQ(::write(fds[0].get(), &three, sizeof three), 8);
        handled = true;
        return true;
      },
      recordClose(p.closedB));

  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().setFds("shared bytes");
  const int fds[] = {event.get(), memory.get()};
  EXPECT_EQ(p.a->send(message, fds), Channel::SendResult::kSent);
  p.runUntil([&] { return handled; });
  ASSERT_TRUE(handled) << p.closedB;
  std::uint64_t value = 0;
  ASSERT_EQ(::read(event.get(), &value, sizeof value), 8);
  EXPECT_EQ(value, 3u);
}

TEST(Channel, NoticesThatThePeerClosed) {
  Pair p;
  p.a->start([](capnp::MessageReader&, std::vector<UniqueFd>&) { return true; }, recordClose(p.closedA));
  p.b.reset();
  p.runUntil([&] { return !p.closedA.empty(); });
  EXPECT_NE(p.closedA.find("peer closed"), std::string::npos) << p.closedA;
  EXPECT_FALSE(p.a->isOpen());
}

TEST(Channel, LocalCloseDoesNotRunOnClose) {
  Pair p;
  p.a->start([](capnp::MessageReader&, std::vector<UniqueFd>&) { return true; }, recordClose(p.closedA));
  p.a->close();
  p.io.run_for(std::chrono::milliseconds(50));  // nothing should ever arrive
  EXPECT_EQ(p.closedA, "");
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().setPing(1);
  EXPECT_EQ(p.a->send(message), Channel::SendResult::kClosed);
}

// A raw peer that writes bytes that are not a message.
class MisbehavingPeer : public ::testing::Test {
 protected:
  void SetUp() override {
    auto [mine, theirs] = makeSeqpacketPair();
    raw_ = std::move(theirs);
    channel_.emplace(io_, std::move(mine), "peer", options_);
    channel_->start(
        [this](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
          ++messages_;
          return reader.getRoot<TestMessage>().isPing();
        },
        [this](std::string_view reason) { closed_ = reason; });
  }
  void runUntilClosed() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (closed_.empty() && std::chrono::steady_clock::now() < deadline) {
      io_.run_for(std::chrono::milliseconds(5));
      io_.restart();
    }
  }
  boost::asio::io_context io_;
  Channel::Options options_{4096, 16, 1 << 20};
  UniqueFd raw_;
  std::optional<Channel> channel_;
  int messages_ = 0;
  std::string closed_;
};

TEST_F(MisbehavingPeer, PartialWordDatagramClosesTheChannel) {
  ASSERT_EQ(::send(raw_.get(), "abc", 3, 0), 3);
  runUntilClosed();
  EXPECT_NE(closed_.find("whole number of words"), std::string::npos) << closed_;
  EXPECT_FALSE(channel_->isOpen());
  EXPECT_EQ(messages_, 0);
}

TEST_F(MisbehavingPeer, GarbageWordsCloseTheChannel) {
  const std::uint64_t garbage[2] = {0x00000000ffffffffULL, 0x1234567890abcdefULL};
  ASSERT_EQ(::send(raw_.get(), garbage, sizeof garbage, 0), 16);
  runUntilClosed();
  EXPECT_EQ(closed_.rfind("from peer: ", 0), 0u) << closed_;  // names the peer, then why
  EXPECT_EQ(messages_, 0);
}

TEST_F(MisbehavingPeer, OversizedDatagramIsTruncatedAndClosesTheChannel) {
  std::vector<char> big(8192, 0);
  ASSERT_EQ(::send(raw_.get(), big.data(), big.size(), 0), 8192);
  runUntilClosed();
  EXPECT_NE(closed_.find("truncated"), std::string::npos) << closed_;
}

TEST_F(MisbehavingPeer, TooDeepMessageIsRejectedBeforeTheHandler) {
  capnp::MallocMessageBuilder message;
  auto node = message.initRoot<TestMessage>().initNested();
  for (int i = 0; i < kNestingLimit + 2; ++i) node = node.initChild();
  ASSERT_EQ(sendMessage(raw_.get(), message), 0);
  runUntilClosed();
  EXPECT_NE(closed_.find("deeply"), std::string::npos) << closed_;
  EXPECT_EQ(messages_, 0);
}

TEST_F(MisbehavingPeer, UnexpectedMessageClosesTheChannelAfterEarlierOnesArrive) {
  capnp::MallocMessageBuilder ping, blob;
  ping.initRoot<TestMessage>().setPing(7);
  blob.initRoot<TestMessage>().initBlob(8);
  ASSERT_EQ(sendMessage(raw_.get(), ping), 0);
  ASSERT_EQ(sendMessage(raw_.get(), blob), 0);
  ASSERT_EQ(sendMessage(raw_.get(), ping), 0);
  runUntilClosed();
  EXPECT_NE(closed_.find("unexpected message from peer"), std::string::npos) << closed_;
  EXPECT_EQ(messages_, 2);  // the third is never read
}

TEST(Channel, HandlerThatThrowsClosesTheChannel) {
  Pair p;
  p.b->start([](capnp::MessageReader&, std::vector<UniqueFd>&) -> bool { throw std::runtime_error("no thanks"); },
             recordClose(p.closedB));
  sendPing(*p.a, 1);
  p.runUntil([&] { return !p.closedB.empty(); });
  EXPECT_NE(p.closedB.find("no thanks"), std::string::npos) << p.closedB;
}

TEST(Channel, OwnerMayDestroyTheChannelFromItsCallbacks) {
  Pair p;
  bool closed = false;
  p.a->start([](capnp::MessageReader&, std::vector<UniqueFd>&) { return true; },
             [&](std::string_view) {
               p.a.reset();
               closed = true;
             });
  p.b->start(
      [&](capnp::MessageReader&, std::vector<UniqueFd>&) {
        p.b.reset();  // from inside its own message handler
        return true;
      },
      recordClose(p.closedB));
  sendPing(*p.a, 1);
  sendPing(*p.a, 2);
  p.runUntil([&] { return closed; });
  EXPECT_TRUE(closed);
  EXPECT_FALSE(p.a);
  EXPECT_FALSE(p.b);
}

TEST(Channel, QueuesUnderEagainAndDeliversEverythingInOrder) {
  Pair p;
  constexpr std::size_t kBlob = 64 * 1024;
  std::uint64_t sent = 0;
  bool queued = false;
  // Nobody reads yet: the socket buffer fills and send() starts queueing.
  while (sent < 200) {
    capnp::MallocMessageBuilder message;
    auto blob = message.initRoot<TestMessage>().initBlob(kBlob);
    std::memcpy(blob.begin(), &sent, sizeof sent);
    const auto result = p.a->send(message);
    ASSERT_NE(result, Channel::SendResult::kClosed) << p.closedA;
    queued |= result == Channel::SendResult::kQueued;
    ++sent;
  }
  EXPECT_TRUE(queued);
  EXPECT_GT(p.a->queuedMessages(), 0u);

  std::uint64_t received = 0;
  bool ordered = true;
  p.b->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
        auto blob = reader.getRoot<TestMessage>().getBlob();
        std::uint64_t index;
        std::memcpy(&index, blob.begin(), sizeof index);
        ordered &= index == received++ && blob.size() == kBlob;
        return true;
      },
      recordClose(p.closedB));
  p.runUntil([&] { return received == sent; });
  EXPECT_EQ(received, sent);
  EXPECT_TRUE(ordered);
  EXPECT_EQ(p.a->queuedMessages(), 0u);
}

TEST(Channel, QueuedDescriptorsOutliveTheCallersCopies) {
  Pair p;
  // Fill the socket so the next send queues.
  for (;;) {
    capnp::MallocMessageBuilder filler;
    filler.initRoot<TestMessage>().initBlob(64 * 1024);
    if (p.a->send(filler) == Channel::SendResult::kQueued) break;
  }
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  UniqueFd keep(::fcntl(event.get(), F_DUPFD_CLOEXEC, 0));  // to read the counter later
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().setFds("late");
  const int fds[] = {event.get()};
  ASSERT_EQ(p.a->send(message, fds), Channel::SendResult::kQueued);
  event.reset();  // the caller is done with it

  bool got = false;
  p.b->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>& fds) {
        if (reader.getRoot<TestMessage>().isFds()) {
          const std::uint64_t one = 1;
          got = fds.size() == 1 && ::write(fds[0].get(), &one, sizeof one) == 8;
        }
        return true;
      },
      recordClose(p.closedB));
  p.runUntil([&] { return got; });
  EXPECT_TRUE(got);
  std::uint64_t value = 0;
  EXPECT_EQ(::read(keep.get(), &value, sizeof value), 8);
  EXPECT_EQ(value, 1u);
}

TEST(Channel, FullSendQueueClosesTheChannel) {
  Pair p(Channel::Options{kMaxMessageBytes, 4, 64 << 20});
  p.a->start([](capnp::MessageReader&, std::vector<UniqueFd>&) { return true; }, recordClose(p.closedA));
  Channel::SendResult result = Channel::SendResult::kSent;
  for (int i = 0; i < 1000 && result != Channel::SendResult::kClosed; ++i) {
    capnp::MallocMessageBuilder message;
    message.initRoot<TestMessage>().initBlob(64 * 1024);
    result = p.a->send(message);
  }
  EXPECT_EQ(result, Channel::SendResult::kClosed);
  p.runUntil([&] { return !p.closedA.empty(); });
  EXPECT_NE(p.closedA.find("send queue full"), std::string::npos) << p.closedA;
}

TEST(Channel, RefusesAMessageAboveTheDatagramLimit) {
  Pair p;
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().initBlob(kMaxMessageBytes + 8);
  EXPECT_EQ(p.a->send(message), Channel::SendResult::kTooLarge);
  EXPECT_TRUE(p.a->isOpen());
}

TEST(Channel, CarriesANearlyMebibyteMessage) {
  Pair p;
  std::size_t size = 0;
  p.b->start(
      [&](capnp::MessageReader& reader, std::vector<UniqueFd>&) {
        size = reader.getRoot<TestMessage>().getBlob().size();
        return true;
      },
      recordClose(p.closedB));
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().initBlob(kMaxMessageBytes - 4096);
  ASSERT_EQ(p.a->send(message), Channel::SendResult::kSent);
  p.runUntil([&] { return size != 0 || !p.closedB.empty(); });
  EXPECT_EQ(size, kMaxMessageBytes - 4096) << p.closedB;
}

}  // namespace
}  // namespace ipsec::control
