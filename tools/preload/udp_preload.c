/* libipsec-pfkey-preload.so, the IKE daemon's UDP sockets: what charon and
 * racoon ask of a kernel with IPsec that this kernel (no in-kernel ESP, no
 * AF_KEY) cannot give, done with ipsecd's help. Runs inside the IKE daemon;
 * trusts the environment (IPSEC_NATT_PORT, IPSEC_FWMARK) and the kernel.
 *
 * The NAT-T port (RFC 3948). ipsecd's forwarder and the IKE daemon both need
 * UDP 4500: ESP in UDP for the former, IKE behind the non-ESP marker for the
 * latter. They share it as one SO_REUSEPORT group whose classic BPF program
 * (lib/esp/udp_encap.h natTSteeringProgram) picks a member by index from the
 * payload. A daemon that binds that port without SO_REUSEPORT (charon does)
 * would get EADDRINUSE, so bind() of a UDP socket to the NAT-T port joins the
 * group. Index order is join order, so both parties follow one rule, whoever
 * comes first:
 *   - bind alone (SO_REUSEPORT off). It works: nobody holds the port; we are
 *     the first member and turn SO_REUSEPORT on so that the other can join.
 *     No program yet (the kernel makes the group when the second joins).
 *     (ipsecd, when first, binds with SO_REUSEPORT on and attaches the program
 *     that sends IKE to index 1 at once, so that a daemon which sets
 *     SO_REUSEPORT itself, without this library, is served too.)
 *   - EADDRINUSE: join (SO_REUSEPORT on, bind again). We are index 1, the one
 *     already there index 0: attach the program that sends IKE to our index.
 * When a member leaves, the kernel moves the last one into its index: the one
 * left is then alone and gets everything (the program's other index has no
 * socket behind it, so the kernel falls back to its hash), and whoever joins
 * next is index 1 again and attaches the program again. Each party holds
 * the join lock of proto/natt_lock.h across its steps, so that the two never
 * interleave (both would otherwise think they came first). Port 500 and every
 * other port are bound untouched. Joining a group needs the same uid: the IKE
 * daemon runs as root, as ipsecd's supervisor does.
 *
 * Per-socket IPsec policies (IP_IPSEC_POLICY, IPV6_IPSEC_POLICY: a struct
 * sadb_x_policy, compiled by af_key.c's pfkey_compile_policy). Key managers
 * set a bypass policy on their IKE sockets so that IKE never goes through
 * the SPD. Our SPD sees only what the kernel routes into ipsecd's TUN; for
 * transport mode that is a routing rule that skips packets carrying ipsecd's
 * fwmark (IPSEC_FWMARK, default 0x4950 as ipsecd's config): an outbound
 * bypass (or none) policy sets SO_MARK to it, so the socket's packets leave
 * clear. Inbound, clear UDP reaches the socket without passing our SPD: an
 * inbound bypass needs nothing. What cannot be honoured (an IPsec or discard
 * policy per socket) fails with EOPNOTSUPP, what this kernel's xfrm_user
 * answers for IP_IPSEC_POLICY; malformed input is EINVAL as Linux says.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "preload.h"
#include "proto/natt_lock.h"

#define EXPORT __attribute__((visibility("default")))

typedef int (*BindFn)(int, const struct sockaddr *, socklen_t);
typedef int (*SetSockOptFn)(int, int, int, const void *, socklen_t);
typedef int (*GetSockOptFn)(int, int, int, void *, socklen_t *);
typedef int (*SocketFnU)(int, int, int);
typedef int (*CloseFnU)(int);

/* The lock socket goes straight to the next close: ours (pfkey_preload.c)
 * would only look it up in the PF_KEY table. */
static void closeLock(int fd) {
  CloseFnU realClose = (CloseFnU)preloadNext(kClose);
  if (realClose) realClose(fd);
}

static unsigned long envNumber(const char *name, unsigned long fallback, unsigned long max) {
  const char *v = getenv(name);
  if (!v || !*v) return fallback;
  char *end;
  const unsigned long n = strtoul(v, &end, 0);
  return *end || n == 0 || n > max ? fallback : n;
}

/* ---- the NAT-T port ----------------------------------------------------------- */

enum { kReuseportIndexFirst = 0, kReuseportIndexJoined = 1 };

static int natTPortOf(const struct sockaddr *addr, socklen_t len) {
  if (!addr) return 0;
  const unsigned port = (unsigned)envNumber("IPSEC_NATT_PORT", 4500, 65535);
  if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    return ntohs(((const struct sockaddr_in *)addr)->sin_port) == port;
  }
  if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port) == port;
  }
  return 0;
}

static int isUdp(int fd) {
  GetSockOptFn realGetSockOpt = (GetSockOptFn)preloadNext(kGetSockOpt);
  int type = 0, proto = 0;
  socklen_t l1 = sizeof type, l2 = sizeof proto;
  return realGetSockOpt && realGetSockOpt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) == 0 && type == SOCK_DGRAM &&
         realGetSockOpt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l2) == 0 && proto == IPPROTO_UDP;
}

/* lib/esp/udp_encap.h natTSteeringProgram(ikeIndex), which this C library
 * cannot link: a payload of at least 4 bytes starting with the non-ESP
 * marker (four zero bytes) is IKE's; ESP and keepalives are ipsecd's. */
static int attachSteering(int fd, unsigned ikeIndex) {
  SetSockOptFn realSetSockOpt = (SetSockOptFn)preloadNext(kSetSockOpt);
  const unsigned espIndex = 1 - ikeIndex;
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 4, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, espIndex),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, ikeIndex),
      BPF_STMT(BPF_RET | BPF_K, espIndex),
  };
  struct sock_fprog prog = {sizeof code / sizeof code[0], code};
  return realSetSockOpt ? realSetSockOpt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) : -1;
}

static int setReusePort(int fd, int on) {
  SetSockOptFn realSetSockOpt = (SetSockOptFn)preloadNext(kSetSockOpt);
  return realSetSockOpt ? realSetSockOpt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) : -1;
}

/* proto/natt_lock.h: ipsecd holds the same lock across its own two steps.
 * Returns the lock's descriptor, or -1 when it stayed taken (then we go on
 * without it). */
static int takeJoinLock(unsigned port, BindFn realBind) {
  SocketFnU realSocket = (SocketFnU)preloadNext(kSocket);
  if (!realSocket) return -1;
  const int lock = realSocket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (lock < 0) return -1;
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  const int n = snprintf(sun.sun_path + 1, sizeof sun.sun_path - 1, kNatTLockNameFormat, port);
  const socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
  for (int waited = 0; realBind(lock, (const struct sockaddr *)&sun, len) != 0; ++waited) {
    if (errno != EADDRINUSE || waited >= kNatTLockWaitMs) {
      closeLock(lock);
      return -1;
    }
    const struct timespec ms = {0, 1000 * 1000};
    nanosleep(&ms, NULL);
  }
  return lock;
}

/* The two binds of the rule above, retried while the other party is between
 * its two steps (bounded: about 200 ms). */
static int bindNatT(int fd, const struct sockaddr *addr, socklen_t len, BindFn realBind) {
  for (int attempt = 0; attempt < 40; ++attempt) {
    if (setReusePort(fd, 0) == 0 && realBind(fd, addr, len) == 0) return setReusePort(fd, 1);
    if (errno != EADDRINUSE) return -1;
    if (setReusePort(fd, 1) == 0 && realBind(fd, addr, len) == 0) {
      return attachSteering(fd, kReuseportIndexJoined);
    }
    if (errno != EADDRINUSE) return -1;
    const struct timespec pause = {0, 5 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  setReusePort(fd, 0);
  errno = EADDRINUSE;
  return -1;
}

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  NEXT_OR_ENOSYS(BindFn, kBind, realBind, -1);
  if (!natTPortOf(addr, len) || !isUdp(fd)) return realBind(fd, addr, len);
  const int lock = takeJoinLock((unsigned)envNumber("IPSEC_NATT_PORT", 4500, 65535), realBind);
  const int rc = bindNatT(fd, addr, len, realBind);
  const int err = errno;
  if (lock >= 0) closeLock(lock);
  errno = err;
  return rc;
}

/* ---- per-socket policies ------------------------------------------------------ */

static int setMark(int fd, uint32_t mark, SetSockOptFn realSetSockOpt) {
  return realSetSockOpt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark);
}

/* pfkey_compile_policy's checks and outcomes, with what we can honour. */
static int socketPolicy(int fd, int level, const void *value, socklen_t len, SetSockOptFn realSetSockOpt) {
  const uint32_t fwmark = (uint32_t)envNumber("IPSEC_FWMARK", 0x4950, 0xffffffffUL);
  if (!value && len == 0) {
    /* Linux: drop the socket's policies. Ours is the mark, if we set it. */
    uint32_t mark = 0;
    socklen_t ml = sizeof mark;
    GetSockOptFn realGetSockOpt = (GetSockOptFn)preloadNext(kGetSockOpt);
    if (realGetSockOpt && realGetSockOpt(fd, SOL_SOCKET, SO_MARK, &mark, &ml) == 0 && mark == fwmark) {
      return setMark(fd, 0, realSetSockOpt);
    }
    return 0;
  }
  if ((int)len <= 0 || len > 4096) {
    errno = EMSGSIZE;
    return -1;
  }
  struct sadb_x_policy pol;
  if (!value || len < sizeof pol) {
    errno = EINVAL;
    return -1;
  }
  memcpy(&pol, value, sizeof pol);
  if ((size_t)pol.sadb_x_policy_len * 8 > len || pol.sadb_x_policy_type > IPSEC_POLICY_BYPASS ||
      pol.sadb_x_policy_dir == 0 || pol.sadb_x_policy_dir > IPSEC_DIR_OUTBOUND) {
    errno = EINVAL;
    return -1;
  }
  (void)level;
  switch (pol.sadb_x_policy_type) {
    case IPSEC_POLICY_BYPASS:
    case IPSEC_POLICY_NONE:
      /* Inbound clear traffic never meets our SPD; outbound, the mark. */
      return pol.sadb_x_policy_dir == IPSEC_DIR_OUTBOUND ? setMark(fd, fwmark, realSetSockOpt) : 0;
    case IPSEC_POLICY_ENTRUST:
      return 0; /* KAME's "as the SPD says": what every socket gets anyway */
    default:
      errno = EOPNOTSUPP; /* DISCARD, IPSEC: no per-socket SPD here */
      return -1;
  }
}

EXPORT int setsockopt(int fd, int level, int name, const void *value, socklen_t len) {
  NEXT_OR_ENOSYS(SetSockOptFn, kSetSockOpt, realSetSockOpt, -1);
  const int isPolicy = (level == IPPROTO_IP && name == IP_IPSEC_POLICY) ||
                       (level == IPPROTO_IPV6 && name == IPV6_IPSEC_POLICY);
  if (!isPolicy) return realSetSockOpt(fd, level, name, value, len);
  return socketPolicy(fd, level, value, len, realSetSockOpt);
}
