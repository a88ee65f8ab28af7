// ipsecd's captureCommand (services/ipsecd/spawn.cpp), with real commands:
// what it returns for a command that succeeds or fails, and that a command
// which hangs (here /bin/sleep, with or without output first) costs the
// caller — ipsecd's event loop, asking a child binary for --print-profile —
// no more than the timeout, and is killed and reaped, not left behind.
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "spawn.h"

namespace ipsec::supervisor {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr milliseconds kTimeout{300};
// Generous for a loaded machine, far below the 30 s the hanging commands sleep.
constexpr milliseconds kReturnBound{3000};

TEST(CaptureCommand, ReturnsTheOutputOfACommandThatExitsZero) {
  const Captured got = captureCommand({"/bin/echo", "hello"}, 1024, milliseconds(5000));
  EXPECT_TRUE(got.ok) << got.error;
  EXPECT_EQ(got.text, "hello\n");
}

TEST(CaptureCommand, KeepsAtMostMaxBytes) {
  const Captured got = captureCommand({"/bin/echo", "hello"}, 3, milliseconds(5000));
  EXPECT_TRUE(got.ok) << got.error;
  EXPECT_EQ(got.text, "hel");
}

TEST(CaptureCommand, SaysHowACommandFailed) {
  const Captured got = captureCommand({"/bin/false"}, 1024, milliseconds(5000));
  EXPECT_FALSE(got.ok);
  EXPECT_EQ(got.text, "");
  EXPECT_EQ(got.error, "exited with status 1");
}

// After a call that killed its command, no child of this process is left:
// not running, not a zombie.
void expectNoChildLeft() {
  errno = 0;
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(CaptureCommand, ACommandThatHangsIsKilledAtTheTimeout) {
  const auto started = steady_clock::now();
  const Captured got = captureCommand({"/bin/sleep", "30"}, 1024, kTimeout);
  const auto took = steady_clock::now() - started;
  EXPECT_FALSE(got.ok);
  EXPECT_EQ(got.error, "did not finish within 300 ms (killed)");
  EXPECT_GE(took, kTimeout);
  EXPECT_LT(took, kReturnBound);
  expectNoChildLeft();
}

TEST(CaptureCommand, ACommandThatPrintsThenHangsGivesNoPartialAnswer) {
  const auto started = steady_clock::now();
  const Captured got = captureCommand({"/bin/sh", "-c", "echo partial; exec /bin/sleep 30"}, 1024, kTimeout);
  EXPECT_LT(steady_clock::now() - started, kReturnBound);
  EXPECT_FALSE(got.ok);
  EXPECT_EQ(got.text, "");
  EXPECT_EQ(got.error, "did not finish within 300 ms (killed)");
  expectNoChildLeft();
}

}  // namespace
}  // namespace ipsec::supervisor
