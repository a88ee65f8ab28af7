// ipsec-crypto: the broker's counters as `ipsecctl stats` shows them,
// declared once (lib/stats/counters.h). The workers and the session table
// keep their own atomics (WorkerCounters, Session, RefusalCounters: written
// by the worker threads); Broker::fillStats sums them into this struct on the
// control thread when stats are asked for.
#pragma once

#include "stats/counters.h"

namespace ipsec::crypto {

#define IPSEC_CRYPTO_COUNTERS(EVENT, LEVEL) \
  LEVEL(sessions, "crypto sessions held") \
  LEVEL(sessions_outbound, "sessions keydb marked outbound: they may seal and sign") \
  LEVEL(sessions_inbound, "sessions that may only open and verify") \
  LEVEL(sessions_unknown_direction, "sessions whose direction keydb has not said yet") \
  EVENT(sessions_created, "sessions created for keydb") \
  EVENT(sessions_refused, "sessions refused (bad key or algorithm, legacy algorithm, no memory)") \
  EVENT(sessions_refused_no_key_memory, "of sessions_refused, no locked key memory left (ENOMEM)") \
  EVENT(requests, "requests taken from the rings") \
  EVENT(bursts, "bursts of requests taken from the rings") \
  EVENT(worker_sleeps, "times a worker slept on its doorbell") \
  EVENT(worker_sleeps_completion_full, "times a worker slept because its completion ring stayed full") \
  EVENT(sealed, "ESP packets sealed") \
  EVENT(opened, "ESP packets opened") \
  EVENT(open_bad_icv, "ESP packets whose integrity check failed") \
  EVENT(seal_iv_exhausted, "seals refused: the session's counter IV grant from keydb ran out") \
  EVENT(drop_bad_descriptor, "requests refused: the descriptor is not valid for this ring's pool") \
  EVENT(drop_bad_session, "requests naming no session of this ring") \
  EVENT(drop_descriptor_bad_op, "of drop_bad_descriptor, an unknown operation") \
  EVENT(drop_descriptor_bad_buffer_index, "of drop_bad_descriptor, a buffer index outside the pool") \
  EVENT(drop_descriptor_bad_segment_count, "of drop_bad_descriptor, a segment count out of range") \
  EVENT(drop_descriptor_bad_segment_layout, "of drop_bad_descriptor, an empty segment or a stride that leaves the last one empty") \
  EVENT(drop_descriptor_out_of_buffer, "of drop_bad_descriptor, a range beyond its buffer") \
  EVENT(drop_segment_too_short, "ESP requests with a segment shorter than the shortest ESP packet") \
  EVENT(drop_segment_too_long, "requests with a segment longer than an IP packet or payload can be") \
  EVENT(drop_segment_misaligned, "ESP requests whose payload to next header is not a multiple of the pad alignment") \
  EVENT(drop_ah_icv_offset_low, "AH requests whose ICV offset lies inside the smallest IP and AH headers") \
  EVENT(drop_ah_icv_outside_segment, "AH requests whose ICV lies outside the segment") \
  EVENT(drop_driver_bad_length, "requests a driver refused for their length after the layout check") \
  EVENT(seal_refused_direction, "seals refused: the session is not outbound") \
  EVENT(open_refused_direction, "opens refused: the session is outbound") \
  EVENT(ah_sign_refused_direction, "AH signs refused: the session is not outbound") \
  EVENT(ah_verify_refused_direction, "AH verifies refused: the session is outbound") \
  EVENT(ring_corrupt, "request bursts after the forwarder published an index beyond the ring (clamped)") \
  EVENT(ah_signed, "AH packets signed") \
  EVENT(ah_verified, "AH packets verified") \
  EVENT(drop_bad_op, "requests whose operation is not of the session's kind (ESP on AH or AH on ESP)")

IPSEC_STATS_STRUCT(Counters, IPSEC_CRYPTO_COUNTERS);

}  // namespace ipsec::crypto
