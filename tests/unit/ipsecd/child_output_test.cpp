// ipsecd's relay of a child's output (services/ipsecd/child_output.cpp): a
// child cannot forge another process's line, a line break, a terminal
// sequence or an unbounded line; its own log lines keep their level.
#include <utility>  // before asio (Boost 1.74 with GCC 12)

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "child_output.h"

namespace ipsec::supervisor {
namespace {

constexpr pid_t kPid = 4242;

// Feeds bytes to a relay for ipsec-forwarder[4242]; returns the lines
// without their time of day (the first 13 bytes: ipsecd's clock).
struct Relayed {
  OutputCounters counters;
  std::vector<std::string> lines;
  OutputRelay relay{"ipsec-forwarder", kPid, counters, [this](std::string_view l) {
                      EXPECT_GE(l.size(), 13u);
                      EXPECT_EQ(l.back(), '\n');
                      lines.emplace_back(l.substr(13));
                    }};
};

TEST(ChildOutput, ItsOwnLogLineKeepsItsLevelAndMessage) {
  Relayed r;
  r.relay.feed("10:11:12.345 ipsec-forwarder[4242] W replay window full\n");
  ASSERT_EQ(r.lines.size(), 1u);
  EXPECT_EQ(r.lines[0], "ipsec-forwarder[4242] W replay window full\n");
  EXPECT_EQ(r.counters.child_output_lines, 1u);
}

TEST(ChildOutput, ALineNamingAnotherProcessIsRelayedAsThisChildsOutput) {
  Relayed r;
  r.relay.feed("10:11:12.345 ipsec-keydb[17] E keys leaked\n10:11:12.345 ipsec-forwarder[99] I other pid\n");
  ASSERT_EQ(r.lines.size(), 2u);
  EXPECT_EQ(r.lines[0], "ipsec-forwarder[4242] I output: 10:11:12.345 ipsec-keydb[17] E keys leaked\n");
  EXPECT_EQ(r.lines[1], "ipsec-forwarder[4242] I output: 10:11:12.345 ipsec-forwarder[99] I other pid\n");
}

TEST(ChildOutput, ControlBytesCannotBreakTheLineOrReachTheTerminal) {
  Relayed r;
  r.relay.feed(std::string("a\rb\x1b[2Jc\x7f\\d\0e\n", 14));
  ASSERT_EQ(r.lines.size(), 1u);
  EXPECT_EQ(r.lines[0], "ipsec-forwarder[4242] I output: a\\x0db\\x1b[2Jc\\x7f\\\\d\\x00e\n");
}

TEST(ChildOutput, BytesThatAreNotUtf8AndC1ControlsAreEscaped) {
  EXPECT_EQ(escapeOutput("caf\xc3\xa9"), "caf\xc3\xa9");          // é stays
  EXPECT_EQ(escapeOutput("\xe2\x82\xac"), "\xe2\x82\xac");        // € stays
  EXPECT_EQ(escapeOutput("\xc2\x9b""2J"), "\\xc2\\x9b2J");         // U+009B: CSI
  EXPECT_EQ(escapeOutput("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(escapeOutput("\xc0\xaf"), "\\xc0\\xaf");              // overlong '/'
  EXPECT_EQ(escapeOutput("\xed\xa0\x80"), "\\xed\\xa0\\x80");      // a surrogate
  EXPECT_EQ(escapeOutput("\xe2\x82"), "\\xe2\\x82");              // cut short
}

TEST(ChildOutput, ALineArrivingInPiecesIsOneLine) {
  Relayed r;
  r.relay.feed("10:11:12.345 ipsec-forwarder[4242] I hel");
  EXPECT_TRUE(r.lines.empty());
  r.relay.feed("lo\nsecond");
  ASSERT_EQ(r.lines.size(), 1u);
  EXPECT_EQ(r.lines[0], "ipsec-forwarder[4242] I hello\n");
  r.relay.finish();
  ASSERT_EQ(r.lines.size(), 2u);
  EXPECT_EQ(r.lines[1], "ipsec-forwarder[4242] I output: second\n");
}

TEST(ChildOutput, AnOverlongLineIsCutAndTheRestCounted) {
  Relayed r;
  r.relay.feed(std::string(kMaxLineBytes + 100, 'x'));
  r.relay.feed(std::string(50, 'y') + "\nnext\n");
  ASSERT_EQ(r.lines.size(), 2u);
  EXPECT_EQ(r.lines[0], "ipsec-forwarder[4242] I output: " + std::string(kMaxLineBytes, 'x') + " [truncated]\n");
  EXPECT_EQ(r.lines[1], "ipsec-forwarder[4242] I output: next\n");
  EXPECT_EQ(r.counters.child_output_lines_truncated, 1u);
  EXPECT_EQ(r.counters.child_output_bytes_dropped, 150u);
}

// A child that floods (the forwarder is the hostile one) gets its burst,
// then its rate; the rest is dropped, counted, and the next relayed line
// says how many.
TEST(ChildOutput, AFloodIsCutToTheRateAndTheDropIsSaid) {
  Relayed r;
  const auto burst = static_cast<std::size_t>(OutputRelay::kBurstLines);
  std::string flood;
  for (std::size_t i = 0; i < burst + 500; ++i) flood += "spam\n";
  r.relay.feed(flood);
  // The burst, and the few the rate refilled while the loop ran.
  ASSERT_GE(r.lines.size(), burst);
  EXPECT_LT(r.lines.size(), burst + 50);
  EXPECT_GT(r.counters.child_output_lines_dropped, 450u);
  EXPECT_EQ(r.counters.child_output_lines + r.counters.child_output_lines_dropped, burst + 500);
  r.lines.clear();
  usleep(20000);  // 20 ms at 200 a second: room for a few lines again
  r.relay.feed("after\n");
  ASSERT_EQ(r.lines.size(), 2u);
  EXPECT_NE(r.lines[0].find("lines of this child dropped"), std::string::npos) << r.lines[0];
  EXPECT_EQ(r.lines[1], "ipsec-forwarder[4242] I output: after\n");
}

TEST(ChildOutput, APipeIsReadWithoutBlockingAndClosedAtItsEnd) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  boost::asio::io_context io;
  OutputCounters counters;
  std::vector<std::string> lines;
  auto relay = std::make_unique<OutputRelay>("ipsec-keydb", 7, counters,
                                             [&](std::string_view l) { lines.emplace_back(l.substr(13)); });
  ChildOutputPipe pipe(io, control::UniqueFd(p[0]), std::move(relay));
  bool closed = false;
  pipe.start([&] { closed = true; });
  const std::string text = "00:00:00.000 ipsec-keydb[7] E one\nunterminated";
  ASSERT_EQ(write(p[1], text.data(), text.size()), static_cast<ssize_t>(text.size()));
  io.run_for(std::chrono::milliseconds(50));  // only the finished line: the pipe stays open
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "ipsec-keydb[7] E one\n");
  EXPECT_FALSE(closed);
  close(p[1]);
  io.restart();
  io.run_for(std::chrono::seconds(2));
  EXPECT_TRUE(closed);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1], "ipsec-keydb[7] I output: unterminated\n");
}

}  // namespace
}  // namespace ipsec::supervisor
