// A data-plane restart's descriptors, end to end through the table: what
// ipsecd sends to keydb and to policy (child_fds.cpp keydbReplacementFds,
// policyReplacementFds) is what each takes by its enum
// (lib/service/replacement.h, used by Keydb::onDataPlaneRestarted and
// policy's Server::onDataPlaneRestarted), on real pipes compared by inode.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <vector>

#include "child_fds.h"
#include "control/unique_fd.h"
#include "proto/fd_layout.h"
#include "service/replacement.h"

namespace ipsec {
namespace {

using control::UniqueFd;
using fdlayout::KeydbFd;
using fdlayout::PolicyFd;

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() { EXPECT_EQ(pipe(fd), 0); }
  ~Pipe() {
    close(fd[0]);
    close(fd[1]);
  }
};

bool sameFile(const UniqueFd& a, int b) {
  struct stat sa {}, sb {};
  return a && fstat(a.get(), &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// What the message carries: copies of ipsecd's descriptors, in its order.
std::vector<UniqueFd> received(const std::vector<int>& sent) {
  std::vector<UniqueFd> fds;
  for (int fd : sent) fds.emplace_back(dup(fd));
  return fds;
}

TEST(Replacement, KeydbTakesItsCryptoAndForwarderChannelsByTheTable) {
  Pipe crypto, forwarder;
  supervisor::ChildEnds ends;
  ends.keydbOfCrypto = crypto.fd[0];
  ends.keydbOfForwarder = forwarder.fd[0];
  auto fds = received(supervisor::keydbReplacementFds(ends));
  EXPECT_TRUE(sameFile(service::takeReplacement(KeydbFd::kForwarder, fds), forwarder.fd[0]));
  EXPECT_TRUE(sameFile(service::takeReplacement(KeydbFd::kCrypto, fds), crypto.fd[0]));
}

TEST(Replacement, PolicyTakesItsForwarderChannelByTheTable) {
  Pipe forwarder;
  supervisor::ChildEnds ends;
  ends.policyOfForwarder = forwarder.fd[0];
  auto fds = received(supervisor::policyReplacementFds(ends));
  EXPECT_TRUE(sameFile(service::takeReplacement(PolicyFd::kForwarder, fds), forwarder.fd[0]));
}

TEST(Replacement, AnEntryNotAwaitedOrAMessageOfAnotherSizeGivesNothing) {
  Pipe p;
  std::vector<UniqueFd> two = received({p.fd[0], p.fd[1]});
  EXPECT_FALSE(service::takeReplacement(KeydbFd::kPolicy, two)) << "keydb's policy channel is never replaced";
  std::vector<UniqueFd> one = received({p.fd[0]});
  EXPECT_FALSE(service::takeReplacement(KeydbFd::kCrypto, one));
  std::vector<UniqueFd> none;
  EXPECT_FALSE(service::takeReplacement(PolicyFd::kForwarder, none));
  EXPECT_EQ(service::replacementCount(KeydbFd::kCrypto), 2u);
  EXPECT_EQ(service::replacementCount(PolicyFd::kForwarder), 1u);
}

}  // namespace
}  // namespace ipsec
