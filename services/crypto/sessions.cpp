// See sessions.h.
#include "sessions.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>

#include "ring/pool.h"
#include "securemem/key_slab.h"

namespace ipsec::crypto {

SessionTable::SessionTable(const cryptodrv::DriverRegistry& drivers, unsigned workers)
    : drivers_(drivers),
      workers_(workers),
      ivLowBits_(std::make_unique<std::atomic<std::uint64_t>[]>(kMaxSessions / 64)),
      ivLowBell_(ring::Doorbell::create()) {}

namespace {

// Whether lib/securemem's process slab can hand out no more key memory. The
// drivers turn a failed key allocation (SecureBytes throws std::bad_alloc)
// into an error text like any other refusal, so after a refusal the slab is
// asked directly: one slot of each size class, given back at once. A class
// with no free slot grows by a chunk, which fails for every class alike once
// RLIMIT_MEMLOCK (or the mapping) is exhausted; if it succeeds the chunk
// stays for later keys (at most one per class, never a leak).
bool keyMemoryExhausted() noexcept {
  auto& slab = securemem::KeySlab::process();
  for (std::size_t size = securemem::KeySlab::kMinSlot; size <= securemem::KeySlab::kMaxSlot; size <<= 1) {
    std::uint8_t* p = slab.allocate(size);
    if (p == nullptr) return true;
    slab.deallocate(p, size);
  }
  return false;
}

// A refusal's text, with its errno in *errorCode: `code`, or (0) ENOMEM if
// the key memory is exhausted (the likeliest reason a driver failed then),
// else EINVAL.
std::string refuse(std::string text, int* errorCode, int code = 0) {
  if (errorCode) *errorCode = code != 0 ? code : keyMemoryExhausted() ? ENOMEM : EINVAL;
  return text;
}

}  // namespace

std::string SessionTable::create(std::uint32_t index, std::uint32_t generation, const cryptodrv::TransformSpec& spec,
                                 SessionDirection direction, std::uint64_t ivNext, std::uint64_t ivLimit,
                                 std::uint8_t layout[3], int* errorCode) {
  if (errorCode) *errorCode = 0;
  if (index >= kMaxSessions) return refuse("session index out of range", errorCode, EINVAL);
  try {
    auto s = std::make_unique<Session>();
    s->generation = generation;
    s->direction = direction;
    for (unsigned w = 0; w < workers_; ++w) {
      std::string error;
      auto t = drivers_.makeTransform(spec, &error);
      if (!t) return refuse(error.empty() ? "no driver runs this algorithm" : error, errorCode);
      s->perWorker.push_back(std::move(t));
    }
    const auto& t = *s->perWorker.front();
    s->ivIsCounter = t.ivIsCounter();
    s->layout = {false, t.ivLength(), t.icvLength(), t.padAlign()};
    s->ivNext = ivNext;
    s->ivLimit = ivLimit;
    layout[0] = t.ivLength();
    layout[1] = t.icvLength();
    layout[2] = t.padAlign();
    install(index, std::move(s));
  } catch (const std::bad_alloc&) {
    return refuse("out of memory", errorCode, ENOMEM);
  }
  return "";
}

std::string SessionTable::createAh(std::uint32_t index, std::uint32_t generation, const cryptodrv::TransformSpec& spec,
                                   SessionDirection direction, std::uint8_t layout[3], int* errorCode) {
  if (errorCode) *errorCode = 0;
  if (index >= kMaxSessions) return refuse("session index out of range", errorCode, EINVAL);
  try {
    auto s = std::make_unique<Session>();
    s->generation = generation;
    s->direction = direction;
    for (unsigned w = 0; w < workers_; ++w) {
      std::string error;
      auto t = cryptodrv::AhTransform::create(spec, &error);
      if (!t) return refuse(error, errorCode);
      s->ahPerWorker.push_back(std::move(t));
    }
    layout[0] = 0;
    layout[1] = workers_ > 0 ? s->ahPerWorker.front()->icvLength() : 0;
    layout[2] = 0;
    s->layout = {true, 0, layout[1], 0};
    install(index, std::move(s));
  } catch (const std::bad_alloc&) {
    return refuse("out of memory", errorCode, ENOMEM);
  }
  return "";
}

void SessionTable::install(std::uint32_t index, std::unique_ptr<Session> s) {
  std::unique_lock lock(mutex_);
  if (sessions_.size() <= index) sessions_.resize(index + 1);
  sessions_[index] = std::move(s);
}

void SessionTable::destroy(std::uint32_t index, std::uint32_t generation) {
  std::unique_lock lock(mutex_);
  if (index < sessions_.size() && sessions_[index] && sessions_[index]->generation == generation) {
    sessions_[index].reset();  // Transforms wipe their keys on destruction
  }
}

void SessionTable::grantIv(std::uint32_t index, std::uint32_t generation, std::uint64_t ivLimit) {
  std::shared_lock lock(mutex_);
  if (Session* s = find(index, generation)) {
    if (ivLimit > s->ivLimit.load()) s->ivLimit.store(ivLimit);
    s->ivRequested.store(false);
  }
}

void SessionTable::setDirection(std::uint32_t index, std::uint32_t generation, SessionDirection direction) {
  std::shared_lock lock(mutex_);
  if (Session* s = find(index, generation)) s->direction.store(direction, std::memory_order_release);
}

Session* SessionTable::find(std::uint32_t index, std::uint32_t generation) noexcept {
  if (index >= sessions_.size() || !sessions_[index] || sessions_[index]->generation != generation) return nullptr;
  return sessions_[index].get();
}

namespace {

// Random bytes drawn 4 KiB at a time per worker thread: one RAND_bytes call
// costs about as much as sealing a small packet, so it is paid per 256 IVs.
bool randomIv(std::uint8_t* iv, std::size_t len) noexcept {
  thread_local std::array<std::uint8_t, 4096> pool;
  thread_local std::size_t used = pool.size();
  if (len > pool.size()) return false;
  if (pool.size() - used < len) {
    if (RAND_bytes(pool.data(), static_cast<int>(pool.size())) != 1) return false;
    used = 0;
  }
  std::memcpy(iv, pool.data() + used, len);
  explicit_bzero(pool.data() + used, len);  // each random byte is handed out once
  used += len;
  return true;
}

// The high half of each segment's ESN (ring_abi.h): a later segment whose
// sequence number (low 32 bits, read from its header) is below the first
// one's has wrapped and takes seqHigh + 1.
class EsnHighHalf {
 public:
  explicit EsnHighHalf(std::uint32_t seqHigh) noexcept : seqHigh_(seqHigh) {}
  std::uint32_t of(std::uint16_t segment, const std::uint8_t* seqField) noexcept {
    const std::uint32_t seq = std::uint32_t{seqField[0]} << 24 | std::uint32_t{seqField[1]} << 16 |
                              std::uint32_t{seqField[2]} << 8 | seqField[3];
    if (segment == 0) first_ = seq;
    return seq < first_ ? seqHigh_ + 1 : seqHigh_;
  }

 private:
  std::uint32_t seqHigh_;
  std::uint32_t first_ = 0;
};

// What a request's segments came to: the fail mask the forwarder reads, the
// worst status (a bad ICV never hides an internal error), and the counts the
// session's shared counters take once per request.
struct SegmentTally {
  std::uint64_t failMask = 0;
  std::uint64_t succeeded = 0, badIcv = 0;
  proto::CryptoStatus worst = proto::CryptoStatus::kOk;

  // badLength: what a segment the driver found too short means for this op.
  void add(std::uint16_t segment, cryptodrv::Status st, proto::CryptoStatus badLength) noexcept {
    if (st == cryptodrv::Status::kOk) {
      ++succeeded;
      return;
    }
    failMask |= std::uint64_t{1} << segment;
    if (st == cryptodrv::Status::kBadIcv) {
      ++badIcv;
      if (worst == proto::CryptoStatus::kOk) worst = proto::CryptoStatus::kBadIcv;
    } else if (st == cryptodrv::Status::kBadLength) {
      if (worst != proto::CryptoStatus::kInternalError) worst = badLength;
    } else {
      worst = proto::CryptoStatus::kInternalError;
    }
  }
  void failed(std::uint16_t segment, proto::CryptoStatus why) noexcept {
    failMask |= std::uint64_t{1} << segment;
    worst = why;
  }
};

}  // namespace

// Counter IVs come from keydb's grant, so they never repeat under one key,
// across restarts too. A request's segments take theirs with one atomic add
// (a super-packet's forty segments cost one, not forty): [first, first +
// usable) lie below the grant's limit, and a segment past them fails as it
// would have alone, counted in ivExhausted. Workers sharing a session take
// disjoint blocks, so IVs stay unique though not in wire order.
SessionTable::CounterIvs SessionTable::reserveCounterIvs(Session& s, std::uint32_t index,
                                                         std::uint16_t count) noexcept {
  const std::uint64_t first = s.ivNext.fetch_add(count, std::memory_order_relaxed);
  const std::uint64_t limit = s.ivLimit.load(std::memory_order_acquire);
  const std::uint64_t usable = first >= limit ? 0 : std::min<std::uint64_t>(count, limit - first);
  if (usable < count) s.ivExhausted.fetch_add(count - usable, std::memory_order_relaxed);
  const std::uint64_t last = first + usable - 1;
  if (usable != 0 && limit - last < kIvLowWater && !s.ivRequested.exchange(true)) noteIvLow(index);
  return {first, static_cast<std::uint16_t>(usable)};
}

// Segment i's IV: the i-th counter of the request's block, big-endian in the
// IV's low bytes; other IVs (CBC) must be unpredictable: random.
bool SessionTable::makeIv(const Session& s, const CounterIvs& counters, std::uint16_t i, std::uint8_t* iv) noexcept {
  const std::uint8_t ivLength = s.layout.ivLength;
  if (!s.ivIsCounter) return randomIv(iv, ivLength);
  if (i >= counters.usable) return false;
  const std::uint64_t n = counters.first + i;
  std::memset(iv, 0, ivLength);
  for (int b = 0; b < 8 && b < ivLength; ++b) iv[ivLength - 1 - b] = static_cast<std::uint8_t>(n >> (8 * b));
  return true;
}

// Data path: no allocation, no lock; one eventfd write per grant at most.
void SessionTable::noteIvLow(std::uint32_t index) noexcept {
  ivLowBits_[index / 64].fetch_or(std::uint64_t{1} << (index % 64), std::memory_order_release);
  ivLowBell_.ring();
}

// The bell is drained before the bits are read: a bit set after the scan
// rings again and is taken on the next wake-up. A bit whose slot now holds
// another session that did not run low (ivRequested clear) asks nothing.
std::vector<SessionTable::IvLow> SessionTable::takeIvLow() {
  ivLowBell_.drain();
  std::vector<IvLow> out;
  std::shared_lock lock(mutex_);
  const std::size_t words = (sessions_.size() + 63) / 64;
  for (std::size_t w = 0; w < words; ++w) {
    std::uint64_t bits = ivLowBits_[w].exchange(0, std::memory_order_acquire);
    for (; bits != 0; bits &= bits - 1) {
      const auto index = static_cast<std::uint32_t>(w * 64 + static_cast<unsigned>(std::countr_zero(bits)));
      const Session* s = index < sessions_.size() ? sessions_[index].get() : nullptr;
      if (s && s->ivRequested.load()) out.push_back({index, s->generation, s->ivNext.load()});
    }
  }
  return out;
}

// One AH request: each segment is a whole canonicalised IP packet with its
// ICV field at icvOffset; with ESN each takes its high half (EsnHighHalf)
// from the AH header's sequence number field.
proto::CryptoStatus SessionTable::processAh(Session& s, unsigned worker, std::uint8_t* buffer,
                                            proto::CryptoRequest& req) noexcept {
  if (worker >= s.ahPerWorker.size()) return proto::CryptoStatus::kBadSession;
  cryptodrv::AhTransform& t = *s.ahPerWorker[worker];
  SegmentTally tally;
  EsnHighHalf high(req.seqHigh);
  for (std::uint16_t i = 0; i < req.segmentCount; ++i) {
    const auto [start, len] = ring::segmentOf(req, i);
    std::uint8_t* packet = buffer + start;
    // checkLayout: the AH sequence number field lies inside the segment
    const std::uint32_t seqHigh = t.esn() ? high.of(i, packet + req.icvOffset - 4) : req.seqHigh;
    // A bad length here: icvOffset outside the segment, the forwarder's framing.
    tally.add(i,
              req.op == proto::CryptoOp::kAhSign ? t.sign(packet, len, req.icvOffset, seqHigh)
                                                 : t.verify(packet, len, req.icvOffset, seqHigh),
              proto::CryptoStatus::kBadDescriptor);
  }
  if (tally.succeeded != 0) {
    (req.op == proto::CryptoOp::kAhSign ? s.ahSigned : s.ahVerified).fetch_add(tally.succeeded, std::memory_order_relaxed);
  }
  if (tally.badIcv != 0) s.badIcv.fetch_add(tally.badIcv, std::memory_order_relaxed);
  req.segmentFailMask = tally.failMask;
  return tally.worst;
}

// The refusals that need only the session: a wrong kind of op, a direction
// that forbids it, segments that do not fit the layout. kOk lets it run.
proto::CryptoStatus SessionTable::refuseEarly(Session& s, const proto::CryptoRequest& req) noexcept {
  const bool ahOp = req.op == proto::CryptoOp::kAhSign || req.op == proto::CryptoOp::kAhVerify;
  const bool espOp = req.op == proto::CryptoOp::kSeal || req.op == proto::CryptoOp::kOpen;
  if (s.layout.ah ? !ahOp : !espOp) {
    s.badOp.fetch_add(1, std::memory_order_relaxed);
    return proto::CryptoStatus::kBadOp;
  }
  if (!directionAllows(s.direction.load(std::memory_order_acquire), req.op)) {
    const bool sends = req.op == proto::CryptoOp::kSeal || req.op == proto::CryptoOp::kAhSign;
    (sends ? s.sealRefusedDirection : s.openRefusedDirection).fetch_add(1, std::memory_order_relaxed);
    std::atomic<std::uint64_t>& total = req.op == proto::CryptoOp::kSeal     ? refusals_.sealRefusedDirection
                                        : req.op == proto::CryptoOp::kOpen   ? refusals_.openRefusedDirection
                                        : req.op == proto::CryptoOp::kAhSign ? refusals_.ahSignRefusedDirection
                                                                             : refusals_.ahVerifyRefusedDirection;
    total.fetch_add(1, std::memory_order_relaxed);
    return proto::CryptoStatus::kWrongDirection;
  }
  if (const LayoutError e = checkLayout(req, s.layout); e != LayoutError::kNone) {
    refusals_.layout[static_cast<std::size_t>(e)].fetch_add(1, std::memory_order_relaxed);
    // ESP: a packet too short or misaligned for its SA is a bad packet; AH:
    // the forwarder framed the ICV field where no packet has it.
    return s.layout.ah ? proto::CryptoStatus::kBadDescriptor : proto::CryptoStatus::kBadLength;
  }
  return proto::CryptoStatus::kOk;
}

proto::CryptoStatus SessionTable::process(unsigned worker, std::uint8_t* buffer, proto::CryptoRequest& req) noexcept {
  Session* s = find(req.session, req.sessionGeneration);
  proto::CryptoStatus refused = s ? refuseEarly(*s, req) : proto::CryptoStatus::kBadSession;
  if (refused != proto::CryptoStatus::kOk) {
    req.segmentFailMask = ring::allSegments(req.segmentCount);  // none was run
    return refused;
  }
  return s->layout.ah ? processAh(*s, worker, buffer, req) : processEsp(*s, worker, buffer, req);
}

// One ESP request: each segment is one ESP packet, header..ICV, that
// refuseEarly found long enough for the IV written at header + 8. The
// session's shared counters move once per request, not per segment. With
// ESN each takes its high half (EsnHighHalf) from its ESP header.
proto::CryptoStatus SessionTable::processEsp(Session& s, unsigned worker, std::uint8_t* buffer,
                                             proto::CryptoRequest& req) noexcept {
  if (worker >= s.perWorker.size()) return proto::CryptoStatus::kBadSession;
  cryptodrv::Transform& t = *s.perWorker[worker];
  const bool seal = req.op == proto::CryptoOp::kSeal;
  const CounterIvs counterIvs = seal && s.ivIsCounter ? reserveCounterIvs(s, req.session, req.segmentCount)
                                                      : CounterIvs{};
  SegmentTally tally;
  EsnHighHalf high(req.seqHigh);
  for (std::uint16_t i = 0; i < req.segmentCount; ++i) {
    const auto [start, len] = ring::segmentOf(req, i);
    std::uint8_t* esp = buffer + start;
    // refuseEarly: the header, and its sequence number at +4, lie inside the segment
    const std::uint32_t seqHigh = t.esn() ? high.of(i, esp + 4) : req.seqHigh;
    cryptodrv::Status st;
    if (seal) {
      std::uint8_t iv[cryptodrv::Transform::kMaxIvLength];
      if (!makeIv(s, counterIvs, i, iv)) {
        tally.failed(i, proto::CryptoStatus::kSeqExhausted);
        continue;
      }
      // sealWithIv writes the IV for the wire and seals with our private copy.
      st = t.sealWithIv(esp, len, seqHigh, iv);
    } else {
      st = t.open(esp, len, seqHigh);
    }
    if (st == cryptodrv::Status::kBadLength) refusals_.driverBadLength.fetch_add(1, std::memory_order_relaxed);
    tally.add(i, st, proto::CryptoStatus::kBadLength);
  }
  if (tally.succeeded != 0) (seal ? s.sealed : s.opened).fetch_add(tally.succeeded, std::memory_order_relaxed);
  if (tally.badIcv != 0) s.badIcv.fetch_add(tally.badIcv, std::memory_order_relaxed);
  req.segmentFailMask = tally.failMask;
  return tally.worst;
}

}  // namespace ipsec::crypto
