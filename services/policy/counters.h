// ipsec-policy: its counters, declared once (lib/stats/counters.h). Plain
// integers: policy is one thread. The levels are set when stats are taken;
// after this list come pfkey_in_<message type> for each type received
// (Server::fillStats), whose names follow the PF_KEY message names.
#pragma once

#include "stats/counters.h"

namespace ipsec::policy {

#define IPSEC_POLICY_COUNTERS(EVENT, LEVEL) \
  LEVEL(pfkey_clients, "PF_KEY client sockets connected now") \
  EVENT(pfkey_clients_accepted, "PF_KEY clients accepted") \
  EVENT(pfkey_clients_refused, "PF_KEY clients refused: SO_PEERCRED said no, or too many clients") \
  EVENT(pfkey_requests, "PF_KEY messages received from clients") \
  EVENT(pfkey_syncs_refused, "preload syncs refused: no channel of the sender's own, or too many outstanding") \
  EVENT(pfkey_errors, "error replies sent to clients, of any kind") \
  EVENT(pfkey_malformed, "PF_KEY messages the parser refused") \
  EVENT(pfkey_truncated, "PF_KEY messages larger than the receive buffer") \
  EVENT(pfkey_enobufs, "messages to a client dropped: its queue was full") \
  EVENT(pfkey_send_failed, "messages to a client dropped: its socket failed") \
  EVENT(pfkey_broadcasts, "messages delivered to more than one socket") \
  EVENT(pfkey_acquires, "ACQUIREs sent to registered clients") \
  EVENT(pfkey_expires, "EXPIREs sent to registered clients") \
  EVENT(pfkey_nat_mappings, "SADB_X_NAT_T_NEW_MAPPING messages sent") \
  EVENT(pfkey_nat_mapping_refused_no_sa, "NAT mapping reports naming no SA keydb has") \
  EVENT(pfkey_nat_mapping_refused_not_encap, "NAT mapping reports for an SA not UDP-encapsulated") \
  EVENT(pfkey_nat_mapping_refused_wrong_endpoint, "NAT mapping reports whose old endpoint is not the SA's") \
  EVENT(pfkey_nat_mapping_refused_rate_limited_sa, "NAT mapping reports within a second of the SA's last") \
  EVENT(pfkey_nat_mapping_refused_rate_limited, "NAT mapping reports beyond the overall rate") \
  EVENT(pfkey_migrations, "SADB_X_MIGRATE requests that moved a policy") \
  EVENT(pfkey_acquires_blocked, "ACQUIREs suppressed while one was pending (net.key.blockacq_count)") \
  LEVEL(pfkey_acquires_pending, "ACQUIRE states (larval) waiting for an SA") \
  EVENT(spd_expires, "policies deleted when their hard lifetime ran out") \
  LEVEL(sad_requests_pending, "requests to keydb awaiting its reply") \
  LEVEL(spd_policies, "policies in the SPD") \
  EVENT(spd_forwarder_pushes, "SPD changes sent to the forwarder") \
  EVENT(spd_pushes_awaited_marks, "policies held until keydb said the broker had their outbound marks")

IPSEC_STATS_STRUCT(Counters, IPSEC_POLICY_COUNTERS);

}  // namespace ipsec::policy
