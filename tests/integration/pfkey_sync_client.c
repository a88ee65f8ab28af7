/* pfkey_sync_client: a PF_KEY client that sends in the ways a key manager
 * may and the preload's first acknowledgement scheme lost count of (a count
 * of sends on each side, which drifted): writev, sendmmsg, a descriptor
 * duplicated behind the preload's back (a raw dup syscall), and a fork that
 * shares the connection. After each send it reads at once on its
 * non-blocking socket, as racoon does, and requires the answer to be there;
 * it also requires that no send waits anywhere near the preload's 5 s bound.
 * Used by tests/integration/test_preload.py under LD_PRELOAD; knows nothing
 * of this project but <linux/pfkeyv2.h>.
 *
 *   pfkey_sync_client writev|sendmmsg|rawdup|fork
 *
 * Prints "ok CASE ..." or "FAIL CASE ..." and exits non-zero on failure.
 * Each request is a GET of an SA that does not exist, which ipsec-policy
 * answers (ESRCH) only after a round trip to keydb: an early return from
 * send() finds nothing queued.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { kRounds = 5 };
/* Well under the preload's 5 s wait: a send that waited for an
 * acknowledgement that never came shows up here. */
enum { kSendBoundMs = 2000 };

struct GetRequest {
  struct sadb_msg msg;
  struct sadb_sa sa;
  struct sadb_address src;
  struct sockaddr_in srcAddr;
  struct sadb_address dst;
  struct sockaddr_in dstAddr;
};

static const char *g_case = "?";

static _Noreturn void fail(const char *why) {
  printf("FAIL %s %s\n", g_case, why);
  fflush(stdout);
  exit(1);
}

static int64_t nowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void address(struct sadb_address *ext, struct sockaddr_in *sin, uint16_t type, unsigned lastOctet) {
  ext->sadb_address_len = (sizeof *ext + sizeof *sin) / 8;
  ext->sadb_address_exttype = type;
  ext->sadb_address_prefixlen = 32;
  sin->sin_family = AF_INET;
  /* 192.0.2.x: documentation addresses, never on any wire. */
  sin->sin_addr.s_addr = htonl(0xc0000200u | lastOctet);
}

/* GET of SPI 0x3000+seq, which no one installed. */
static struct GetRequest getRequest(uint32_t seq) {
  struct GetRequest r;
  memset(&r, 0, sizeof r);
  r.msg.sadb_msg_version = PF_KEY_V2;
  r.msg.sadb_msg_type = SADB_GET;
  r.msg.sadb_msg_satype = SADB_SATYPE_ESP;
  r.msg.sadb_msg_len = sizeof r / 8;
  r.msg.sadb_msg_seq = seq;
  r.msg.sadb_msg_pid = (uint32_t)getpid();
  r.sa.sadb_sa_len = sizeof r.sa / 8;
  r.sa.sadb_sa_exttype = SADB_EXT_SA;
  r.sa.sadb_sa_spi = htonl(0x3000 + seq);
  address(&r.src, &r.srcAddr, SADB_EXT_ADDRESS_SRC, 1);
  address(&r.dst, &r.dstAddr, SADB_EXT_ADDRESS_DST, 2);
  return r;
}

/* Reads what is queued now, without waiting; returns how many of `seqs` got
 * their answer (a GET reply with ESRCH, our pid). */
static int answeredNow(int fd, const uint32_t *seqs, int count, uint32_t pid) {
  int found = 0;
  uint64_t buf[1024];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN) return found;
    if (n < 0) fail("recv failed");
    if ((size_t)n < sizeof(struct sadb_msg)) fail("short message");
    const struct sadb_msg *m = (const struct sadb_msg *)buf;
    if (m->sadb_msg_type != SADB_GET || m->sadb_msg_pid != pid) continue;
    for (int i = 0; i < count; ++i) {
      if (m->sadb_msg_seq != seqs[i]) continue;
      if (m->sadb_msg_errno != ESRCH) fail("answer is not ESRCH");
      ++found;
    }
  }
}

static int openSocket(void) {
  const int fd = socket(PF_KEY, SOCK_RAW | SOCK_NONBLOCK, PF_KEY_V2);
  if (fd < 0) fail("socket(PF_KEY) failed");
  return fd;
}

static void checkBound(int64_t started, const char *what) {
  const int64_t took = nowMs() - started;
  if (took > kSendBoundMs) {
    char why[128];
    snprintf(why, sizeof why, "%s took %lld ms", what, (long long)took);
    fail(why);
  }
}

static void viaWritev(void) {
  const int fd = openSocket();
  for (uint32_t seq = 1; seq <= kRounds; ++seq) {
    struct GetRequest r = getRequest(seq);
    struct iovec iov[2] = {{&r.msg, sizeof r.msg}, {&r.sa, sizeof r - sizeof r.msg}};
    const int64_t started = nowMs();
    if (writev(fd, iov, 2) != (ssize_t)sizeof r) fail("writev failed");
    checkBound(started, "writev");
    if (answeredNow(fd, &seq, 1, r.msg.sadb_msg_pid) != 1) fail("no answer queued when writev returned");
  }
}

static void viaSendmmsg(void) {
  const int fd = openSocket();
  for (uint32_t round = 0; round < kRounds; ++round) {
    uint32_t seqs[2] = {10 + 2 * round, 11 + 2 * round};
    struct GetRequest r[2] = {getRequest(seqs[0]), getRequest(seqs[1])};
    struct iovec iov[2] = {{&r[0], sizeof r[0]}, {&r[1], sizeof r[1]}};
    struct mmsghdr mm[2];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 2; ++i) {
      mm[i].msg_hdr.msg_iov = &iov[i];
      mm[i].msg_hdr.msg_iovlen = 1;
    }
    const int64_t started = nowMs();
    if (sendmmsg(fd, mm, 2, 0) != 2) fail("sendmmsg failed");
    checkBound(started, "sendmmsg");
    if (answeredNow(fd, seqs, 2, r[0].msg.sadb_msg_pid) != 2) fail("not both answers queued when sendmmsg returned");
  }
}

/* A send through a number the preload does not know is not waited for (it
 * cannot be: the preload never saw it), but it must not make the next send
 * on the known descriptor return before its own answer. */
static void viaRawDup(void) {
  const int fd = openSocket();
  const int hidden = (int)syscall(SYS_dup, fd);
  if (hidden < 0) fail("dup syscall failed");
  for (uint32_t round = 0; round < kRounds; ++round) {
    uint32_t seqs[2] = {20 + 2 * round, 21 + 2 * round};
    struct GetRequest behind = getRequest(seqs[0]), known = getRequest(seqs[1]);
    if (syscall(SYS_sendto, hidden, &behind, sizeof behind, 0, NULL, 0) != (long)sizeof behind) {
      fail("send on the hidden duplicate failed");
    }
    const int64_t started = nowMs();
    if (send(fd, &known, sizeof known, 0) != (ssize_t)sizeof known) fail("send failed");
    checkBound(started, "send after a hidden one");
    if (answeredNow(fd, seqs, 2, known.msg.sadb_msg_pid) != 2) fail("answers not queued when send returned");
  }
}

/* One GET from this process; returns its send's duration. */
static int64_t sendOne(int fd, uint32_t seq) {
  struct GetRequest r = getRequest(seq);
  const int64_t started = nowMs();
  if (send(fd, &r, sizeof r, 0) != (ssize_t)sizeof r) fail("send failed");
  return nowMs() - started;
}

static void viaFork(void) {
  const int fd = openSocket();
  (void)sendOne(fd, 30); /* the parent has used the connection before it forks */
  uint32_t first = 30;
  if (answeredNow(fd, &first, 1, (uint32_t)getpid()) != 1) fail("no answer before the fork");
  /* The child sends and reads at once while the parent is idle, then the
   * parent does the same. */
  pid_t child = fork();
  if (child < 0) fail("fork failed");
  if (child == 0) {
    g_case = "fork-child";
    uint32_t seq = 31;
    if (sendOne(fd, seq) > kSendBoundMs) fail("the child's send waited out its bound");
    if (answeredNow(fd, &seq, 1, (uint32_t)getpid()) != 1) fail("the child's answer not queued");
    _exit(0);
  }
  int status;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("the child failed");
  uint32_t seq = 32;
  if (sendOne(fd, seq) > kSendBoundMs) fail("the parent's send after the child's waited out its bound");
  if (answeredNow(fd, &seq, 1, (uint32_t)getpid()) != 1) fail("the parent's answer not queued after the child's");
  /* Both send at once: each waits for its own send only. */
  for (uint32_t round = 0; round < kRounds; ++round) {
    int go[2];
    if (pipe(go) != 0) fail("pipe failed");
    const uint32_t parentSeq = 40 + 2 * round, childSeq = 41 + 2 * round;
    child = fork();
    if (child < 0) fail("fork failed");
    if (child == 0) {
      g_case = "fork-child";
      char c;
      if (read(go[0], &c, 1) != 1) _exit(2);
      _exit(sendOne(fd, childSeq) > kSendBoundMs ? 3 : 0);
    }
    close(go[0]);
    if (write(go[1], "g", 1) != 1) fail("write to the child failed");
    close(go[1]);
    const int64_t took = sendOne(fd, parentSeq);
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status)) fail("the child did not exit");
    if (WEXITSTATUS(status) == 3) fail("the child's concurrent send waited out its bound");
    if (WEXITSTATUS(status) != 0) fail("the child failed");
    if (took > kSendBoundMs) fail("the parent's concurrent send waited out its bound");
    /* The child's answer carries the child's pid: read the parent's. */
    uint32_t mine = parentSeq;
    if (answeredNow(fd, &mine, 1, (uint32_t)getpid()) != 1) fail("the parent's concurrent answer not queued");
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: pfkey_sync_client writev|sendmmsg|rawdup|fork\n");
    return 2;
  }
  g_case = argv[1];
  if (strcmp(g_case, "writev") == 0) viaWritev();
  else if (strcmp(g_case, "sendmmsg") == 0) viaSendmmsg();
  else if (strcmp(g_case, "rawdup") == 0) viaRawDup();
  else if (strcmp(g_case, "fork") == 0) viaFork();
  else fail("unknown case");
  printf("ok %s\n", g_case);
  return 0;
}
