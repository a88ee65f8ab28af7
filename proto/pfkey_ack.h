/* The PF_KEY answer-queued acknowledgement between libipsec-pfkey-preload.so
 * (tools/preload, plain C, inside an unmodified key manager) and ipsec-policy
 * (services/policy/server.cpp). C and C++ both include this file: plain
 * fixed-width data only.
 *
 * Why: Linux's AF_KEY answers a request inside the sender's send(), so the
 * reply (and any broadcast copy to the sender) is on its socket when send()
 * returns; racoon sends REGISTER on a non-blocking socket and reads at once.
 * ipsec-policy answers asynchronously (SAD requests go to keydb), so the
 * preload waits, bounded, after each send until the service says the answers
 * to every datagram sent before it are on the client's socket.
 *
 * The synchronisation is per send, in band: right after each send on a PF_KEY
 * connection the preload sends one sync datagram on the same connection,
 * carrying with SCM_RIGHTS one end of a socketpair of the sending process
 * (SOCK_SEQPACKET; a forked child makes its own) and, explicitly, the
 * sender's SCM_CREDENTIALS (a datagram sent before the service set
 * SO_PASSCRED on the connection would otherwise carry none). The sync is exactly a
 * sadb_msg header of kPfkeyAckSyncLen bytes with sadb_msg_version PF_KEY_V2,
 * sadb_msg_type 0 (SADB_RESERVED), sadb_msg_len 2, sadb_msg_reserved
 * kPfkeyAckSyncMagic and sadb_msg_seq a token of the sender's choosing; it is
 * not a request: no answer, not counted. Any other datagram is a request.
 * Once the answers to every request received on the connection before the
 * sync are offered to the client's socket (sent, or queued behind messages
 * the full socket refused, which the client will read first), the service
 * writes the sync's token back on the descriptor it carried: one PfkeyAck
 * (host order, same machine), then closes that descriptor.
 *
 * Because the stream itself orders a sync after everything sent before it,
 * by whatever call and through whichever descriptor of the connection
 * (writev, sendmmsg, a raw dup), and each token names its own send, nothing
 * is counted on either side and nothing can drift: a send the preload did not
 * see is simply not waited for. A service that gets no syncs sends nothing
 * (our own setkey speaks to the socket directly).
 *
 * Trust: the service takes the descriptor only if it is a Unix socket whose
 * peer (SO_PEERCRED: a socketpair's creator) is the process that sent the
 * sync (SCM_CREDENTIALS, vouched for by the kernel) — never the connection
 * itself, never a socket to a third process — holds at most
 * kPfkeyAckMaxSyncs of them per connection, and never blocks on one
 * (MSG_DONTWAIT: an ack the client does not read is lost, the client's wait
 * is bounded and skips tokens not its own).
 */
#ifndef IPSEC_PROTO_PFKEY_ACK_H
#define IPSEC_PROTO_PFKEY_ACK_H

#include <stdint.h>

#define kPfkeyAckSyncMagic ((uint16_t)0x5953) /* "SY" */
#define kPfkeyAckSyncLen 16                  /* sizeof(struct sadb_msg) */
#define kPfkeyAckMaxSyncs 64                 /* outstanding per connection */
typedef uint32_t PfkeyAck;                   /* the sync's sadb_msg_seq */

#endif
