// ipsec-keydb: its counters, declared once (lib/stats/counters.h). Plain
// integers: keydb is one thread. The levels are set when stats are taken.
#pragma once

#include "stats/counters.h"

namespace ipsec::keydb {

#define IPSEC_KEYDB_COUNTERS(EVENT, LEVEL) \
  LEVEL(sas, "SAs in the SAD, larval ones included") \
  LEVEL(sas_larval, "larval SAs: an SPI reserved by GETSPI or an ACQUIRE, no keys yet") \
  EVENT(sessions_refused, "SAs whose crypto session the broker refused") \
  EVENT(seq_grants, "blocks of sequence numbers granted to the forwarder") \
  EVENT(iv_grants, "blocks of counter IVs granted to the broker") \
  EVENT(expires_soft, "soft lifetimes reached: EXPIRE(soft) sent") \
  EVENT(expires_hard, "hard lifetimes reached: EXPIRE(hard) sent, the SA removed") \
  EVENT(larval_expired, "larval SAs removed after net.key.larval_lifetime") \
  EVENT(add_over_max_sas, "ADD/GETSPI refused (ENOBUFS): net.key.max_sas reached") \
  EVENT(add_no_key_memory, "ADD refused (ENOMEM): no locked memory left for the keys") \
  EVENT(sessions_refused_no_key_memory, "of sessions_refused, the broker had no locked key memory") \
  EVENT(sas_marked_outbound, "SAs a policy made outbound after their ADD") \
  EVENT(outbound_marks_awaited_broker, "markOutbound answers that waited for the broker's barrier echo")

IPSEC_STATS_STRUCT(Counters, IPSEC_KEYDB_COUNTERS);

}  // namespace ipsec::keydb
