/* What the two halves of libipsec-pfkey-preload.so share: the next
 * definitions of the libc functions they interpose (dlsym(RTLD_NEXT)).
 * pfkey_preload.c: PF_KEY sockets; udp_preload.c: the IKE daemon's UDP
 * sockets (NAT-T port sharing, per-socket bypass policies). */
#ifndef IPSEC_PRELOAD_H
#define IPSEC_PRELOAD_H

#include <errno.h>

enum NextId {
  kSocket, kClose, kCloseRange, kCloseFrom, kDup, kDup2, kDup3, kFcntl, kFcntl64,
  kGetSockOpt, kGetSockName, kGetPeerName,
  kSend, kSendTo, kSendMsg, kWrite, kRecv, kRecvFrom, kRecvMsg, kRead,
  kBind, kSetSockOpt, kWritev, kSendMmsg, kNextCount
};

/* The next definition of `id`, resolved once; NULL if there is none. */
__attribute__((visibility("hidden"))) void *preloadNext(enum NextId id);

#define NEXT_OR_ENOSYS(type, id, var, fail) \
  type var = (type)preloadNext(id);         \
  if (!var) {                               \
    errno = ENOSYS;                         \
    return fail;                            \
  }

#endif
