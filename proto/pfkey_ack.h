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
 * to every datagram so far are on the client's socket.
 *
 * The channel: right after connecting, the preload sends one hello datagram on
 * the PF_KEY connection carrying, with SCM_RIGHTS, one end of a socketpair of
 * its own (SOCK_SEQPACKET). The hello is exactly a sadb_msg header of
 * kPfkeyAckHelloLen bytes with sadb_msg_version PF_KEY_V2, sadb_msg_type 0
 * (SADB_RESERVED), sadb_msg_len 2 and sadb_msg_reserved kPfkeyAckHelloMagic;
 * it is not a request: no answer, not counted. Any other datagram is a
 * request. On that end the service then writes acknowledgements: one
 * uint64_t each (host order, same machine), the number of requests received
 * on the connection since the hello whose answers are all offered to the
 * client's socket (sent, or queued behind messages the full socket refused,
 * which the client will read first). Numbers only grow. A service that sees
 * no hello sends nothing (our own setkey speaks to the socket directly).
 *
 * Trust: the service takes the descriptor only if it is a Unix socket, at
 * most once per connection, and never blocks on it (MSG_DONTWAIT: an ack the
 * client does not read is lost, the client's wait is bounded).
 */
#ifndef IPSEC_PROTO_PFKEY_ACK_H
#define IPSEC_PROTO_PFKEY_ACK_H

#include <stdint.h>

#define kPfkeyAckHelloMagic ((uint16_t)0x4b41) /* "AK" */
#define kPfkeyAckHelloLen 16                  /* sizeof(struct sadb_msg) */
typedef uint64_t PfkeyAck;

#endif
