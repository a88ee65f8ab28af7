// ipsec-keydb: the service around the SAD (sad.h). Peers:
//   policy     SAD requests (add/update/delete/get/flush/dump/getspi) → replies
//   crypto     sessions with keys and directions → ; ← session results, IV block requests
//   forwarder  SA metadata without keys, sequence grants → ; ← seq requests, usage
// The crypto and forwarder channels are replaced when ipsecd restarts the data
// plane; their loss alone is not fatal here.
#pragma once

#include <utility>  // before asio (Boost 1.74 with GCC 12)

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <queue>
#include <string_view>
#include <vector>

#include "control/channel.h"
#include "counters.h"
#include "proto/crypto.capnp.h"
#include "proto/dataplane.capnp.h"
#include "proto/sad.capnp.h"
#include "proto/supervisor.capnp.h"
#include "sad.h"

namespace ipsec::keydb {

using control::UniqueFd;

// Does this SA satisfy the outbound policy request `t` (proto/sad.capnp
// OutboundTemplate's rule)? direction.cpp.
bool templateCovers(proto::OutboundTemplate::Reader t, proto::SaParams::Reader p);

class Keydb {
 public:
  Keydb(boost::asio::io_context& io, UniqueFd policy, UniqueFd crypto, UniqueFd forwarder);
  void start();
  void stop();
  bool onDataPlaneRestarted(std::vector<UniqueFd>& fds);
  void fillStats(proto::Stats::Builder out);
  // net.key.larval_lifetime: seconds a larval SA (GETSPI) lives (default 30,
  // Linux's acquire timeout); net.key.debug: log every SAD request;
  // net.key.max_sas: SAs (larval ones too) at most, further ADDs and GETSPIs
  // are ENOBUFS (default kDefaultMaxSas, at most kMaxSasCeiling).
  void setSysctl(std::string_view name, std::int64_t value);
  std::size_t sadSize() const noexcept { return sad_.size(); }

  // The SAD's size bound. keydb's and the broker's RLIMIT_MEMLOCK
  // (kLockedMemoryBytes, set before the sysctls arrive) covers the ceiling's
  // keys in lib/securemem's slab: two keys of up to 64 bytes per SA in
  // keydb, one key copy per worker in the broker (the broker's session table
  // holds kMaxSessions = kMaxSasCeiling sessions).
  static constexpr std::size_t kDefaultMaxSas = 262144;
  static constexpr std::size_t kMaxSasCeiling = std::size_t{1} << 20;

  // SAs per dump reply (SadReply.more on all but the last): one SaRecord with
  // keys, IPv6 addresses and NAT-T is well under 1 KiB, so a chunk stays far
  // below control::kMaxMessageBytes.
  static constexpr std::size_t kDumpChunk = 512;

 private:
  void attachDataPlane(UniqueFd crypto, UniqueFd forwarder);
  void startDataPlaneChannels();
  bool onPolicy(capnp::MessageReader& m, std::vector<UniqueFd>& fds);
  bool onCrypto(capnp::MessageReader& m, std::vector<UniqueFd>& fds);
  bool onForwarder(capnp::MessageReader& m, std::vector<UniqueFd>& fds);

  void add(std::uint64_t id, proto::SaAdd::Reader req);
  void getSpi(std::uint64_t id, proto::GetSpi::Reader req);
  // X_MIGRATE's SA part (end of keydb.cpp): moves SAs to new addresses.
  void migrate(std::uint64_t id, capnp::List<proto::SaMigration>::Reader moves);
  // An outbound policy was stored (direction.cpp): the SAs its templates
  // cover become outbound, and their live sessions hear so. A nonzero
  // requestId is answered (outboundMarked) once the broker has the marks:
  // a barrier follows them, and the answer waits for its echo.
  bool markOutbound(std::uint64_t requestId, capnp::List<proto::OutboundTemplate>::Reader templates);
  void setOutbound(Sa& sa);
  // The broker echoed a barrier (direction.cpp): false for a token that is
  // not the oldest one awaited (a protocol error: the channel closes).
  bool onBarrierEcho(std::uint64_t token);
  // No broker will echo (its channel closed or was replaced): every mark
  // awaited is answered now, in order; a new broker's sessions carry them.
  void answerAwaitedMarks();
  void answerMark(std::uint64_t requestId);
  void removeSa(Sa& sa);
  // Ends an UPDATE's old SA (Sa::replaced) for good: its broker session
  // goes, and its forwarder entry too unless the successor's install replaced it.
  void dropReplaced(std::unique_ptr<Sa> old, bool installed);
  // The UPDATE's SA was refused: it goes (it has no session or entry) and the
  // SA it replaces is back in the SAD as it was, still scheduled.
  void restoreReplaced(Sa& successor);
  void createSession(Sa& sa);
  void installInForwarder(Sa& sa);
  void reply(std::uint64_t id, int err, const std::vector<Sa*>& sas = {}, bool withKeys = false,
             bool more = false);
  // A dump goes out in chunks of kDumpChunk SAs (each one control message),
  // paced by policy's reading: at most kDumpQueueDepth replies queued on its
  // channel, so 100 000 SAs never sit in keydb's send queue at once. SAs
  // deleted meanwhile are skipped (they are named by SaRef, not pointer).
  static constexpr std::size_t kDumpQueueDepth = 2;
  struct DumpJob {
    std::uint64_t id = 0;
    std::vector<SaRef> refs;
    std::size_t next = 0;
  };
  void startDump(std::uint64_t id, std::uint8_t satype);
  void continueDumps();
  void replyError(std::uint64_t id, int err) { reply(id, err); }
  // Soft and hard lifetimes (RFC 2367 §2.3.4): bytes, packets, add time,
  // first-use time. Soft: EXPIRE(soft), state dying. Hard: EXPIRE(hard) and
  // the SA is deleted. Larval SAs live larvalLifetime_ seconds.
  //
  // Time limits are kept in a heap of due times, so the 1 s tick looks only
  // at SAs whose time has come (a walk of 100 000 SAs every second was a
  // third of keydb's time under an ADD burst); byte and packet limits are
  // checked for the SAs a usage report names, when it arrives.
  struct LifetimeDue {
    std::uint64_t at = 0;  // unix seconds
    SaRef ref;
    bool operator>(const LifetimeDue& o) const noexcept { return at > o.at; }
  };
  void checkLifetimes();
  // Judges one SA now; returns false if it was deleted. If it lives on, its
  // next due time is scheduled.
  bool checkLifetime(Sa& sa, std::uint64_t nowS);
  // Puts the SA's next time limit in the heap, unless one as early is there.
  void scheduleLifetime(Sa& sa, std::uint64_t nowS);
  // After a change that moves every due time (net.key.larval_lifetime).
  void rescheduleAllLifetimes();
  void armLifetimeTimer();
  void sendExpire(Sa& sa, bool hard);

  boost::asio::io_context& io_;
  std::unique_ptr<control::Channel> policy_, crypto_, forwarder_;
  Sad sad_;
  boost::asio::steady_timer lifetimeTimer_;
  std::priority_queue<LifetimeDue, std::vector<LifetimeDue>, std::greater<>> lifetimeDue_;
  std::uint64_t lifetimeTimerAt_ = 0;  // the due time (unix s) the timer waits for; 0: not armed
  boost::asio::steady_timer dumpTimer_;
  std::deque<DumpJob> dumps_;
  bool dumpTimerArmed_ = false;
  std::uint64_t larvalLifetime_ = 30;  // seconds, as Linux's acquire timeout
  std::size_t maxSas_ = kDefaultMaxSas;
  bool debug_ = false;
  bool stopped_ = false;
  Counters counters_;  // the levels (sas, sas_larval) are set in fillStats
  // markOutbound requests waiting for the broker's barrier echo, oldest
  // first (the broker echoes in order). policy holds at most its
  // maxPendingRequests (4096 by default) requests at once; more than
  // kMaxAwaitedMarks from it is a protocol error.
  struct AwaitedMark {
    std::uint64_t token = 0, requestId = 0;
  };
  static constexpr std::size_t kMaxAwaitedMarks = 65536;
  std::deque<AwaitedMark> awaitedMarks_;
  std::uint64_t nextBarrierToken_ = 1;
};

}  // namespace ipsec::keydb
