/* The NAT-T port's join lock, shared by ipsecd (services/ipsecd/netsetup.cpp)
 * and libipsec-pfkey-preload.so inside the IKE daemon (tools/preload/
 * udp_preload.c). C and C++ both include this file.
 *
 * Why: the two share UDP natt_port as one SO_REUSEPORT group whose steering
 * program names the IKE daemon's member by index, and the index is the order
 * of joining. Each party works out its index in two steps (is the port free?
 * then bind), and between the two the other party may bind: both would then
 * think they came first and attach contradicting programs. Each party holds
 * this lock across its two steps and the attach, so the steps never
 * interleave.
 *
 * The lock: a Unix socket bound to the abstract name below (one per port),
 * which binds for one socket at a time and is released when that socket is
 * closed or its process dies. Abstract names belong to the network namespace,
 * as the port does. Another local process could hold the name to stall a
 * start: each party waits at most kNatTLockWaitMs and then goes on without
 * it (as before this lock existed).
 */
#ifndef IPSEC_PROTO_NATT_LOCK_H
#define IPSEC_PROTO_NATT_LOCK_H

#define kNatTLockNameFormat "ipsecd-natt-join-%u" /* the port, decimal */
#define kNatTLockWaitMs 1000

#endif
