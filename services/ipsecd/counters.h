// ipsecd: its own counters, declared once (lib/stats/counters.h), about the
// children's output it relays (child_output.h). Plain integers: ipsecd's
// loop is one thread.
#pragma once

#include "stats/counters.h"

namespace ipsec::supervisor {

#define IPSEC_IPSECD_COUNTERS(EVENT, LEVEL) \
  EVENT(child_output_lines, "lines of the children's output relayed to ipsecd's stderr") \
  EVENT(child_output_lines_truncated, "lines cut at kMaxLineBytes") \
  EVENT(child_output_bytes_dropped, "bytes cut off those lines") \
  EVENT(child_output_lines_dropped, "lines dropped: the child wrote over its rate")

IPSEC_STATS_STRUCT(OutputCounters, IPSEC_IPSECD_COUNTERS);

}  // namespace ipsec::supervisor
