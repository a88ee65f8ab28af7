/* pfkey_client: stands for an unmodified PF_KEY key manager in the preload
 * test (test_preload.py). It knows nothing of this project: it calls
 * socket(PF_KEY, SOCK_RAW, PF_KEY_V2) and speaks PF_KEY v2 with the structs of
 * <linux/pfkeyv2.h> and <linux/ipsec.h>, as strongSwan's kernel-pfkey plugin
 * does, so it reaches ipsec-policy only when libipsec-pfkey-preload.so is
 * LD_PRELOADed. It trusts nothing it receives: every reply is length-checked
 * and matched by pid and seq before it is read.
 *
 * Modes (each step prints one line, "ok STEP ..." or "FAIL STEP ...", and the
 * first failure ends the run with a non-zero status):
 *
 *   pfkey_client --probe
 *       the socket itself: getsockopt SO_TYPE/SO_DOMAIN/SO_PROTOCOL,
 *       getsockname, dup/dup2/fcntl/close bookkeeping, write/read, poll,
 *       MSG_PEEK, MSG_TRUNC, SO_RCVTIMEO, wrong type and protocol, and
 *       threads duplicating and closing descriptors at once.
 *
 *   pfkey_client --hold
 *       opens a socket, prints "ready", waits for a line on stdin, then sends
 *       with write() and send(): after the service has gone away both must
 *       fail with EPIPE (an AF_KEY socket never raises SIGPIPE).
 *
 *   pfkey_client --local A --remote B --local-net P/N --remote-net P/N
 *                --key-in HEX --key-out HEX [--peer-spi SPI|-] [--reqid N]
 *                [--teardown]
 *       charon's sequence for one tunnel child (../shared/PFKEY.md): two
 *       sockets, REGISTER ESP and AH, GETSPI in 0xc0000000-0xcfffffff, DELETE
 *       of that larval SA, ADD inbound with the same SPI and outbound with the
 *       peer's (aes-gcm-16, 160-bit key with salt, tunnel mode in SA2),
 *       X_SPDADD out/in/fwd with tunnel requests, GET with LIFETIME_CURRENT.
 *       The peer's SPI is what IKE would carry: given with --peer-spi, or
 *       "-" (the default) to read it from stdin after the "ok GETSPI" line.
 *       With --teardown it then prints "ready", waits for a line on stdin
 *       ("used": first GET both SAs again and require traffic counted in
 *       LIFETIME_CURRENT), and removes what it installed (X_SPDDELETE,
 *       DELETE), as charon does when a child is closed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { kBufWords = 8192 }; /* 64 KiB: larger than any PF_KEY message here */
enum { kKeyBytes = 20 };   /* AES-128 key and the 4-byte GCM salt */
static const uint32_t kSpiMin = 0xc0000000u, kSpiMax = 0xcfffffffu;
static const uint32_t kPriority = 383615; /* what charon gave a /16 - /16 tunnel policy */

static uint32_t g_seq; /* charon's request counter: one for all its sockets */
static uint32_t g_pid;

/* ---- reporting ------------------------------------------------------------------ */

static void ok(const char *step, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("ok %s ", step);
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
}

static _Noreturn void fail(const char *step, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("FAIL %s ", step);
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
  exit(1);
}

/* ---- addresses ------------------------------------------------------------------ */

struct Addr {
  int family;
  struct sockaddr_storage ss;
  socklen_t len;
  unsigned prefix;
};

static int parseAddr(const char *text, struct Addr *a) {
  char host[INET6_ADDRSTRLEN + 8];
  const char *slash = strchr(text, '/');
  size_t n = slash ? (size_t)(slash - text) : strlen(text);
  if (n >= sizeof host) return -1;
  memcpy(host, text, n);
  host[n] = 0;
  memset(a, 0, sizeof *a);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&a->ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->ss;
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    a->family = v4->sin_family = AF_INET;
    a->len = sizeof *v4;
    a->prefix = 32;
  } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    a->family = v6->sin6_family = AF_INET6;
    a->len = sizeof *v6;
    a->prefix = 128;
  } else {
    return -1;
  }
  if (slash) {
    char *end;
    unsigned long p = strtoul(slash + 1, &end, 10);
    if (*end || p > a->prefix) return -1;
    a->prefix = (unsigned)p;
  }
  return 0;
}

/* ---- building requests ---------------------------------------------------------- */

struct Msg {
  uint64_t words[kBufWords];
  size_t used; /* bytes */
};

static struct sadb_msg *header(struct Msg *m) { return (struct sadb_msg *)m->words; }

static void begin(struct Msg *m, uint8_t type, uint8_t satype) {
  memset(m->words, 0, sizeof(struct sadb_msg));
  struct sadb_msg *h = header(m);
  h->sadb_msg_version = PF_KEY_V2;
  h->sadb_msg_type = type;
  h->sadb_msg_satype = satype;
  h->sadb_msg_seq = ++g_seq;
  h->sadb_msg_pid = g_pid;
  m->used = sizeof *h;
}

/* A zeroed extension of `bytes` (rounded up to 8), its header filled in. */
static void *extension(struct Msg *m, uint16_t type, size_t bytes) {
  bytes = (bytes + 7) & ~(size_t)7;
  uint8_t *p = (uint8_t *)m->words + m->used;
  memset(p, 0, bytes);
  struct sadb_ext *e = (struct sadb_ext *)p;
  e->sadb_ext_len = (uint16_t)(bytes / 8);
  e->sadb_ext_type = type;
  m->used += bytes;
  return p;
}

static void addAddress(struct Msg *m, uint16_t type, const struct Addr *a, unsigned prefix, uint8_t proto) {
  struct sadb_address *e = extension(m, type, sizeof *e + a->len);
  e->sadb_address_proto = proto;
  e->sadb_address_prefixlen = (uint8_t)prefix;
  memcpy(e + 1, &a->ss, a->len);
}

static void addSa(struct Msg *m, uint32_t spi, uint8_t replay, uint8_t state, uint8_t auth, uint8_t enc) {
  struct sadb_sa *e = extension(m, SADB_EXT_SA, sizeof *e);
  e->sadb_sa_spi = htonl(spi);
  e->sadb_sa_replay = replay;
  e->sadb_sa_state = state;
  e->sadb_sa_auth = auth;
  e->sadb_sa_encrypt = enc;
}

static void addSa2(struct Msg *m, uint8_t mode, uint32_t reqid) {
  struct sadb_x_sa2 *e = extension(m, SADB_X_EXT_SA2, sizeof *e);
  e->sadb_x_sa2_mode = mode;
  e->sadb_x_sa2_reqid = reqid;
}

static void addLifetime(struct Msg *m, uint16_t type, uint64_t addtime) {
  struct sadb_lifetime *e = extension(m, type, sizeof *e);
  e->sadb_lifetime_addtime = addtime;
}

static void addKey(struct Msg *m, uint16_t type, const uint8_t *key, size_t n) {
  struct sadb_key *e = extension(m, type, sizeof *e + n);
  e->sadb_key_bits = (uint16_t)(n * 8);
  memcpy(e + 1, key, n);
}

static void addSpiRange(struct Msg *m, uint32_t min, uint32_t max) {
  struct sadb_spirange *e = extension(m, SADB_EXT_SPIRANGE, sizeof *e);
  e->sadb_spirange_min = min;
  e->sadb_spirange_max = max;
}

/* X_POLICY; with tunnel endpoints, one ESP tunnel request, level unique. */
static void addPolicy(struct Msg *m, uint8_t dir, uint32_t reqid, const struct Addr *tsrc, const struct Addr *tdst) {
  const size_t reqLen = tsrc ? sizeof(struct sadb_x_ipsecrequest) + tsrc->len + tdst->len : 0;
  struct sadb_x_policy *e = extension(m, SADB_X_EXT_POLICY, sizeof *e + reqLen);
  e->sadb_x_policy_type = IPSEC_POLICY_IPSEC;
  e->sadb_x_policy_dir = dir;
  if (!tsrc) return; /* X_SPDDELETE names the policy by selector and dir only */
  e->sadb_x_policy_priority = kPriority;
  struct sadb_x_ipsecrequest *r = (struct sadb_x_ipsecrequest *)(e + 1);
  r->sadb_x_ipsecrequest_len = (uint16_t)reqLen;
  r->sadb_x_ipsecrequest_proto = IPPROTO_ESP;
  r->sadb_x_ipsecrequest_mode = IPSEC_MODE_TUNNEL;
  r->sadb_x_ipsecrequest_level = IPSEC_LEVEL_UNIQUE;
  r->sadb_x_ipsecrequest_reqid = reqid;
  memcpy((uint8_t *)(r + 1), &tsrc->ss, tsrc->len);
  memcpy((uint8_t *)(r + 1) + tsrc->len, &tdst->ss, tdst->len);
}

/* ---- talking -------------------------------------------------------------------- */

static void sendMsg(int fd, struct Msg *m, const char *step) {
  header(m)->sadb_msg_len = (uint16_t)(m->used / 8);
  ssize_t n = send(fd, m->words, m->used, 0);
  if (n != (ssize_t)m->used) fail(step, "send: %zd of %zu bytes: %s", n, m->used, strerror(errno));
}

/* Reads messages until the reply to `request` (same pid and seq, as charon
 * matches them); others (broadcasts, other clients' traffic) are skipped.
 * Learns each length as setkey does, with a 16-byte MSG_PEEK, and checks that
 * MSG_TRUNC reports the whole datagram as AF_KEY's recvmsg does. */
static size_t receiveReply(int fd, const struct sadb_msg *request, struct Msg *out, const char *step) {
  for (int skipped = 0; skipped < 1000; ++skipped) {
    struct sadb_msg h;
    ssize_t n = recv(fd, &h, sizeof h, MSG_PEEK);
    if (n < 0) fail(step, "no reply: %s", strerror(errno));
    if (n != (ssize_t)sizeof h) fail(step, "peeked %zd bytes, not a PF_KEY header", n);
    const size_t len = (size_t)h.sadb_msg_len * 8;
    n = recv(fd, &h, sizeof h, MSG_PEEK | MSG_TRUNC);
    if (n != (ssize_t)len) fail(step, "MSG_PEEK|MSG_TRUNC said %zd bytes, header says %zu", n, len);
    n = recv(fd, out->words, sizeof out->words, 0);
    if (n != (ssize_t)len || len < sizeof h) fail(step, "received %zd bytes, header says %zu", n, len);
    out->used = len;
    const struct sadb_msg *r = header(out);
    if (r->sadb_msg_pid == request->sadb_msg_pid && r->sadb_msg_seq == request->sadb_msg_seq &&
        r->sadb_msg_type == request->sadb_msg_type) {
      return len;
    }
  }
  fail(step, "no matching reply among 1000 messages");
}

/* The reply to `m` sent on `fd`; its errno must be 0. */
static void transact(int fd, struct Msg *m, struct Msg *reply, const char *step) {
  sendMsg(fd, m, step);
  receiveReply(fd, header(m), reply, step);
  const uint8_t err = header(reply)->sadb_msg_errno;
  if (err != 0) fail(step, "errno %u (%s)", err, strerror(err));
}

/* The first extension of `type` in a received message, length-checked. */
static const void *findExt(const struct Msg *m, uint16_t type, size_t minBytes) {
  const uint8_t *base = (const uint8_t *)m->words;
  for (size_t off = sizeof(struct sadb_msg); off + sizeof(struct sadb_ext) <= m->used;) {
    const struct sadb_ext *e = (const struct sadb_ext *)(base + off);
    const size_t len = (size_t)e->sadb_ext_len * 8;
    if (len == 0 || off + len > m->used) return NULL;
    if (e->sadb_ext_type == type) return len >= minBytes ? e : NULL;
    off += len;
  }
  return NULL;
}

static int openPfKey(const char *step) {
  int fd = socket(PF_KEY, SOCK_RAW, PF_KEY_V2);
  if (fd < 0) fail(step, "errno=%d (%s)", errno, strerror(errno));
  return fd;
}

static int sockoptInt(int fd, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, name, &v, &len) != 0 || len != sizeof v) return -1;
  return v;
}

/* The identity an AF_KEY socket gives; the line lets the test check it too. */
static void checkIdentity(int fd, const char *step) {
  const int type = sockoptInt(fd, SO_TYPE), domain = sockoptInt(fd, SO_DOMAIN), proto = sockoptInt(fd, SO_PROTOCOL);
  if (type != SOCK_RAW || domain != PF_KEY || proto != PF_KEY_V2) {
    fail(step, "SO_TYPE=%d SO_DOMAIN=%d SO_PROTOCOL=%d", type, domain, proto);
  }
  ok(step, "fd=%d SO_TYPE=%d SO_DOMAIN=%d SO_PROTOCOL=%d", fd, type, domain, proto);
}

/* setkey's and charon's buffer sizes; a receive timeout so that a missing
 * reply is a failure, not a hang. */
static void setBuffers(int fd, int timeoutMs, const char *step) {
  int size = 128 * 1024;
  struct timeval tv = {timeoutMs / 1000, (timeoutMs % 1000) * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
    fail(step, "setsockopt: %s", strerror(errno));
  }
  const int got = sockoptInt(fd, SO_RCVBUF);
  if (got < size) fail(step, "SO_RCVBUF reads %d after setting %d", got, size);
}

/* ---- --probe ---------------------------------------------------------------------- */

static double nowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A REGISTER for no satype (setkey's): answered to this socket alone. */
static void sendRegisterUnspec(int fd, struct Msg *m, const char *step, int useWrite) {
  begin(m, SADB_REGISTER, SADB_SATYPE_UNSPEC);
  header(m)->sadb_msg_len = (uint16_t)(m->used / 8);
  ssize_t n = useWrite ? write(fd, m->words, m->used) : send(fd, m->words, m->used, 0);
  if (n != (ssize_t)m->used) fail(step, "send: %s", strerror(errno));
}

/* One thread of the concurrency check: its PF_KEY socket's duplicates and
 * UDP sockets keep taking the numbers other threads just closed; each must
 * answer for what it is. */
enum { kThreads = 4, kRounds = 2000 };

static void *churn(void *arg) {
  const int fd = *(const int *)arg;
  for (int i = 0; i < kRounds; ++i) {
    const int d = dup(fd);
    const int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (d < 0 || u < 0) return "dup or socket failed";
    if (sockoptInt(d, SO_DOMAIN) != PF_KEY) return "a PF_KEY duplicate answered as something else";
    if (sockoptInt(u, SO_DOMAIN) != AF_INET) return "a UDP socket answered as PF_KEY";
    close(d);
    close(u);
  }
  return NULL;
}

static void threads(void) {
  pthread_t t[kThreads];
  int fds[kThreads];
  for (int i = 0; i < kThreads; ++i) {
    fds[i] = openPfKey("threads");
    if (pthread_create(&t[i], NULL, churn, &fds[i]) != 0) fail("threads", "pthread_create");
  }
  const char *err = NULL;
  for (int i = 0; i < kThreads; ++i) {
    void *r;
    pthread_join(t[i], &r);
    if (r) err = r;
  }
  if (err) fail("threads", "%s", err);
  for (int i = 0; i < kThreads; ++i) {
    if (sockoptInt(fds[i], SO_TYPE) != SOCK_RAW) fail("threads", "fd %d lost its identity", fds[i]);
    close(fds[i]);
  }
  ok("threads", "%d threads x %d dup/socket/close rounds", kThreads, kRounds);
}

static int probe(void) {
  static struct Msg m, r;
  int fd = openPfKey("socket");
  checkIdentity(fd, "socket");

  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 || errno != EOPNOTSUPP) {
    fail("getsockname", "expected EOPNOTSUPP as AF_KEY gives, got %s", strerror(errno));
  }
  ok("getsockname", "EOPNOTSUPP");

  /* Duplicates are PF_KEY sockets too, and keep working after the original goes. */
  const int d1 = dup(fd), d2 = fcntl(fd, F_DUPFD_CLOEXEC, 40), d3 = dup2(fd, 50);
  if (d1 < 0 || d2 < 40 || d3 != 50) fail("dup", "dup %d, F_DUPFD_CLOEXEC %d, dup2 %d: %s", d1, d2, d3, strerror(errno));
  if (sockoptInt(d1, SO_DOMAIN) != PF_KEY || sockoptInt(d2, SO_DOMAIN) != PF_KEY ||
      sockoptInt(d3, SO_PROTOCOL) != PF_KEY_V2) {
    fail("dup", "a duplicate does not answer as PF_KEY");
  }
  close(fd);
  close(d1);
  close(d2);
  ok("dup", "dup, fcntl(F_DUPFD_CLOEXEC) and dup2 answer as PF_KEY");

  /* The numbers closed above are reused by an ordinary socket: no longer PF_KEY. */
  const int udp = socket(AF_INET, SOCK_DGRAM, 0);
  if (udp < 0 || sockoptInt(udp, SO_DOMAIN) != AF_INET || sockoptInt(udp, SO_TYPE) != SOCK_DGRAM) {
    fail("reuse", "fd %d reused by a UDP socket answers domain %d", udp, sockoptInt(udp, SO_DOMAIN));
  }
  close(udp);
  ok("reuse", "fd %d after close answers as AF_INET", udp);

  /* write + poll + read, on the dup2'd descriptor. */
  fd = d3;
  setBuffers(fd, 2000, "sockopt");
  sendRegisterUnspec(fd, &m, "write", 1);
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, 2000) != 1 || !(p.revents & POLLIN)) fail("poll", "no POLLIN within 2 s");
  ssize_t n = read(fd, r.words, sizeof r.words);
  if (n < (ssize_t)sizeof(struct sadb_msg) || header(&r)->sadb_msg_seq != header(&m)->sadb_msg_seq ||
      header(&r)->sadb_msg_errno != 0 || (size_t)n != header(&r)->sadb_msg_len * 8u) {
    fail("read", "read %zd bytes", n);
  }
  r.used = (size_t)n;
  if (!findExt(&r, SADB_EXT_SUPPORTED_ENCRYPT, sizeof(struct sadb_supported))) {
    fail("read", "REGISTER reply without SUPPORTED_ENCRYPT");
  }
  ok("write-poll-read", "REGISTER reply of %zd bytes", n);

  /* MSG_TRUNC without MSG_PEEK: the full length, the datagram consumed. */
  sendRegisterUnspec(fd, &m, "msg_trunc", 0);
  char small[16];
  n = recv(fd, small, sizeof small, MSG_TRUNC);
  const size_t whole = ((const struct sadb_msg *)small)->sadb_msg_len * 8u;
  if (n <= (ssize_t)sizeof small || (size_t)n != whole) fail("msg_trunc", "recv gave %zd, message is %zu", n, whole);
  struct msghdr mh;
  struct iovec iov = {small, sizeof small};
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  sendRegisterUnspec(fd, &m, "msg_trunc", 0);
  n = recvmsg(fd, &mh, 0);
  if (n != (ssize_t)sizeof small || !(mh.msg_flags & MSG_TRUNC)) fail("msg_trunc", "recvmsg did not flag MSG_TRUNC");
  ok("msg_trunc", "recv reports %zd bytes; recvmsg flags MSG_TRUNC", (ssize_t)whole);

  /* SO_RCVTIMEO: nothing queued, recv gives up with EAGAIN after ~200 ms. */
  setBuffers(fd, 200, "rcvtimeo");
  const double t0 = nowMs();
  n = recv(fd, small, sizeof small, 0);
  const double waited = nowMs() - t0;
  if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || waited < 150 || waited > 1500) {
    fail("rcvtimeo", "recv %zd (%s) after %.0f ms", n, strerror(errno), waited);
  }
  ok("rcvtimeo", "EAGAIN after %.0f ms", waited);

  /* AF_KEY refuses other types and protocols with these errnos. */
  if (socket(PF_KEY, SOCK_DGRAM, PF_KEY_V2) >= 0 || errno != ESOCKTNOSUPPORT) fail("bad-type", "%s", strerror(errno));
  if (socket(PF_KEY, SOCK_RAW, 0) >= 0 || errno != EPROTONOSUPPORT) fail("bad-protocol", "%s", strerror(errno));
  ok("bad-type", "ESOCKTNOSUPPORT and EPROTONOSUPPORT");

  /* SOCK_NONBLOCK and SOCK_CLOEXEC are honoured. */
  const int nb = socket(PF_KEY, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, PF_KEY_V2);
  if (nb < 0 || !(fcntl(nb, F_GETFL) & O_NONBLOCK) || !(fcntl(nb, F_GETFD) & FD_CLOEXEC)) {
    fail("flags", "SOCK_NONBLOCK|SOCK_CLOEXEC not applied");
  }
  if (recv(nb, small, sizeof small, 0) >= 0 || errno != EAGAIN) fail("flags", "nonblocking recv: %s", strerror(errno));
  close(nb);
  ok("flags", "SOCK_NONBLOCK and SOCK_CLOEXEC applied");
  close(fd);
  threads();
  return 0;
}

static int hold(void) {
  static struct Msg m;
  const int fd = openPfKey("socket");
  printf("ready\n");
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) { /* EOF goes on as well */
  }
  begin(&m, SADB_REGISTER, SADB_SATYPE_UNSPEC);
  header(&m)->sadb_msg_len = (uint16_t)(m.used / 8);
  /* The first send may still land in the dying peer's buffer; go on until
   * the broken connection shows. */
  for (int i = 0; i < 100; ++i) {
    if (write(fd, m.words, m.used) < 0) {
      if (errno != EPIPE) fail("epipe", "write: %s", strerror(errno));
      if (send(fd, m.words, m.used, 0) >= 0 || errno != EPIPE) fail("epipe", "send: %s", strerror(errno));
      ok("epipe", "write and send fail with EPIPE, no SIGPIPE");
      return 0;
    }
    usleep(20000);
  }
  fail("epipe", "sends still succeed: the service is not gone");
}

/* ---- the charon sequence ------------------------------------------------------------ */

struct Options {
  struct Addr local, remote, localNet, remoteNet;
  uint8_t keyIn[kKeyBytes], keyOut[kKeyBytes];
  const char *peerSpi;
  uint32_t reqid;
  int teardown;
};

static int parseKey(const char *text, uint8_t *out) {
  if (strncmp(text, "0x", 2) == 0) text += 2;
  if (strlen(text) != 2 * kKeyBytes) return -1;
  for (int i = 0; i < kKeyBytes; ++i) {
    unsigned v;
    if (sscanf(text + 2 * i, "%2x", &v) != 1) return -1;
    out[i] = (uint8_t)v;
  }
  return 0;
}

static void addSelector(struct Msg *m, const struct Addr *src, const struct Addr *dst) {
  addAddress(m, SADB_EXT_ADDRESS_SRC, src, src->prefix, IPSEC_ULPROTO_ANY);
  addAddress(m, SADB_EXT_ADDRESS_DST, dst, dst->prefix, IPSEC_ULPROTO_ANY);
}

/* SA addresses as charon sends them: protocol 0, prefix length 0. */
static void addSaAddresses(struct Msg *m, const struct Addr *src, const struct Addr *dst) {
  addAddress(m, SADB_EXT_ADDRESS_SRC, src, 0, 0);
  addAddress(m, SADB_EXT_ADDRESS_DST, dst, 0, 0);
}

static void registerSatype(int fd, uint8_t satype, const char *step) {
  static struct Msg m, r;
  begin(&m, SADB_REGISTER, satype);
  transact(fd, &m, &r, step);
  const struct sadb_supported *s = findExt(&r, SADB_EXT_SUPPORTED_ENCRYPT, sizeof *s);
  if (!s) fail(step, "no SUPPORTED_ENCRYPT");
  const struct sadb_alg *a = (const struct sadb_alg *)(s + 1);
  const size_t count = (s->sadb_supported_len * 8u - sizeof *s) / sizeof *a;
  for (size_t i = 0; i < count; ++i) {
    if (a[i].sadb_alg_id == SADB_X_EALG_AES_GCM_ICV16 && a[i].sadb_alg_minbits <= 160 && a[i].sadb_alg_maxbits >= 160) {
      ok(step, "%zu ciphers, aes-gcm-16 with 160-bit keys among them", count);
      return;
    }
  }
  fail(step, "aes-gcm-16 with a 160-bit key is not in SUPPORTED_ENCRYPT (%zu ciphers)", count);
}

static void addSaStep(int fd, uint32_t spi, const struct Addr *src, const struct Addr *dst, const uint8_t *key,
                      uint8_t replay, uint32_t reqid, const char *step) {
  static struct Msg m, r;
  /* charon's order: SA, SA2, SRC, DST, LIFETIME_SOFT, LIFETIME_HARD, KEY_ENCRYPT. */
  begin(&m, SADB_ADD, SADB_SATYPE_ESP);
  addSa(&m, spi, replay, SADB_SASTATE_MATURE, SADB_AALG_NONE, SADB_X_EALG_AES_GCM_ICV16);
  addSa2(&m, IPSEC_MODE_TUNNEL, reqid);
  addSaAddresses(&m, src, dst);
  addLifetime(&m, SADB_EXT_LIFETIME_SOFT, 3300);
  addLifetime(&m, SADB_EXT_LIFETIME_HARD, 3600);
  addKey(&m, SADB_EXT_KEY_ENCRYPT, key, kKeyBytes);
  transact(fd, &m, &r, step);
  explicit_bzero(m.words, m.used);
  const struct sadb_sa *sa = findExt(&r, SADB_EXT_SA, sizeof *sa);
  if (!sa || ntohl(sa->sadb_sa_spi) != spi) fail(step, "reply does not name SPI 0x%08x", spi);
  ok(step, "spi=0x%08x", spi);
}

static uint32_t spdAddStep(int fd, uint8_t dir, const struct Addr *src, const struct Addr *dst,
                           const struct Addr *tsrc, const struct Addr *tdst, uint32_t reqid, const char *step) {
  static struct Msg m, r;
  begin(&m, SADB_X_SPDADD, SADB_SATYPE_UNSPEC);
  addPolicy(&m, dir, reqid, tsrc, tdst);
  addSelector(&m, src, dst);
  transact(fd, &m, &r, step);
  const struct sadb_x_policy *p = findExt(&r, SADB_X_EXT_POLICY, sizeof *p);
  if (!p || p->sadb_x_policy_id == 0 || p->sadb_x_policy_dir != dir) fail(step, "reply without a policy id");
  ok(step, "dir=%u id=%u", dir, p->sadb_x_policy_id);
  return p->sadb_x_policy_id;
}

/* `used`: traffic has crossed the SA, so CURRENT must count it (bytes, and
 * the first use time charon reports). */
static void getStep(int fd, uint32_t spi, const struct Addr *src, const struct Addr *dst, int used, const char *step) {
  static struct Msg m, r;
  begin(&m, SADB_GET, SADB_SATYPE_ESP);
  addSa(&m, spi, 0, SADB_SASTATE_LARVAL, 0, 0);
  addSaAddresses(&m, src, dst);
  transact(fd, &m, &r, step);
  const struct sadb_sa *sa = findExt(&r, SADB_EXT_SA, sizeof *sa);
  const struct sadb_lifetime *cur = findExt(&r, SADB_EXT_LIFETIME_CURRENT, sizeof *cur);
  const struct sadb_x_sa2 *sa2 = findExt(&r, SADB_X_EXT_SA2, sizeof *sa2);
  if (!sa || ntohl(sa->sadb_sa_spi) != spi || sa->sadb_sa_encrypt != SADB_X_EALG_AES_GCM_ICV16) {
    fail(step, "reply does not describe the SA");
  }
  if (!cur) fail(step, "reply without LIFETIME_CURRENT (charon dereferences it)");
  if (!sa2 || sa2->sadb_x_sa2_mode != IPSEC_MODE_TUNNEL) fail(step, "reply without SA2 mode tunnel");
  const unsigned long long addtime = cur->sadb_lifetime_addtime, bytes = cur->sadb_lifetime_bytes,
                           usetime = cur->sadb_lifetime_usetime, packets = cur->sadb_lifetime_allocations;
  explicit_bzero(r.words, r.used); /* GET replies carry the key */
  /* Linux puts the SA's add time here; charon reads bytes and use time. */
  if (addtime == 0) fail(step, "LIFETIME_CURRENT without the add time");
  if (used && (bytes == 0 || usetime == 0)) fail(step, "traffic not counted: bytes=%llu usetime=%llu", bytes, usetime);
  ok(step, "spi=0x%08x lifetime_current addtime=%llu usetime=%llu bytes=%llu packets=%llu", spi, addtime, usetime,
     bytes, packets);
}

static void deleteSaStep(int fd, uint32_t spi, uint8_t state, const struct Addr *src, const struct Addr *dst,
                         const char *step) {
  static struct Msg m, r;
  begin(&m, SADB_DELETE, SADB_SATYPE_ESP);
  addSa(&m, spi, 0, state, 0, 0);
  addSaAddresses(&m, src, dst);
  transact(fd, &m, &r, step);
  ok(step, "spi=0x%08x", spi);
}

static void spdDeleteStep(int fd, uint8_t dir, const struct Addr *src, const struct Addr *dst, const char *step) {
  static struct Msg m, r;
  begin(&m, SADB_X_SPDDELETE, SADB_SATYPE_UNSPEC);
  addPolicy(&m, dir, 0, NULL, NULL);
  addSelector(&m, src, dst);
  transact(fd, &m, &r, step);
  ok(step, "dir=%u", dir);
}

static uint32_t readPeerSpi(const char *arg) {
  char line[64];
  const char *text = arg;
  if (strcmp(arg, "-") == 0) {
    if (!fgets(line, sizeof line, stdin)) fail("peer-spi", "no SPI on stdin");
    text = line;
  }
  char *end;
  unsigned long v = strtoul(text, &end, 0);
  if (end == text || v == 0 || v > 0xffffffffUL) fail("peer-spi", "bad SPI '%s'", text);
  return (uint32_t)v;
}

static int charon(const struct Options *o) {
  static struct Msg m, r;
  /* charon opens an event socket (REGISTER, ACQUIRE, EXPIRE) and one for requests. */
  const int events = openPfKey("socket-events");
  checkIdentity(events, "socket-events");
  const int fd = openPfKey("socket-requests");
  checkIdentity(fd, "socket-requests");
  setBuffers(events, 3000, "sockopt");
  setBuffers(fd, 3000, "sockopt");

  registerSatype(events, SADB_SATYPE_ESP, "REGISTER-ESP");
  registerSatype(events, SADB_SATYPE_AH, "REGISTER-AH");

  /* Inbound SA: GETSPI, later DELETE of the larval SA, then ADD with its SPI. */
  begin(&m, SADB_GETSPI, SADB_SATYPE_ESP);
  addSaAddresses(&m, &o->remote, &o->local);
  addSpiRange(&m, kSpiMin, kSpiMax);
  transact(fd, &m, &r, "GETSPI");
  const struct sadb_sa *sa = findExt(&r, SADB_EXT_SA, sizeof *sa);
  if (!sa) fail("GETSPI", "reply without SA");
  const uint32_t spiIn = ntohl(sa->sadb_sa_spi);
  if (spiIn < kSpiMin || spiIn > kSpiMax) fail("GETSPI", "spi 0x%08x outside the range", spiIn);
  ok("GETSPI", "spi=0x%08x", spiIn);
  const uint32_t spiOut = readPeerSpi(o->peerSpi);

  deleteSaStep(fd, spiIn, SADB_SASTATE_LARVAL, &o->remote, &o->local, "DELETE-larval");
  addSaStep(fd, spiIn, &o->remote, &o->local, o->keyIn, 32, o->reqid, "ADD-in");
  addSaStep(fd, spiOut, &o->local, &o->remote, o->keyOut, 0, o->reqid, "ADD-out");

  const uint32_t idIn = spdAddStep(fd, IPSEC_DIR_INBOUND, &o->remoteNet, &o->localNet, &o->remote, &o->local,
                                   o->reqid, "X_SPDADD-in");
  const uint32_t idFwd = spdAddStep(fd, IPSEC_DIR_FWD, &o->remoteNet, &o->localNet, &o->remote, &o->local,
                                    o->reqid, "X_SPDADD-fwd");
  const uint32_t idOut = spdAddStep(fd, IPSEC_DIR_OUTBOUND, &o->localNet, &o->remoteNet, &o->local, &o->remote,
                                    o->reqid, "X_SPDADD-out");
  if (idIn == idFwd || idIn == idOut || idFwd == idOut) fail("X_SPDADD", "policy ids are not unique");

  getStep(fd, spiIn, &o->remote, &o->local, 0, "GET-in");
  getStep(fd, spiOut, &o->local, &o->remote, 0, "GET-out");

  /* The ADD and X_SPDADD broadcasts reached the event socket too. */
  int seen = 0;
  while (recv(events, r.words, sizeof r.words, MSG_DONTWAIT) > 0) ++seen;
  if (seen < 5) fail("events", "the event socket heard %d broadcasts, expected at least 5", seen);
  ok("events", "%d messages on the event socket", seen);

  if (!o->teardown) return 0;
  printf("ready\n");
  fflush(stdout);
  char line[64];
  /* "used": the test sent traffic through the tunnel meanwhile. EOF or any
   * other line: tear down without looking at usage. */
  if (fgets(line, sizeof line, stdin) && strncmp(line, "used", 4) == 0) {
    getStep(fd, spiIn, &o->remote, &o->local, 1, "GET-in-used");
    getStep(fd, spiOut, &o->local, &o->remote, 1, "GET-out-used");
  }
  spdDeleteStep(fd, IPSEC_DIR_OUTBOUND, &o->localNet, &o->remoteNet, "X_SPDDELETE-out");
  spdDeleteStep(fd, IPSEC_DIR_INBOUND, &o->remoteNet, &o->localNet, "X_SPDDELETE-in");
  spdDeleteStep(fd, IPSEC_DIR_FWD, &o->remoteNet, &o->localNet, "X_SPDDELETE-fwd");
  deleteSaStep(fd, spiIn, SADB_SASTATE_MATURE, &o->remote, &o->local, "DELETE-in");
  deleteSaStep(fd, spiOut, SADB_SASTATE_MATURE, &o->local, &o->remote, "DELETE-out");
  close(fd);
  close(events);
  return 0;
}

static _Noreturn void usage(void) {
  fprintf(stderr,
          "usage: pfkey_client --probe | --hold\n"
          "       pfkey_client --local ADDR --remote ADDR --local-net PREFIX --remote-net PREFIX\n"
          "                    --key-in HEX40 --key-out HEX40 [--peer-spi SPI|-] [--reqid N] [--teardown]\n");
  exit(2);
}

int main(int argc, char **argv) {
  g_pid = (uint32_t)getpid();
  if (argc == 2 && strcmp(argv[1], "--probe") == 0) return probe();
  if (argc == 2 && strcmp(argv[1], "--hold") == 0) return hold();
  struct Options o;
  memset(&o, 0, sizeof o);
  o.peerSpi = "-";
  o.reqid = 1;
  int have = 0;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (strcmp(a, "--teardown") == 0) {
      o.teardown = 1;
      continue;
    }
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    int bad = 0;
    if (strcmp(a, "--local") == 0) bad = parseAddr(v, &o.local), have |= 1;
    else if (strcmp(a, "--remote") == 0) bad = parseAddr(v, &o.remote), have |= 2;
    else if (strcmp(a, "--local-net") == 0) bad = parseAddr(v, &o.localNet), have |= 4;
    else if (strcmp(a, "--remote-net") == 0) bad = parseAddr(v, &o.remoteNet), have |= 8;
    else if (strcmp(a, "--key-in") == 0) bad = parseKey(v, o.keyIn), have |= 16;
    else if (strcmp(a, "--key-out") == 0) bad = parseKey(v, o.keyOut), have |= 32;
    else if (strcmp(a, "--peer-spi") == 0) o.peerSpi = v;
    else if (strcmp(a, "--reqid") == 0) o.reqid = (uint32_t)strtoul(v, NULL, 0);
    else usage();
    if (bad) {
      fprintf(stderr, "pfkey_client: bad value for %s: %s\n", a, v);
      usage();
    }
  }
  if (have != 63 || o.local.family != o.remote.family || o.localNet.family != o.remoteNet.family) usage();
  return charon(&o);
}
