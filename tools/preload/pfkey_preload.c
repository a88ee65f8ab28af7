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
 * Why so little is intercepted: the service speaks PF_KEY one message per
 * datagram on a Unix SOCK_SEQPACKET socket, which already behaves like an
 * AF_KEY socket for everything a client does with it: send/sendto/sendmsg/
 * write each carry one message; recv/read return one message, MSG_PEEK
 * peeks, MSG_TRUNC reports the full length (as af_key.c's recvmsg does);
 * SO_RCVBUF, SO_SNDBUF, SO_RCVTIMEO, poll, select and epoll are native; and
 * a send after ipsecd has gone fails with EPIPE without raising SIGPIPE
 * (unlike a stream socket), so a client is not killed where AF_KEY would
 * never have a peer to lose. Sends and receives are therefore not
 * interposed at all: no cost on any process's write path.
 * What differs and is fixed up here:
 *   - getsockopt SO_TYPE / SO_DOMAIN / SO_PROTOCOL answer SOCK_RAW / PF_KEY /
 *     PF_KEY_V2, and getsockname / getpeername fail with EOPNOTSUPP, as
 *     AF_KEY's sock_no_getname does;
 *   - an unreachable service looks like a kernel without AF_KEY:
 *     EAFNOSUPPORT.
 *
 * PF_KEY descriptors are kept in a small fixed table (no allocation, lock-free
 * atomics, safe from any thread); dup, dup2, dup3, fcntl(F_DUPFD*), close,
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
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

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

enum NextId {
  kSocket, kClose, kCloseRange, kCloseFrom, kDup, kDup2, kDup3, kFcntl, kFcntl64,
  kGetSockOpt, kGetSockName, kGetPeerName, kNextCount
};
static const char *const kNextNames[kNextCount] = {
    "socket", "close", "close_range", "closefrom", "dup", "dup2", "dup3", "fcntl", "fcntl64",
    "getsockopt", "getsockname", "getpeername",
};
static _Atomic(void *) g_next[kNextCount];

/* Resolved once in the constructor (dlsym may allocate: not on the hot path);
 * lazily as well, for calls made by other libraries' constructors before ours.
 * Two threads resolving at once store the same value. */
static void *next(enum NextId id) {
  void *p = atomic_load_explicit(&g_next[id], memory_order_acquire);
  if (!p) {
    p = dlsym(RTLD_NEXT, kNextNames[id]);
    atomic_store_explicit(&g_next[id], p, memory_order_release);
  }
  return p;
}

__attribute__((constructor)) static void resolveAll(void) {
  for (int i = 0; i < kNextCount; ++i) next((enum NextId)i);
}

#define NEXT_OR_ENOSYS(type, id, var, fail) \
  type var = (type)next(id);                \
  if (!var) {                               \
    errno = ENOSYS;                         \
    return fail;                            \
  }

/* ---- the table of PF_KEY descriptors ---------------------------------------- */

/* 64 PF_KEY sockets per process is plenty: charon opens two, setkey one. */
enum { kSlots = 64 };
/* key: 0 = free, kBusy = being filled, else fd + 1 (published last). */
enum { kBusy = -1 };

struct Slot {
  atomic_int key;
  dev_t dev;
  ino_t ino;
};
static struct Slot g_slots[kSlots];
/* How many slots are in use: lets every wrapper skip the scan in processes
 * that have no PF_KEY socket (all of them but the key manager). */
static atomic_int g_used;

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
  int expected = fd + 1;
  if (atomic_compare_exchange_strong(&g_slots[i].key, &expected, 0)) atomic_fetch_sub(&g_used, 1);
}

/* Returns 0, or -1 when the table is full. */
static int remember(int fd, dev_t dev, ino_t ino) {
  forget(fd);
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&g_slots[i].key, &expected, kBusy)) continue;
    g_slots[i].dev = dev;
    g_slots[i].ino = ino;
    atomic_fetch_add(&g_used, 1);
    atomic_store_explicit(&g_slots[i].key, fd + 1, memory_order_release);
    return 0;
  }
  return -1;
}

/* `fd` is a tracked PF_KEY socket, checked against its inode (the answer
 * would otherwise be believed on a reused descriptor number). */
static int isPfKey(int fd) {
  int i = findSlot(fd);
  if (i < 0) return 0;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_dev != g_slots[i].dev || st.st_ino != g_slots[i].ino) {
    forget(fd);
    return 0;
  }
  return 1;
}

/* After a successful dup of `from` onto `to`: `to` is PF_KEY iff `from` is. */
static void copyTracking(int from, int to) {
  if (from == to || to < 0) return;
  int i = findSlot(from);
  if (i < 0) {
    forget(to);
    return;
  }
  if (remember(to, g_slots[i].dev, g_slots[i].ino) != 0) {
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
  if (remember(fd, st.st_dev, st.st_ino) != 0) {
    realClose(fd);
    errno = ENOBUFS; /* as a kernel out of socket memory */
    return -1;
  }
  return fd;
}

EXPORT int socket(int domain, int type, int protocol) {
  if (domain == PF_KEY) return openPfKey(type, protocol);
  NEXT_OR_ENOSYS(SocketFn, kSocket, realSocket, -1);
  const int fd = realSocket(domain, type, protocol);
  if (fd >= 0) forget(fd); /* a stale entry for a number the kernel calls free */
  return fd;
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
  CloseFromFn realCloseFrom = (CloseFromFn)next(kCloseFrom);
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
