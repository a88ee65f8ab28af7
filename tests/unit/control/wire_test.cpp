// Framing and decoding of control datagrams (lib/control/wire.h): what a
// misbehaving peer can put in a datagram, and what comes out.
#include "control/wire.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/message.h>

#include <cstring>
#include <vector>

#include "test_messages.capnp.h"

namespace ipsec::control {
namespace {

using test::TestMessage;

int countOpenFds() {
  int count = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  while (dirent* entry = ::readdir(dir)) count += entry->d_name[0] != '.';
  ::closedir(dir);
  return count - 1;  // the DIR's own descriptor
}

std::string decodeError(const std::vector<capnp::word>& words, std::size_t bytes,
                        const capnp::ReaderOptions& options = readerOptions()) {
  std::string reason;
  auto reader = decodeDatagram(kj::ArrayPtr<const capnp::word>(words.data(), words.size()), bytes, reason, options);
  if (reader) return "";
  EXPECT_FALSE(reason.empty());
  return reason;
}

std::vector<capnp::word> flat(capnp::MessageBuilder& message) {
  auto array = serialize(message);
  return std::vector<capnp::word>(array.begin(), array.end());
}

std::vector<capnp::word> nestedMessage(int depth) {
  capnp::MallocMessageBuilder message;
  auto node = message.initRoot<TestMessage>().initNested();
  for (int i = 1; i < depth; ++i) node = node.initChild();
  return flat(message);
}

capnp::word rawWord(std::uint64_t value) {
  capnp::word w;
  std::memcpy(static_cast<void*>(&w), &value, sizeof w);
  return w;
}

// One segment: a root struct whose only pointer is a list of `fanout`
// pointers, every one aimed at the same `blobWords`-word byte list. Small on
// the wire, fanout * blobWords words to traverse: the amplification the
// traversal limit exists for.
std::vector<capnp::word> amplifiedMessage(std::uint32_t fanout, std::uint32_t blobWords) {
  const std::uint64_t segmentWords = 2 + fanout + blobWords;
  std::vector<capnp::word> words;
  words.push_back(rawWord(segmentWords << 32));             // segment table: 1 segment
  words.push_back(rawWord(std::uint64_t{1} << 48));         // root: struct, 0 data, 1 pointer
  words.push_back(rawWord(1 | (6ull << 32) | (std::uint64_t{fanout} << 35)));  // list of pointers
  for (std::uint32_t i = 0; i < fanout; ++i) {
    const std::uint64_t offset = fanout - 1 - i;  // from the word after element i to the blob
    words.push_back(rawWord((offset << 2) | 1 | (2ull << 32) | (std::uint64_t{blobWords} * 8 << 35)));
  }
  words.resize(words.size() + blobWords, rawWord(0));
  return words;
}

TEST(DecodeDatagram, AcceptsAWellFormedMessage) {
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().setPing(42);
  auto words = flat(message);
  std::string reason;
  auto reader = decodeDatagram(kj::ArrayPtr<const capnp::word>(words.data(), words.size()),
                               words.size() * sizeof(capnp::word), reason);
  ASSERT_TRUE(reader) << reason;
  EXPECT_EQ(reader->getRoot<TestMessage>().getPing(), 42u);
}

TEST(DecodeDatagram, RejectsEmptyDatagram) {
  std::vector<capnp::word> words(1);
  EXPECT_NE(decodeError(words, 0).find("empty"), std::string::npos);
}

TEST(DecodeDatagram, RejectsPartialWord) {
  std::vector<capnp::word> words(4);
  EXPECT_NE(decodeError(words, 13).find("whole number of words"), std::string::npos);
}

TEST(DecodeDatagram, RejectsAnAbsurdSegmentTable) {
  std::vector<capnp::word> words{rawWord(0x0fffffffu), rawWord(0)};
  EXPECT_NE(decodeError(words, 16).find("malformed"), std::string::npos);
}

TEST(DecodeDatagram, RejectsASegmentLongerThanTheDatagram) {
  std::vector<capnp::word> words{rawWord(100ull << 32), rawWord(0)};
  EXPECT_NE(decodeError(words, 16).find("malformed"), std::string::npos);
}

TEST(DecodeDatagram, RejectsTrailingBytesAfterTheMessage) {
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().setPing(1);
  auto words = flat(message);
  words.push_back(rawWord(0));
  EXPECT_NE(decodeError(words, words.size() * 8).find("trailing"), std::string::npos);
}

TEST(DecodeDatagram, RejectsAnOutOfBoundsPointer) {
  // Root struct claiming 100 data words in a 1-word segment.
  std::vector<capnp::word> words{rawWord(1ull << 32), rawWord(100ull << 32)};
  EXPECT_NE(decodeError(words, 16).find("out-of-bounds"), std::string::npos);
}

TEST(DecodeDatagram, RejectsNestingDeeperThanTheLimit) {
  EXPECT_EQ(decodeError(nestedMessage(10), nestedMessage(10).size() * 8), "");
  auto deep = nestedMessage(kNestingLimit + 4);
  EXPECT_NE(decodeError(deep, deep.size() * 8).find("deeply"), std::string::npos);
}

TEST(DecodeDatagram, RejectsPointerAmplificationBeyondTheTraversalLimit) {
  auto modest = amplifiedMessage(4, 1024);
  EXPECT_EQ(decodeError(modest, modest.size() * 8), "");
  // 2048 pointers to one 1024-word blob: 24 KiB on the wire, 2 Mi words to read.
  auto amplified = amplifiedMessage(2048, 1024);
  ASSERT_LT(amplified.size() * 8, 32u * 1024);
  EXPECT_NE(decodeError(amplified, amplified.size() * 8).find("traversal limit"), std::string::npos);
}

TEST(DecodeDatagram, HonoursASmallerTraversalLimit) {
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().initBlob(8 * 2000);
  auto words = flat(message);
  capnp::ReaderOptions tight = readerOptions();
  tight.traversalLimitInWords = 1000;
  EXPECT_EQ(decodeError(words, words.size() * 8), "");
  EXPECT_NE(decodeError(words, words.size() * 8, tight), "");
}

TEST(Wire, BlockingHelpersCarryAMessageAndDescriptors) {
  auto [a, b] = makeSeqpacketPair();
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().setFds("x");
  const int fds[] = {event.get()};
  ASSERT_EQ(sendMessage(a.get(), message, fds), 0);
  ReceivedMessage received = receiveMessage(b.get(), 1000);
  ASSERT_TRUE(received.reader) << received.error;
  EXPECT_EQ(received.reader->getRoot<TestMessage>().getFds(), "x");
  ASSERT_EQ(received.fds.size(), 1u);
  EXPECT_NE(received.fds[0].get(), event.get());
  EXPECT_NE(::fcntl(received.fds[0].get(), F_GETFD) & FD_CLOEXEC, 0);  // MSG_CMSG_CLOEXEC
  const std::uint64_t one = 1;
  ASSERT_EQ(::write(received.fds[0].get(), &one, sizeof one), 8);
  std::uint64_t value = 0;
  ASSERT_EQ(::read(event.get(), &value, sizeof value), 8);
  EXPECT_EQ(value, 1u);
}

TEST(Wire, ReceiveTimesOut) {
  auto [a, b] = makeSeqpacketPair();
  ReceivedMessage received = receiveMessage(b.get(), 20);
  EXPECT_FALSE(received.reader);
  EXPECT_EQ(received.error, "timed out");
}

TEST(Wire, TruncatedDatagramIsAnError) {
  auto [a, b] = makeSeqpacketPair();
  std::vector<char> big(8192, 'x');
  ASSERT_EQ(::send(a.get(), big.data(), big.size(), 0), 8192);
  auto buffer = kj::heapArray<capnp::word>(4096 / 8);
  Datagram datagram;
  std::string reason;
  EXPECT_EQ(receiveDatagram(b.get(), buffer, datagram, reason), ReceiveStatus::kError);
  EXPECT_NE(reason.find("truncated"), std::string::npos);
}

TEST(Wire, TooManyDescriptorsAreAnErrorAndAllAreClosed) {
  auto [a, b] = makeSeqpacketPair();
  std::vector<UniqueFd> owned;
  std::vector<int> raw;
  for (std::size_t i = 0; i < kMaxFdsPerMessage + 4; ++i) {
    owned.emplace_back(::eventfd(0, EFD_CLOEXEC));
    raw.push_back(owned.back().get());
  }
  // Bypass sendDatagram's own limit, as a misbehaving peer would.
  std::vector<char> control(CMSG_SPACE(sizeof(int) * raw.size()));
  char byte[8] = {};
  iovec iov{byte, sizeof byte};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * raw.size());
  std::memcpy(CMSG_DATA(cmsg), raw.data(), sizeof(int) * raw.size());
  ASSERT_EQ(::sendmsg(a.get(), &msg, 0), 8);

  const int before = countOpenFds();
  auto buffer = kj::heapArray<capnp::word>(1024);
  Datagram datagram;
  std::string reason;
  EXPECT_EQ(receiveDatagram(b.get(), buffer, datagram, reason), ReceiveStatus::kError);
  EXPECT_NE(reason.find("descriptors"), std::string::npos) << reason;
  EXPECT_TRUE(datagram.fds.empty());
  EXPECT_EQ(countOpenFds(), before);
}

TEST(Wire, SendRefusesMoreDescriptorsThanTheLimit) {
  auto [a, b] = makeSeqpacketPair();
  std::vector<int> raw(kMaxFdsPerMessage + 1, a.get());
  std::vector<capnp::word> words(2);
  EXPECT_EQ(sendDatagram(a.get(), kj::ArrayPtr<const capnp::word>(words.data(), 2), raw), EINVAL);
}

TEST(Wire, SendDatagramsSendsThoseBeforeADatagramWithTooManyDescriptors) {
  auto [a, b] = makeSeqpacketPair();
  std::vector<capnp::word> words(2);
  std::vector<int> tooMany(kMaxFdsPerMessage + 1, a.get());
  const OutDatagram batch[] = {{kj::ArrayPtr<const capnp::word>(words.data(), 1), {}},
                               {kj::ArrayPtr<const capnp::word>(words.data(), 2), {}},
                               {kj::ArrayPtr<const capnp::word>(words.data(), 2), tooMany}};
  int error = 0;
  EXPECT_EQ(sendDatagrams(a.get(), batch, error), 2u);
  EXPECT_EQ(error, EINVAL);
  char buf[64];
  EXPECT_EQ(::recv(b.get(), buf, sizeof buf, MSG_DONTWAIT), 8);
  EXPECT_EQ(::recv(b.get(), buf, sizeof buf, MSG_DONTWAIT), 16);
  EXPECT_EQ(::recv(b.get(), buf, sizeof buf, MSG_DONTWAIT), -1);
}

TEST(Wire, SendDatagramsStopsWithEagainWhenTheBufferIsFull) {
  auto [a, b] = makeSeqpacketPair();
  std::vector<capnp::word> words(64 * 1024 / 8);
  std::vector<OutDatagram> batch(kMaxBatch, OutDatagram{kj::ArrayPtr<const capnp::word>(words.data(), words.size()), {}});
  int error = 0;
  const std::size_t sent = sendDatagrams(a.get(), batch, error);
  EXPECT_LT(sent, kMaxBatch);  // 4 MiB does not fit a ~2 MiB buffer
  EXPECT_EQ(error, EAGAIN);
}

TEST(Wire, ReceiveDatagramsTakesSeveralAndReportsTheEndOfStreamAfterThem) {
  auto [a, b] = makeSeqpacketPair();
  for (std::uint64_t i = 1; i <= 3; ++i) {
    std::vector<capnp::word> words(i);
    ASSERT_EQ(sendDatagram(a.get(), kj::ArrayPtr<const capnp::word>(words.data(), words.size()), {}), 0);
  }
  a.reset();
  auto storage = kj::heapArray<capnp::word>(8 * 64);
  std::vector<kj::ArrayPtr<capnp::word>> buffers;
  for (int i = 0; i < 8; ++i) buffers.push_back(storage.slice(i * 64, (i + 1) * 64));
  std::vector<Datagram> out(8);
  ReceiveStatus status = ReceiveStatus::kDatagram;
  std::string reason;
  EXPECT_EQ(receiveDatagrams(b.get(), buffers, out, status, reason), 3u);
  EXPECT_EQ(status, ReceiveStatus::kPeerClosed);
  EXPECT_EQ(out[0].bytes, 8u);
  EXPECT_EQ(out[1].bytes, 16u);
  EXPECT_EQ(out[2].bytes, 24u);
}

TEST(Wire, ReceiveDatagramsClosesTheDescriptorsOfEverythingAfterATruncatedOne) {
  auto [a, b] = makeSeqpacketPair();
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  const int fd = event.get();
  std::vector<capnp::word> small(1), big(128);
  ASSERT_EQ(sendDatagram(a.get(), kj::ArrayPtr<const capnp::word>(small.data(), 1), std::span<const int>(&fd, 1)), 0);
  ASSERT_EQ(sendDatagram(a.get(), kj::ArrayPtr<const capnp::word>(big.data(), big.size()), {}), 0);
  ASSERT_EQ(sendDatagram(a.get(), kj::ArrayPtr<const capnp::word>(small.data(), 1), std::span<const int>(&fd, 1)), 0);
  const int before = countOpenFds();
  auto storage = kj::heapArray<capnp::word>(4 * 16);
  std::vector<kj::ArrayPtr<capnp::word>> buffers;
  for (int i = 0; i < 4; ++i) buffers.push_back(storage.slice(i * 16, (i + 1) * 16));
  std::vector<Datagram> out(4);
  ReceiveStatus status = ReceiveStatus::kDatagram;
  std::string reason;
  EXPECT_EQ(receiveDatagrams(b.get(), buffers, out, status, reason), 1u);
  EXPECT_EQ(status, ReceiveStatus::kError);
  EXPECT_NE(reason.find("truncated"), std::string::npos) << reason;
  EXPECT_EQ(out[0].fds.size(), 1u);  // the good one keeps its descriptor
  EXPECT_TRUE(out[2].fds.empty());   // the one after the bad one is closed
  EXPECT_EQ(countOpenFds(), before + 1);
}

TEST(Wire, SocketBuffersHoldAMebibyteMessage) {
  auto [a, b] = makeSeqpacketPair();
  EXPECT_EQ(sizeSocketBuffers(a.get(), kMaxMessageBytes), kMaxMessageBytes);
  capnp::MallocMessageBuilder message;
  message.initRoot<TestMessage>().initBlob(kMaxMessageBytes - 1024);
  ASSERT_EQ(sendMessage(a.get(), message), 0);
  ReceivedMessage received = receiveMessage(b.get(), 1000);
  ASSERT_TRUE(received.reader) << received.error;
  EXPECT_EQ(received.reader->getRoot<TestMessage>().getBlob().size(), kMaxMessageBytes - 1024);
}

kj::Array<capnp::word> pingWords(std::uint64_t value) {
  capnp::MallocMessageBuilder message;
  message.initRoot<test::TestMessage>().setPing(value);
  return serialize(message);
}

TEST(Wire, SendDatagramsSendsSeveralMessagesBackToBackInOneDatagram) {
  auto [a, b] = makeSeqpacketPair();
  auto one = pingWords(1), two = pingWords(2), three = pingWords(3);
  const kj::ArrayPtr<const capnp::word> more[] = {two, three};
  const OutDatagram batch[] = {{one, {}, more}};
  int error = 0;
  ASSERT_EQ(sendDatagrams(a.get(), batch, error), 1u);
  EXPECT_EQ(error, 0);
  Inbox inbox(b.get());
  for (std::uint64_t i = 1; i <= 3; ++i) {
    auto got = inbox.receive(1000);
    ASSERT_TRUE(got.reader) << got.error;
    EXPECT_EQ(got.reader->getRoot<test::TestMessage>().getPing(), i);
    EXPECT_EQ(inbox.pending(), 3 - i);
  }
  EXPECT_FALSE(inbox.receive(0).reader);  // one datagram, all taken
}

TEST(Wire, SendDatagramsRefusesDescriptorsBesideSeveralMessages) {
  auto [a, b] = makeSeqpacketPair();
  auto one = pingWords(1), two = pingWords(2);
  const kj::ArrayPtr<const capnp::word> more[] = {two};
  const int fd = a.get();
  const OutDatagram batch[] = {{one, {}}, {one, std::span<const int>(&fd, 1), more}};
  int error = 0;
  EXPECT_EQ(sendDatagrams(a.get(), batch, error), 1u);
  EXPECT_EQ(error, EINVAL);
}

TEST(Wire, ReceiveMessageWantsOneMessagePerDatagram) {
  auto [a, b] = makeSeqpacketPair();
  auto one = pingWords(1), two = pingWords(2);
  const kj::ArrayPtr<const capnp::word> more[] = {two};
  const OutDatagram batch[] = {{one, {}, more}};
  int error = 0;
  ASSERT_EQ(sendDatagrams(a.get(), batch, error), 1u);
  auto got = receiveMessage(b.get(), 1000);
  EXPECT_FALSE(got.reader);
  EXPECT_EQ(got.error, "trailing bytes after the message");
}

TEST(DatagramMessages, SplitsADatagramIntoItsMessages) {
  auto one = pingWords(1), two = pingWords(2);
  std::vector<capnp::word> words(one.begin(), one.end());
  words.insert(words.end(), two.begin(), two.end());
  const std::size_t bytes = words.size() * sizeof(capnp::word);
  DatagramMessages messages(kj::ArrayPtr<const capnp::word>(words.data(), words.size()), bytes, 0);
  std::string reason;
  auto first = messages.next(reason);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->getRoot<test::TestMessage>().getPing(), 1u);
  auto second = messages.next(reason);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->getRoot<test::TestMessage>().getPing(), 2u);
  EXPECT_FALSE(messages.next(reason));
  EXPECT_EQ(reason, "");
}

TEST(DatagramMessages, ATruncatedLastMessageIsABadDatagram) {
  auto one = pingWords(1), two = pingWords(2);
  std::vector<capnp::word> words(one.begin(), one.end());
  words.insert(words.end(), two.begin(), two.end() - 1);
  DatagramMessages messages(kj::ArrayPtr<const capnp::word>(words.data(), words.size()),
                            words.size() * sizeof(capnp::word), 0);
  std::string reason;
  EXPECT_TRUE(messages.next(reason));
  EXPECT_FALSE(messages.next(reason));
  EXPECT_NE(reason.find("malformed message"), std::string::npos) << reason;
  EXPECT_FALSE(messages.next(reason));  // and nothing after it
}

TEST(DatagramMessages, DescriptorsMayOnlyComeWithASingleMessage) {
  auto one = pingWords(1), two = pingWords(2);
  std::vector<capnp::word> words(one.begin(), one.end());
  DatagramMessages single(kj::ArrayPtr<const capnp::word>(words.data(), words.size()),
                          words.size() * sizeof(capnp::word), 1);
  std::string reason;
  EXPECT_TRUE(single.next(reason));
  EXPECT_FALSE(single.next(reason));
  EXPECT_EQ(reason, "");
  words.insert(words.end(), two.begin(), two.end());
  DatagramMessages several(kj::ArrayPtr<const capnp::word>(words.data(), words.size()),
                           words.size() * sizeof(capnp::word), 1);
  EXPECT_FALSE(several.next(reason));
  EXPECT_EQ(reason, "descriptors with more than one message in a datagram");
}

TEST(DatagramMessages, AtMostKMaxMessagesPerDatagram) {
  std::vector<capnp::word> words;
  for (std::size_t i = 0; i <= kMaxMessagesPerDatagram; ++i) {
    auto w = pingWords(i);
    words.insert(words.end(), w.begin(), w.end());
  }
  DatagramMessages messages(kj::ArrayPtr<const capnp::word>(words.data(), words.size()),
                            words.size() * sizeof(capnp::word), 0);
  std::string reason;
  std::size_t count = 0;
  while (messages.next(reason)) ++count;
  EXPECT_EQ(count, kMaxMessagesPerDatagram);
  EXPECT_NE(reason.find("more than 64 messages"), std::string::npos) << reason;
}

}  // namespace
}  // namespace ipsec::control
