// The preload's per-send sync (proto/pfkey_ack.h) on the service side, over
// real sockets: a sync's token comes back on the channel it carried, only
// once the answers to every request before it are on the client's socket;
// each channel gets its own token (a forked child's and its parent's); a
// sync without a channel of its sender's own is refused and counted, never
// answered as a request. Also: descriptors that arrive with datagrams the
// server drops unread (after an end of stream) are closed, not leaked.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "harness.h"
#include "proto/pfkey_ack.h"

namespace ipsec::policy::test {
namespace {

// One datagram with `fds` in SCM_RIGHTS.
void sendWithFds(int fd, const void* bytes, std::size_t len, const std::vector<int>& fds) {
  iovec iov{const_cast<void*>(bytes), len};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    mh.msg_control = control.data();
    mh.msg_controllen = control.size();
    cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
  }
  ASSERT_EQ(::sendmsg(fd, &mh, MSG_NOSIGNAL), static_cast<ssize_t>(len));
}

void sendSync(const TestClient& c, PfkeyAck token, const std::vector<int>& fds) {
  sadb_msg sync{};
  sync.sadb_msg_version = PF_KEY_V2;
  sync.sadb_msg_type = SADB_RESERVED;
  sync.sadb_msg_len = 2;
  sync.sadb_msg_reserved = kPfkeyAckSyncMagic;
  sync.sadb_msg_seq = token;
  sync.sadb_msg_pid = static_cast<std::uint32_t>(getpid());
  static_assert(sizeof sync == kPfkeyAckSyncLen);
  sendWithFds(c.fd(), &sync, sizeof sync, fds);
}

// The acknowledgement channel of one process: we read `ours`, the sync
// carries `theirs`.
struct AckChannel {
  int ours = -1, theirs = -1;
  AckChannel() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    ours = sv[0];
    theirs = sv[1];
  }
  ~AckChannel() {
    close(ours);
    close(theirs);
  }
  std::optional<PfkeyAck> ack() const {
    PfkeyAck a;
    if (::recv(ours, &a, sizeof a, MSG_DONTWAIT) != static_cast<ssize_t>(sizeof a)) return std::nullopt;
    return a;
  }
};

Bytes getRequest(std::uint32_t seq) {
  pfkey::Builder b(SADB_GET, SADB_SATYPE_ESP, seq, 4242);
  b.sa({0x1001, 0, SADB_SASTATE_MATURE, 0, 0, 0});
  b.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255);
  b.address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  return b.finish();
}

void answerNotFound(Harness& h) {
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader) << req.error;
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(req.reader->getRoot<proto::PolicyToKeydb>().getRequestId());
  r.setErrno(ESRCH);
  h.answerKeydb(b);
}

TEST(PfkeySync, TheTokenComesBackOnlyOnceTheAnswersBeforeItAreQueued) {
  Harness h;
  auto c = h.connect();
  AckChannel channel;
  c.send(getRequest(1));  // answered by keydb, later
  sendSync(c, 77, {channel.theirs});
  h.pump();
  EXPECT_FALSE(channel.ack()) << "acknowledged while the GET was still with keydb";
  EXPECT_TRUE(c.drain().empty());
  answerNotFound(h);
  h.pump();
  const auto replies = c.drain();
  ASSERT_EQ(replies.size(), 1u) << "the sync itself has no answer";
  EXPECT_EQ(parsed(replies[0]).msg().sadb_msg_errno, ESRCH);
  EXPECT_EQ(channel.ack(), std::optional<PfkeyAck>(77));
  EXPECT_EQ(h.stat("pfkey_requests"), 1u);
  EXPECT_EQ(h.stat("pfkey_syncs_refused"), 0u);
}

// Requests the preload never saw (writev, sendmmsg, a raw dup) need no
// counting: a sync follows them in the stream and waits for them too.
TEST(PfkeySync, ASyncCoversEveryRequestBeforeItHoweverSent) {
  Harness h;
  auto c = h.connect();
  AckChannel channel;
  c.send(getRequest(1));
  c.send(getRequest(2));
  sendSync(c, 5, {channel.theirs});
  h.pump();
  answerNotFound(h);
  h.pump();
  EXPECT_FALSE(channel.ack()) << "acknowledged with the second GET still with keydb";
  answerNotFound(h);
  h.pump();
  EXPECT_EQ(c.drain().size(), 2u);
  EXPECT_EQ(channel.ack(), std::optional<PfkeyAck>(5));
}

// A parent and its forked child share the connection, each with its own
// channel: each gets its own token, never the other's.
TEST(PfkeySync, EachChannelGetsItsOwnToken) {
  Harness h;
  auto c = h.connect();
  AckChannel parent, child;
  c.send(header(SADB_REGISTER, SADB_SATYPE_ESP, 1));
  sendSync(c, 1, {parent.theirs});
  c.send(header(SADB_REGISTER, SADB_SATYPE_AH, 2));
  sendSync(c, 1, {child.theirs});
  h.pump();
  EXPECT_EQ(c.drain().size(), 2u);
  EXPECT_EQ(parent.ack(), std::optional<PfkeyAck>(1));
  EXPECT_EQ(child.ack(), std::optional<PfkeyAck>(1));
  EXPECT_FALSE(parent.ack());
  EXPECT_FALSE(child.ack());
}

TEST(PfkeySync, ASyncWithoutExactlyOneChannelIsRefusedAndCountedNotAnswered) {
  Harness h;
  auto c = h.connect();
  AckChannel a, b;
  sendSync(c, 1, {});
  sendSync(c, 2, {a.theirs, b.theirs});
  int pipeFds[2];
  ASSERT_EQ(pipe(pipeFds), 0);
  sendSync(c, 3, {pipeFds[1]});  // not a socket
  close(pipeFds[0]);
  close(pipeFds[1]);
  h.pump();
  EXPECT_EQ(h.stat("pfkey_syncs_refused"), 3u);
  EXPECT_EQ(h.stat("pfkey_requests"), 0u);
  EXPECT_TRUE(c.drain().empty());
  EXPECT_FALSE(a.ack());
  EXPECT_FALSE(b.ack());
  c.send(header(SADB_REGISTER, SADB_SATYPE_ESP, 9));  // and the client is still served
  h.pump();
  EXPECT_EQ(c.drain().size(), 1u);
}

// A client that ends its stream with datagrams behind the end: the server
// drops those unread, and must close the descriptors they brought (its own
// copies), or a client could pin descriptors in ipsec-policy for ever.
TEST(PfkeySync, DescriptorsOfDatagramsDroppedAfterTheEndOfStreamAreClosed) {
  Harness h;
  auto c = h.connect();
  int pipeFds[2];
  ASSERT_EQ(pipe(pipeFds), 0);
  ASSERT_EQ(::send(c.fd(), "", 0, MSG_NOSIGNAL), 0);  // end of stream, as the server reads it
  const Bytes extra = header(SADB_REGISTER, SADB_SATYPE_ESP, 1);
  sendWithFds(c.fd(), extra.data(), extra.size(), {pipeFds[1]});
  close(pipeFds[1]);  // the only other writer is the server's copy
  h.pump();
  pollfd p{pipeFds[0], POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 1000), 1) << "the server still holds the pipe's write end";
  char byte;
  EXPECT_EQ(read(pipeFds[0], &byte, 1), 0);
  close(pipeFds[0]);
}

}  // namespace
}  // namespace ipsec::policy::test
