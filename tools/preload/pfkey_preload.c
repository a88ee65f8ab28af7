/* libipsec-pfkey-preload.so: LD_PRELOAD it into an unmodified PF_KEY client
 * (ipsec-tools' setkey, racoon, strongSwan's charon with kernel-pfkey) so
 * that socket(PF_KEY, SOCK_RAW, PF_KEY_V2) returns a descriptor connected to
 * ipsec-policy's PF_KEY service instead of the kernel's AF_KEY, which this
 * kernel does not have.
 *
 * Runs inside the client process; trusts nothing but the environment
 * (IPSEC_PFKEY_SOCKET names the service socket, default /run/ipsecd/pfkey;
 * IPSEC_PFKEY_DEBUG turns on a one-line note on stderr when that socket is
 * unreachable). The service authenticates us by SO_PEERCRED, not by
 * anything this library says.
 *
 * The service speaks PF_KEY one message per datagram on a Unix SOCK_SEQPACKET
 * socket, which already behaves like an AF_KEY socket for most of what a
 * client does with it: one message per send or recv, MSG_PEEK, MSG_TRUNC (as
 * af_key.c's recvmsg), SO_RCVBUF, SO_SNDBUF, SO_RCVTIMEO, poll, select, epoll.
 * What differs and is fixed up here:
 *   - answers are queued before send() returns, as AF_KEY's are (racoon
 *     sends REGISTER on a non-blocking socket and reads at once): after each
 *     send/sendto/sendmsg/write/writev/sendmmsg the call sends a sync on the
 *     connection and waits, bounded by SO_SNDTIMEO or kAnswerWaitMs, until
 *     the service hands that sync's token back on a channel of this process,
 *     saying every answer to what came before it is on the socket
 *     (proto/pfkey_ack.h). The service decides what has an answer: a request
 *     Linux does not answer is acknowledged at once. Nothing is counted, so a
 *     send we did not see (a raw syscall, a descriptor duplicated behind our
 *     back) is not waited for but cannot make a later send's wait end early
 *     or never;
 *   - the service going away (ipsecd stopped) is no end-of-file, which AF_KEY
 *     never gives and which key managers read in a loop: the first receive
 *     that would see it (or a send that finds the peer gone) turns the
 *     descriptor into a lost PF_KEY socket for good: never readable again,
 *     every receive fails with ECONNRESET, every send with EPIPE (README:
 *     "When ipsecd stops");
 *   - getsockopt SO_TYPE / SO_DOMAIN / SO_PROTOCOL answer SOCK_RAW / PF_KEY /
 *     PF_KEY_V2, and getsockname / getpeername fail with EOPNOTSUPP, as
 *     AF_KEY's sock_no_getname does;
 *   - an unreachable service looks like a kernel without AF_KEY:
 *     EAFNOSUPPORT.
 * Processes without a PF_KEY socket pay one atomic load per interposed call.
 * udp_preload.c does the rest of what an IKE daemon needs from the kernel
 * (the NAT-T port, per-socket bypass policies).
 *
 * PF_KEY descriptors are kept in a small fixed table (no allocation, lock-free
 * atomics, safe from any thread), each pointing at its connection's state
 * (shared by duplicates: the acknowledgement channel, the lock that orders a
 * send with its sync and the wait for it, whether the service was lost); a
 * forked child closes the channels it inherited and makes its own on its
 * first send (the parent's acknowledgements are not its to read); dup, dup2,
 * dup3, fcntl(F_DUPFD*), close,
 * close_range and closefrom keep it right. Each entry records the socket's
 * inode, so an entry left stale by a close we did not see (a raw syscall,
 * fclose of an fdopen'd stream) is recognised before it is believed.
 * Everything else is forwarded untouched to the next definition
 * (dlsym(RTLD_NEXT)). Written in C so that preloading it drags no C++
 * runtime into the client. Descriptors inherited across exec are plain Unix
 * sockets to the new image: the table does not survive exec.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/pfkeyv2.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "preload.h"
#include "proto/pfkey_ack.h"

#define EXPORT __attribute__((visibility("default")))

static const char kDefaultSocket[] = "/run/ipsecd/pfkey";

/* ---- the next definitions of what we interpose ------------------------------ */

typedef int (*SocketFn)(int, int, int);
typedef int (*CloseFn)(int);
typedef int (*CloseRangeFn)(unsigned, unsigned, int);
typedef void (*CloseFromFn)(int);
typedef int (*DupFn)(int);
typedef int (*Dup2Fn)(int, int);
typedef int (*Dup3Fn)(int, int, int);
typedef int (*FcntlFn)(int, int, ...);
typedef int (*GetSockOptFn)(int, int, int, void *, socklen_t *);
typedef int (*GetNameFn)(int, struct sockaddr *, socklen_t *);
typedef ssize_t (*SendFn)(int, const void *, size_t, int);
typedef ssize_t (*SendToFn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
typedef ssize_t (*SendMsgFn)(int, const struct msghdr *, int);
typedef ssize_t (*WriteFn)(int, const void *, size_t);
typedef ssize_t (*RecvFn)(int, void *, size_t, int);
typedef ssize_t (*RecvFromFn)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
typedef ssize_t (*RecvMsgFn)(int, struct msghdr *, int);
typedef ssize_t (*ReadFn)(int, void *, size_t);
typedef ssize_t (*WritevFn)(int, const struct iovec *, int);
typedef int (*SendMmsgFn)(int, struct mmsghdr *, unsigned, int);

static const char *const kNextNames[kNextCount] = {
    "socket", "close", "close_range", "closefrom", "dup", "dup2", "dup3", "fcntl", "fcntl64",
    "getsockopt", "getsockname", "getpeername",
    "send", "sendto", "sendmsg", "write", "recv", "recvfrom", "recvmsg", "read",
    "bind", "setsockopt", "writev", "sendmmsg",
};
static _Atomic(void *) g_next[kNextCount];

/* Resolved once in the constructor (dlsym may allocate: not on the hot path);
 * lazily as well, for calls made by other libraries' constructors before ours.
 * Two threads resolving at once store the same value. */
void *preloadNext(enum NextId id) {
  void *p = atomic_load_explicit(&g_next[id], memory_order_acquire);
  if (!p) {
    p = dlsym(RTLD_NEXT, kNextNames[id]);
    atomic_store_explicit(&g_next[id], p, memory_order_release);
  }
  return p;
}

__attribute__((constructor)) static void resolveAll(void) {
  for (int i = 0; i < kNextCount; ++i) preloadNext((enum NextId)i);
}

/* ---- the table of PF_KEY descriptors ---------------------------------------- */

/* 64 PF_KEY sockets per process is plenty: charon opens two, setkey one. */
enum { kSlots = 64 };
/* key: 0 = free, kBusy = being filled, else fd + 1 (published last). */
enum { kBusy = -1 };

/* One connection to the service, shared by the descriptors that dup'ed it. */
struct Conn {
  atomic_int inUse; /* 1 from newConn until releaseConn has closed the channel */
  atomic_int refs;  /* descriptors pointing here */
  /* This process's acknowledgement channel, made on the first send (-1
   * before): ackRead is ours, ackPass travels with every sync. Under lock. */
  int ackRead, ackPass;
  /* Orders a send with its sync and the wait for that sync's token. */
  pthread_mutex_t lock;
  uint32_t lastToken; /* under lock */
  atomic_int lost;    /* the service went away: see markLost */
};
static struct Conn g_conns[kSlots];

struct Slot {
  atomic_int key;
  dev_t dev;
  ino_t ino;
  int conn; /* index into g_conns */
};
static struct Slot g_slots[kSlots];
/* How many slots are in use: lets every wrapper skip the scan in processes
 * that have no PF_KEY socket (all of them but the key manager). */
static atomic_int g_used;

/* A fork taken while another thread waited for an acknowledgement leaves
 * that lock held in the child, by a thread the child does not have: the
 * child's only thread starts with every lock free. The acknowledgement
 * channels it inherited are the parent's (its tokens, read by whichever
 * process polls first): the child closes them and makes its own. */
static void freshStateInChild(void) {
  CloseFn realClose = (CloseFn)preloadNext(kClose);
  for (int i = 0; i < kSlots; ++i) {
    struct Conn *c = &g_conns[i];
    pthread_mutex_init(&c->lock, NULL);
    if (realClose && c->ackRead >= 0) realClose(c->ackRead);
    if (realClose && c->ackPass >= 0) realClose(c->ackPass);
    c->ackRead = c->ackPass = -1;
  }
}

__attribute__((constructor)) static void initConns(void) {
  for (int i = 0; i < kSlots; ++i) {
    pthread_mutex_init(&g_conns[i].lock, NULL);
    g_conns[i].ackRead = g_conns[i].ackPass = -1;
  }
  pthread_atfork(NULL, NULL, freshStateInChild);
}

/* A free connection entry with one reference, or -1 when all are taken. */
static int newConn(void) {
  for (int i = 0; i < kSlots; ++i) {
    struct Conn *c = &g_conns[i];
    int expected = 0;
    if (!atomic_compare_exchange_strong(&c->inUse, &expected, 1)) continue;
    pthread_mutex_lock(&c->lock);
    c->ackRead = c->ackPass = -1;
    c->lastToken = 0;
    atomic_store(&c->lost, 0);
    atomic_store(&c->refs, 1);
    pthread_mutex_unlock(&c->lock);
    return i;
  }
  return -1;
}

/* The last reference closes the acknowledgement channel under the lock, so
 * that a send in another thread (which holds the lock while it waits on the
 * channel) never polls a number that was closed and perhaps reused; the
 * entry is free again only after that. */
static void releaseConn(int i) {
  struct Conn *c = &g_conns[i];
  if (atomic_fetch_sub(&c->refs, 1) != 1) return;
  pthread_mutex_lock(&c->lock);
  const int ackRead = c->ackRead, ackPass = c->ackPass;
  c->ackRead = c->ackPass = -1;
  pthread_mutex_unlock(&c->lock);
  CloseFn realClose = (CloseFn)preloadNext(kClose);
  if (ackRead >= 0 && realClose) realClose(ackRead);
  if (ackPass >= 0 && realClose) realClose(ackPass);
  atomic_store(&c->inUse, 0);
}

static int findSlot(int fd) {
  if (fd < 0 || atomic_load_explicit(&g_used, memory_order_acquire) == 0) return -1;
  for (int i = 0; i < kSlots; ++i) {
    if (atomic_load_explicit(&g_slots[i].key, memory_order_acquire) == fd + 1) return i;
  }
  return -1;
}

static void forget(int fd) {
  int i = findSlot(fd);
  if (i < 0) return;
  const int conn = g_slots[i].conn; /* read first: a freed slot may be refilled at once */
  int expected = fd + 1;
  if (atomic_compare_exchange_strong(&g_slots[i].key, &expected, 0)) {
    atomic_fetch_sub(&g_used, 1);
    releaseConn(conn);
  }
}

/* Takes a new reference to `conn`. Returns 0, or -1 when the table is full. */
static int remember(int fd, dev_t dev, ino_t ino, int conn) {
  forget(fd);
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&g_slots[i].key, &expected, kBusy)) continue;
    g_slots[i].dev = dev;
    g_slots[i].ino = ino;
    g_slots[i].conn = conn;
    atomic_fetch_add(&g_conns[conn].refs, 1);
    atomic_fetch_add(&g_used, 1);
    atomic_store_explicit(&g_slots[i].key, fd + 1, memory_order_release);
    return 0;
  }
  return -1;
}

/* The slot of tracked PF_KEY socket `fd`, checked against its inode (the
 * answer would otherwise be believed on a reused descriptor number); -1 if
 * `fd` is none. */
static int pfKeySlot(int fd) {
  int i = findSlot(fd);
  if (i < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_dev != g_slots[i].dev || st.st_ino != g_slots[i].ino) {
    forget(fd);
    return -1;
  }
  return i;
}

static int isPfKey(int fd) { return pfKeySlot(fd) >= 0; }

/* After a successful dup of `from` onto `to`: `to` is PF_KEY iff `from` is. */
static void copyTracking(int from, int to) {
  if (from == to || to < 0) return;
  int i = findSlot(from);
  if (i < 0) {
    forget(to);
    return;
  }
  if (remember(to, g_slots[i].dev, g_slots[i].ino, g_slots[i].conn) != 0) {
    /* Table full: the duplicate still works, it just answers getsockopt as
     * the Unix socket it is. Nothing better to do without allocating. */
  }
}

/* ---- socket ----------------------------------------------------------------- */

static void debugNote(const char *what, const char *path, int err) {
  if (!getenv("IPSEC_PFKEY_DEBUG")) return;
  char line[512];
  int n = snprintf(line, sizeof line, "libipsec-pfkey-preload: %s %s: %s; PF_KEY unavailable (EAFNOSUPPORT)\n",
                   what, path, strerror(err));
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
  (void)!write(STDERR_FILENO, line, (size_t)n);
}

static int openPfKey(int type, int protocol) {
  const int flags = type & (SOCK_NONBLOCK | SOCK_CLOEXEC);
  const int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
  /* What af_key.c's pfkey_create answers for the wrong type or protocol. */
  if (base != SOCK_RAW) {
    errno = ESOCKTNOSUPPORT;
    return -1;
  }
  if (protocol != PF_KEY_V2) {
    errno = EPROTONOSUPPORT;
    return -1;
  }
  NEXT_OR_ENOSYS(SocketFn, kSocket, realSocket, -1);
  NEXT_OR_ENOSYS(FcntlFn, kFcntl, realFcntl, -1);
  NEXT_OR_ENOSYS(CloseFn, kClose, realClose, -1);

  const char *path = getenv("IPSEC_PFKEY_SOCKET");
  if (!path || !*path) path = kDefaultSocket;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  const size_t len = strlen(path);
  if (len >= sizeof addr.sun_path) {
    debugNote("socket path too long:", path, ENAMETOOLONG);
    errno = EAFNOSUPPORT;
    return -1;
  }
  memcpy(addr.sun_path, path, len);

  /* Close-on-exec until the caller's flags are applied, so a concurrent
   * fork+exec elsewhere in the process cannot inherit a half-made socket. */
  const int fd = realSocket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1; /* EMFILE, ENFILE, ENOMEM: the caller's real problem */
  int rc;
  do {
    rc = connect(fd, (const struct sockaddr *)&addr, sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    realClose(fd);
    debugNote("cannot connect to", path, err);
    errno = EAFNOSUPPORT;
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || (flags & SOCK_NONBLOCK && realFcntl(fd, F_SETFL, O_NONBLOCK) != 0) ||
      (!(flags & SOCK_CLOEXEC) && realFcntl(fd, F_SETFD, 0) != 0)) {
    const int err = errno;
    realClose(fd);
    errno = err;
    return -1;
  }
  const int conn = newConn();
  if (conn < 0 || remember(fd, st.st_dev, st.st_ino, conn) != 0) {
    if (conn >= 0) releaseConn(conn);
    realClose(fd);
    errno = ENOBUFS; /* as a kernel out of socket memory */
    return -1;
  }
  releaseConn(conn); /* the slot holds the reference now */
  return fd;
}

EXPORT int socket(int domain, int type, int protocol) {
  if (domain == PF_KEY) return openPfKey(type, protocol);
  NEXT_OR_ENOSYS(SocketFn, kSocket, realSocket, -1);
  const int fd = realSocket(domain, type, protocol);
  if (fd >= 0) forget(fd); /* a stale entry for a number the kernel calls free */
  return fd;
}

/* ---- answers queued before send() returns ----------------------------------- */

/* Bound on the wait for an acknowledgement when the socket has no SO_SNDTIMEO. */
enum { kAnswerWaitMs = 5000 };

static int64_t monotonicMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int answerWaitMs(int fd) {
  GetSockOptFn realGetSockOpt = (GetSockOptFn)preloadNext(kGetSockOpt);
  struct timeval tv;
  socklen_t len = sizeof tv;
  if (realGetSockOpt && realGetSockOpt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0 && (tv.tv_sec || tv.tv_usec)) {
    return (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000);
  }
  return kAnswerWaitMs;
}

/* Under c->lock: this process's acknowledgement channel, made on first use
 * (a forked child's first send makes its own). 0, or -1 if none can be made. */
static int ackChannel(struct Conn *c) {
  if (c->ackRead >= 0) return 0;
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return -1;
  c->ackRead = pair[0];
  c->ackPass = pair[1];
  return 0;
}

/* Under c->lock: the sync that follows a send on `fd` (proto/pfkey_ack.h),
 * carrying ackPass. Never blocks: a sync the full socket refuses is a send
 * not waited for. 0, or -1 if it did not go. */
static int sendSync(struct Conn *c, int fd, uint32_t token) {
  SendMsgFn realSendMsg = (SendMsgFn)preloadNext(kSendMsg);
  if (!realSendMsg) return -1;
  struct sadb_msg sync;
  memset(&sync, 0, sizeof sync);
  sync.sadb_msg_version = PF_KEY_V2;
  sync.sadb_msg_type = SADB_RESERVED;
  sync.sadb_msg_len = 2;
  sync.sadb_msg_reserved = kPfkeyAckSyncMagic;
  sync.sadb_msg_seq = token;
  sync.sadb_msg_pid = (uint32_t)getpid();
  /* Our credentials ride along explicitly (the kernel checks them against
   * this process): a connection the service has not yet set SO_PASSCRED on
   * would otherwise carry none, and a sync without them is refused, leaving
   * this send to wait out its bound. */
  union {
    char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {&sync, sizeof sync};
  struct msghdr mh;
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control.buf;
  mh.msg_controllen = sizeof control.buf;
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cm), &c->ackPass, sizeof(int));
  cm = CMSG_NXTHDR(&mh, cm);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_CREDENTIALS;
  cm->cmsg_len = CMSG_LEN(sizeof(struct ucred));
  const struct ucred self = {getpid(), geteuid(), getegid()};
  memcpy(CMSG_DATA(cm), &self, sizeof self);
  ssize_t n;
  do {
    n = realSendMsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n == (ssize_t)sizeof sync ? 0 : -1;
}

/* Under c->lock, after a send on `fd`: syncs and reads acknowledgements until
 * this sync's token comes back (an older token is from a wait that ran out),
 * the wait runs out, or the channel fails. errno is left as it was. */
static void awaitAnswers(struct Conn *c, int fd) {
  const int savedErrno = errno;
  RecvFn realRecv = (RecvFn)preloadNext(kRecv);
  const uint32_t token = ++c->lastToken;
  if (!realRecv || ackChannel(c) != 0 || sendSync(c, fd, token) != 0) {
    errno = savedErrno;
    return;
  }
  const int64_t deadline = monotonicMs() + answerWaitMs(fd);
  for (;;) {
    const int64_t left = deadline - monotonicMs();
    if (left <= 0) break;
    struct pollfd p = {c->ackRead, POLLIN, 0};
    const int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    PfkeyAck ack;
    const ssize_t n = realRecv(c->ackRead, &ack, sizeof ack, MSG_DONTWAIT);
    if (n == (ssize_t)sizeof ack && ack == token) break;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
  }
  errno = savedErrno;
}

/* ---- when the service goes away ---------------------------------------------- */

/* The connection broke: every descriptor of it becomes a Unix datagram
 * socket that nobody will ever write to, so that poll, select and epoll stay
 * silent (a key manager that reads in a loop would otherwise spin on an
 * end-of-file AF_KEY never gives); the wrappers answer for it from now on. */
static void markLost(int conn) {
  struct Conn *c = &g_conns[conn];
  if (atomic_exchange(&c->lost, 1)) return;
  SocketFn realSocket = (SocketFn)preloadNext(kSocket);
  CloseFn realClose = (CloseFn)preloadNext(kClose);
  Dup3Fn realDup3 = (Dup3Fn)preloadNext(kDup3);
  FcntlFn realFcntl = (FcntlFn)preloadNext(kFcntl);
  if (!realSocket || !realClose || !realDup3 || !realFcntl) return;
  for (int i = 0; i < kSlots; ++i) {
    const int key = atomic_load(&g_slots[i].key);
    if (key <= 0 || g_slots[i].conn != conn) continue;
    const int fd = key - 1;
    /* Only a descriptor that still is this PF_KEY socket: a slot left stale
     * (the number closed behind our back and reused) must not be replaced. */
    struct stat now;
    if (fstat(fd, &now) != 0 || now.st_dev != g_slots[i].dev || now.st_ino != g_slots[i].ino) continue;
    const int quiet = realSocket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (quiet < 0) continue;
    const int cloexec = realFcntl(fd, F_GETFD) & FD_CLOEXEC;
    /* The socket's status flags travel with it: racoon's non-blocking socket
     * stays non-blocking (EAGAIN, not a read that never returns). */
    const int flags = realFcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK)) realFcntl(quiet, F_SETFL, O_NONBLOCK);
    struct stat st;
    if (fstat(quiet, &st) == 0 && realDup3(quiet, fd, cloexec ? O_CLOEXEC : 0) == fd) {
      g_slots[i].dev = st.st_dev;
      g_slots[i].ino = st.st_ino;
    }
    realClose(quiet);
  }
}

static int isGone(int err) { return err == EPIPE || err == ECONNRESET || err == ENOTCONN; }

/* ---- sending and receiving --------------------------------------------------- */

/* One interposed send call, so that the six share the PF_KEY path. */
struct SendCall {
  enum NextId id;
  const void *buf;
  size_t len;
  int flags;
  const struct sockaddr *to;
  socklen_t toLen;
  const struct msghdr *msg;
  const struct iovec *iov; /* writev */
  int iovCount;
  struct mmsghdr *mmsg; /* sendmmsg: len is the count */
};

static ssize_t sendNext(int fd, const struct SendCall *s) {
  void *f = preloadNext(s->id);
  if (!f) {
    errno = ENOSYS;
    return -1;
  }
  switch (s->id) {
    case kSend: return ((SendFn)f)(fd, s->buf, s->len, s->flags);
    case kSendTo: return ((SendToFn)f)(fd, s->buf, s->len, s->flags, s->to, s->toLen);
    case kSendMsg: return ((SendMsgFn)f)(fd, s->msg, s->flags);
    case kWritev: return ((WritevFn)f)(fd, s->iov, s->iovCount);
    case kSendMmsg: return ((SendMmsgFn)f)(fd, s->mmsg, (unsigned)s->len, s->flags);
    default: return ((WriteFn)f)(fd, s->buf, s->len);
  }
}

/* On a PF_KEY socket: the datagram goes out and, as with AF_KEY, its answers
 * are on the socket when this returns (bounded wait, see awaitAnswers). */
static ssize_t sendVia(int fd, const struct SendCall *s) {
  const int slot = pfKeySlot(fd);
  if (slot < 0) return sendNext(fd, s);
  const int conn = g_slots[slot].conn;
  struct Conn *c = &g_conns[conn];
  if (atomic_load(&c->lost)) {
    errno = EPIPE;
    return -1;
  }
  pthread_mutex_lock(&c->lock);
  /* Under the lock the slot is checked again: closed meanwhile by another
   * thread, its connection may already serve another socket (whose channel
   * this send must not use). */
  const int still = atomic_load(&g_slots[slot].key) == fd + 1 && g_slots[slot].conn == conn;
  const ssize_t n = sendNext(fd, s);
  const int err = errno;
  if (n >= 0 && still) awaitAnswers(c, fd);
  pthread_mutex_unlock(&c->lock);
  if (n < 0 && isGone(err)) {
    markLost(conn);
    errno = EPIPE;
    return -1;
  }
  errno = err;
  return n;
}

EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags) {
  const struct SendCall s = {kSend, buf, len, flags, NULL, 0, NULL, NULL, 0, NULL};
  return sendVia(fd, &s);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t toLen) {
  const struct SendCall s = {kSendTo, buf, len, flags, to, toLen, NULL, NULL, 0, NULL};
  return sendVia(fd, &s);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  const struct SendCall s = {kSendMsg, NULL, 0, flags, NULL, 0, msg, NULL, 0, NULL};
  return sendVia(fd, &s);
}

EXPORT ssize_t write(int fd, const void *buf, size_t len) {
  const struct SendCall s = {kWrite, buf, len, 0, NULL, 0, NULL, NULL, 0, NULL};
  return sendVia(fd, &s);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovCount) {
  const struct SendCall s = {kWritev, NULL, 0, 0, NULL, 0, NULL, iov, iovCount, NULL};
  return sendVia(fd, &s);
}

/* One sync after the lot: it follows every datagram the call sent. */
EXPORT int sendmmsg(int fd, struct mmsghdr *msgs, unsigned count, int flags) {
  const struct SendCall s = {kSendMmsg, NULL, count, flags, NULL, 0, NULL, NULL, 0, msgs};
  return (int)sendVia(fd, &s);
}

/* Before a receive on `fd`: -1 with ECONNRESET if it is a lost PF_KEY
 * socket, else its slot (or -1 with errno 0 for any other descriptor). */
static int receiveSlot(int fd, int *lost) {
  *lost = 0;
  const int slot = pfKeySlot(fd);
  if (slot >= 0 && atomic_load(&g_conns[g_slots[slot].conn].lost)) *lost = 1;
  return slot;
}

/* After a receive of `want` bytes on PF_KEY slot `slot`: an end-of-file (no
 * PF_KEY message is empty) or a reset means the service has gone. */
static ssize_t afterReceive(int slot, ssize_t n, size_t want) {
  if (slot < 0 || !((n == 0 && want > 0) || (n < 0 && isGone(errno)))) return n;
  markLost(g_slots[slot].conn);
  errno = ECONNRESET;
  return -1;
}

/* Once the loss was reported (ECONNRESET, by afterReceive), receives reach
 * the quiet socket that replaced the connection: a blocking read waits, a
 * non-blocking one says EAGAIN — silent, so that no read loop spins. */
#define RECEIVE(call, want)                        \
  int lost;                                        \
  const int slot = receiveSlot(fd, &lost);         \
  if (lost) return call;                           \
  return afterReceive(slot, call, want)

EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags) {
  NEXT_OR_ENOSYS(RecvFn, kRecv, realRecv, -1);
  RECEIVE(realRecv(fd, buf, len, flags), len);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromLen) {
  NEXT_OR_ENOSYS(RecvFromFn, kRecvFrom, realRecvFrom, -1);
  RECEIVE(realRecvFrom(fd, buf, len, flags, from, fromLen), len);
}

static size_t iovBytes(const struct msghdr *msg) {
  size_t n = 0;
  for (size_t i = 0; msg && msg->msg_iov && i < (size_t)msg->msg_iovlen; ++i) n += msg->msg_iov[i].iov_len;
  return n;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  NEXT_OR_ENOSYS(RecvMsgFn, kRecvMsg, realRecvMsg, -1);
  RECEIVE(realRecvMsg(fd, msg, flags), iovBytes(msg));
}

EXPORT ssize_t read(int fd, void *buf, size_t len) {
  NEXT_OR_ENOSYS(ReadFn, kRead, realRead, -1);
  RECEIVE(realRead(fd, buf, len), len);
}

/* ---- descriptor bookkeeping ------------------------------------------------- */

EXPORT int close(int fd) {
  NEXT_OR_ENOSYS(CloseFn, kClose, realClose, -1);
  /* Forget first: once the number is released another thread may get it. */
  forget(fd);
  return realClose(fd);
}

EXPORT int close_range(unsigned first, unsigned last, int flags) {
  NEXT_OR_ENOSYS(CloseRangeFn, kCloseRange, realCloseRange, -1);
  if (!(flags & CLOSE_RANGE_CLOEXEC) && atomic_load(&g_used) != 0) {
    for (int i = 0; i < kSlots; ++i) {
      const int key = atomic_load(&g_slots[i].key);
      if (key > 0 && (unsigned)(key - 1) >= first && (unsigned)(key - 1) <= last) forget(key - 1);
    }
  }
  return realCloseRange(first, last, flags);
}

EXPORT void closefrom(int lowfd) {
  CloseFromFn realCloseFrom = (CloseFromFn)preloadNext(kCloseFrom);
  if (!realCloseFrom) return;
  if (lowfd >= 0 && atomic_load(&g_used) != 0) {
    for (int i = 0; i < kSlots; ++i) {
      const int key = atomic_load(&g_slots[i].key);
      if (key > 0 && key - 1 >= lowfd) forget(key - 1);
    }
  }
  realCloseFrom(lowfd);
}

EXPORT int dup(int fd) {
  NEXT_OR_ENOSYS(DupFn, kDup, realDup, -1);
  const int n = realDup(fd);
  if (n >= 0) copyTracking(fd, n);
  return n;
}

EXPORT int dup2(int fd, int to) {
  NEXT_OR_ENOSYS(Dup2Fn, kDup2, realDup2, -1);
  const int n = realDup2(fd, to);
  if (n >= 0) copyTracking(fd, n);
  return n;
}

EXPORT int dup3(int fd, int to, int flags) {
  NEXT_OR_ENOSYS(Dup3Fn, kDup3, realDup3, -1);
  const int n = realDup3(fd, to, flags);
  if (n >= 0) copyTracking(fd, n);
  return n;
}

/* fcntl's third argument is an int or a pointer depending on cmd; glibc reads
 * it as a pointer-sized value for every cmd and so do we. */
static int fcntlVia(enum NextId id, int fd, int cmd, va_list ap) {
  NEXT_OR_ENOSYS(FcntlFn, id, realFcntl, -1);
  void *arg = va_arg(ap, void *);
  const int rc = realFcntl(fd, cmd, arg);
  if (rc >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) copyTracking(fd, rc);
  return rc;
}

EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  const int rc = fcntlVia(kFcntl, fd, cmd, ap);
  va_end(ap);
  return rc;
}

EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  const int rc = fcntlVia(kFcntl64, fd, cmd, ap);
  va_end(ap);
  return rc;
}

/* ---- answering as AF_KEY ---------------------------------------------------- */

EXPORT int getsockopt(int fd, int level, int name, void *value, socklen_t *length) {
  NEXT_OR_ENOSYS(GetSockOptFn, kGetSockOpt, realGetSockOpt, -1);
  if (level != SOL_SOCKET || (name != SO_TYPE && name != SO_DOMAIN && name != SO_PROTOCOL) || !isPfKey(fd)) {
    return realGetSockOpt(fd, level, name, value, length);
  }
  const int answer = name == SO_TYPE ? SOCK_RAW : name == SO_DOMAIN ? PF_KEY : PF_KEY_V2;
  if (!length || (!value && *length != 0)) {
    errno = EFAULT;
    return -1;
  }
  /* As sock_getsockopt: a negative length is EINVAL, a short one truncates. */
  const int want = (int)*length;
  if (want < 0) {
    errno = EINVAL;
    return -1;
  }
  const size_t n = (size_t)want < sizeof answer ? (size_t)want : sizeof answer;
  memcpy(value, &answer, n);
  *length = (socklen_t)n;
  return 0;
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *length) {
  NEXT_OR_ENOSYS(GetNameFn, kGetSockName, realGetSockName, -1);
  if (isPfKey(fd)) {
    errno = EOPNOTSUPP;
    return -1;
  }
  return realGetSockName(fd, addr, length);
}

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *length) {
  NEXT_OR_ENOSYS(GetNameFn, kGetPeerName, realGetPeerName, -1);
  if (isPfKey(fd)) {
    errno = EOPNOTSUPP;
    return -1;
  }
  return realGetPeerName(fd, addr, length);
}
