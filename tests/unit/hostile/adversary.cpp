// See adversary.h.
#include "adversary.h"

#include <algorithm>

namespace ipsec::hostile {

using proto::CryptoOp;
using proto::CryptoStatus;

std::string_view toString(Fault fault) {
  switch (fault) {
    case Fault::kNone: return "valid";
    case Fault::kUnknownOp: return "unknown_op";
    case Fault::kBufferIndex: return "buffer_index";
    case Fault::kSegmentCount: return "segment_count";
    case Fault::kZeroLength: return "zero_length";
    case Fault::kOutOfBuffer: return "out_of_buffer";
    case Fault::kStride: return "stride";
    case Fault::kSessionIndex: return "session_index";
    case Fault::kGeneration: return "generation";
    case Fault::kWrongKind: return "wrong_kind";
    case Fault::kWrongDirection: return "wrong_direction";
    case Fault::kShortSegment: return "short_segment";
    case Fault::kIcvOffset: return "icv_offset";
    case Fault::kCount: break;
  }
  return "?";
}

Adversary::Adversary(std::uint64_t seed, std::uint32_t bufferCount, std::uint32_t bufferSize)
    : rng_(seed), bufferCount_(bufferCount), bufferSize_(bufferSize) {}

std::vector<SessionSpec> Adversary::sessionSpecs(std::mt19937_64& rng) {
  auto bytes = [&](std::size_t n) {
    std::vector<std::uint8_t> k(n);
    for (auto& b : k) b = static_cast<std::uint8_t>(rng());
    return k;
  };
  // Counter IVs start at a random 64-bit offset (DESIGN §3), kept well below
  // the top so that grants never wrap.
  auto ivBase = [&] { return (rng() >> 2) + 1; };
  using D = proto::Direction;
  std::vector<SessionSpec> s(kRoleCount);
  s[kOut] = {1, 11, false, D::OUTBOUND, bytes(20), 0, 0};
  s[kOut2] = {2, 12, false, D::OUTBOUND, bytes(20), 0, 0};
  s[kIn] = {3, 13, false, D::INBOUND, bytes(20), 0, 0};
  s[kUnknown] = {4, 14, false, D::UNKNOWN, bytes(20), 0, 0};
  s[kLoop] = {5, 15, false, D::INBOUND, s[kOut].key, 0, 0};
  s[kAhOut] = {6, 16, true, D::OUTBOUND, bytes(32), 0, 0};
  s[kAhIn] = {7, 17, true, D::INBOUND, bytes(32), 0, 0};
  s[kReborn] = {8, 2, false, D::OUTBOUND, bytes(20), 0, 0};
  for (auto& spec : s) {
    if (spec.ah) continue;
    spec.ivNext = ivBase();
    // Small first grants: the broker must ask for more while the test runs.
    spec.ivLimit = spec.ivNext + (1u << 18) + 500;
  }
  return s;
}

void Adversary::name(proto::CryptoRequest& r, int role, CryptoOp op) {
  r.session = sessions_[role].index;
  r.sessionGeneration = sessions_[role].generation;
  r.op = op;
}

// Valid for AES-GCM-16: each segment kEspMinLength + 4k bytes, back to back.
void Adversary::espLayout(proto::CryptoRequest& r, bool multi) {
  const std::uint32_t count = multi ? 1 + pick(proto::kMaxSegments) : 1;
  const std::uint32_t stride = kEspMinLength + 4 * pick(count > 16 ? 64 : 400);
  const std::uint32_t last = kEspMinLength + 4 * pick(stride / 4 - kEspMinLength / 4 + 1);
  const std::uint32_t length = (count - 1) * stride + last;
  const std::uint32_t room = bufferSize_ - length;
  const std::uint32_t where = pick(4);
  r.offset = where == 0 ? 0 : where == 1 ? room : pick(room + 1);  // both edges often
  r.segmentCount = static_cast<std::uint16_t>(count);
  r.segmentStride = count > 1 ? stride : 0;
  r.length = length;
}

// Valid for AH: whole IPv4 packets of at least header + AH + ICV.
void Adversary::ahLayout(proto::CryptoRequest& r) {
  const std::uint32_t count = pick(4) == 0 ? 1 + pick(proto::kMaxSegments) : 1;
  const std::uint32_t stride = kAhIcvOffset + kAhIcvLength + pick(count > 16 ? 900 : 1400);
  const std::uint32_t length = (count - 1) * stride + kAhIcvOffset + kAhIcvLength + pick(stride - 47);
  r.offset = pick(2) ? bufferSize_ - length : pick(bufferSize_ - length + 1);
  r.segmentCount = static_cast<std::uint16_t>(count);
  r.segmentStride = count > 1 ? stride : 0;
  r.length = length;
  r.icvOffset = kAhIcvOffset;
}

Planned Adversary::valid(bool quiet, std::uint32_t buffer) {
  Planned p;
  p.quiet = quiet;
  auto& r = p.request;
  r.bufferIndex = buffer;
  switch (pick(6)) {
    case 0:
    case 1: {  // seal under an outbound session: the IVs are collected
      static constexpr int kSealers[] = {kOut, kOut, kOut2, kReborn};
      p.role = kSealers[pick(4)];
      name(r, p.role, CryptoOp::kSeal);
      espLayout(r, pick(3) == 0);
      p.allowed = {CryptoStatus::kOk, CryptoStatus::kSeqExhausted};
      break;
    }
    case 2: {  // open of bytes no one sealed: inbound or unknown direction
      p.role = pick(2) ? kIn : kUnknown;
      name(r, p.role, CryptoOp::kOpen);
      espLayout(r, pick(3) == 0);
      p.allowed = {CryptoStatus::kBadIcv};
      break;
    }
    case 3:
      p.role = kAhOut;
      name(r, p.role, CryptoOp::kAhSign);
      ahLayout(r);
      p.allowed = {CryptoStatus::kOk};
      break;
    default:
      p.role = kAhIn;
      name(r, p.role, CryptoOp::kAhVerify);
      ahLayout(r);
      p.allowed = {CryptoStatus::kBadIcv};
      break;
  }
  return p;
}

// A valid request of a kind the fault applies to, then the fault.
Planned Adversary::faulty(Fault fault, bool quiet, std::uint32_t buffer) {
  Planned p = valid(quiet, buffer);
  p.fault = fault;
  auto& r = p.request;
  const bool ahOp = r.op == CryptoOp::kAhSign || r.op == CryptoOp::kAhVerify;
  switch (fault) {
    case Fault::kUnknownOp: {
      static constexpr std::uint8_t kOps[] = {0, 5, 6, 9, 0x80, 0xff};
      r.op = static_cast<CryptoOp>(kOps[pick(6)]);
      p.allowed = {CryptoStatus::kBadOp};
      p.counters = {"drop_descriptor_bad_op"};
      break;
    }
    case Fault::kBufferIndex: {
      const std::uint32_t bad[] = {bufferCount_, bufferCount_ + 1, 0x7fffffffu, 0xffffffffu};
      r.bufferIndex = bad[pick(4)];
      p.allowed = {CryptoStatus::kBadDescriptor};
      p.counters = {"drop_bad_descriptor", "drop_descriptor_bad_buffer_index"};
      break;
    }
    case Fault::kSegmentCount: {
      static constexpr std::uint16_t kCounts[] = {0, proto::kMaxSegments + 1, 1000, 65535};
      r.segmentCount = kCounts[pick(4)];
      if (r.segmentCount > 1 && r.segmentStride == 0) r.segmentStride = 1;
      p.allowed = {CryptoStatus::kBadDescriptor};
      p.counters = {"drop_bad_descriptor", "drop_descriptor_bad_segment_count"};
      break;
    }
    case Fault::kZeroLength:
      r.length = 0;
      p.allowed = {CryptoStatus::kBadDescriptor};
      p.counters = {"drop_bad_descriptor", "drop_descriptor_bad_segment_layout"};
      break;
    case Fault::kOutOfBuffer: {
      // Past the end by one byte, one byte from the end, offsets whose 32-bit
      // sum wraps back into the buffer, and the largest length.
      switch (pick(5)) {
        case 0: r.offset = bufferSize_ - r.length + 1; break;
        case 1: r.offset = bufferSize_ - 1; break;
        case 2: r.offset = 0xffffffffu - r.length / 2; break;
        case 3: r.offset = bufferSize_; break;
        default: r.length = 0xffffffffu; break;
      }
      p.allowed = {CryptoStatus::kBadDescriptor};
      p.counters = {"drop_bad_descriptor", "drop_descriptor_out_of_buffer"};
      break;
    }
    case Fault::kStride: {
      // At least three segments: with two, no stride makes n * stride wrap.
      if (r.segmentCount < 3) r.segmentCount = static_cast<std::uint16_t>(3 + pick(proto::kMaxSegments - 2));
      const std::uint32_t n = r.segmentCount - 1u;
      switch (pick(3)) {
        case 0: r.segmentStride = 0; break;
        case 1: r.segmentStride = 0xffffffffu / n + 1 + pick(16); break;  // n * stride wraps 32 bits
        default: r.segmentStride = (r.length + n - 1) / n; break;        // last segment empty
      }
      p.allowed = {CryptoStatus::kBadDescriptor};
      p.counters = {"drop_bad_descriptor", "drop_descriptor_bad_segment_layout"};
      break;
    }
    case Fault::kSessionIndex: {
      static constexpr std::uint32_t kIndices[] = {0, 9, 4096, 1u << 20, 0xffffffffu};
      r.session = kIndices[pick(5)];
      p.allowed = {CryptoStatus::kBadSession};
      p.counters = {"drop_bad_session"};
      break;
    }
    case Fault::kGeneration:
      if (p.role == kReborn && pick(2)) {
        r.sessionGeneration = staleGeneration_;
      } else {
        r.sessionGeneration ^= 1u << pick(32);
      }
      p.allowed = {CryptoStatus::kBadSession};
      p.counters = {"drop_bad_session"};
      break;
    case Fault::kWrongKind:
      if (ahOp) {
        r.op = pick(2) ? CryptoOp::kSeal : CryptoOp::kOpen;
      } else {
        r.op = pick(2) ? CryptoOp::kAhSign : CryptoOp::kAhVerify;
        r.icvOffset = kAhIcvOffset;
      }
      p.allowed = {CryptoStatus::kBadOp};
      p.counters = {"drop_bad_op"};
      break;
    case Fault::kWrongDirection: {
      // Seal or sign under every session this host opens with; open or
      // verify under its sealers and signers.
      static constexpr int kOpeners[] = {kIn, kUnknown, kLoop};
      static constexpr int kSealers[] = {kOut, kOut2, kReborn};
      switch (pick(4)) {
        case 0:
          p.role = kOpeners[pick(3)];
          p.counters = {"seal_refused_direction"};
          name(r, p.role, CryptoOp::kSeal);
          break;
        case 1:
          p.role = kSealers[pick(3)];
          p.counters = {"open_refused_direction"};
          name(r, p.role, CryptoOp::kOpen);
          break;
        case 2:
          p.role = kAhIn;
          p.counters = {"ah_sign_refused_direction"};
          name(r, p.role, CryptoOp::kAhSign);
          break;
        default:
          p.role = kAhOut;
          p.counters = {"ah_verify_refused_direction"};
          name(r, p.role, CryptoOp::kAhVerify);
          break;
      }
      r.icvOffset = 0;
      if (p.role == kAhIn || p.role == kAhOut) {
        ahLayout(r);
      } else {
        espLayout(r, pick(3) == 0);
      }
      p.allowed = {CryptoStatus::kWrongDirection};
      break;
    }
    case Fault::kShortSegment: {
      // One segment too short for GCM, or whose encrypted part is not a
      // multiple of 4; at either edge of the buffer.
      const bool seal = pick(2);
      p.role = seal ? kOut : kIn;
      name(r, p.role, seal ? CryptoOp::kSeal : CryptoOp::kOpen);
      r.segmentCount = 1;
      r.segmentStride = 0;
      r.icvOffset = 0;
      const bool tooShort = pick(2);
      r.length = tooShort ? 1 + pick(kEspMinLength - 1) : kEspMinLength + 4 * pick(300) + 1 + pick(3);
      r.offset = pick(2) ? bufferSize_ - r.length : pick(bufferSize_ - r.length + 1);
      p.allowed = {CryptoStatus::kBadLength};
      p.counters = {tooShort ? "drop_segment_too_short" : "drop_segment_misaligned"};
      break;
    }
    case Fault::kIcvOffset: {
      p.role = pick(2) ? kAhOut : kAhIn;
      name(r, p.role, p.role == kAhOut ? CryptoOp::kAhSign : CryptoOp::kAhVerify);
      ahLayout(r);
      r.segmentCount = 1;
      r.segmentStride = 0;
      r.length = std::min<std::uint32_t>(r.length, 1500);
      // The ICV field running past the segment by a byte or more, or inside
      // the smallest IP header and AH's fixed part.
      switch (pick(4)) {
        case 0: r.icvOffset = static_cast<std::uint16_t>(r.length - kAhIcvLength + 1); break;
        case 1: r.icvOffset = static_cast<std::uint16_t>(r.length); break;
        case 2: r.icvOffset = 0xffff; break;
        default: r.icvOffset = static_cast<std::uint16_t>(pick(kAhIcvOffset)); break;
      }
      // An AH request with its ICV field misplaced is a forwarder's framing
      // error (services/crypto/sessions.h): a bad descriptor.
      p.allowed = {CryptoStatus::kBadDescriptor};
      p.counters = {r.icvOffset < kAhIcvOffset ? "drop_ah_icv_offset_low" : "drop_ah_icv_outside_segment"};
      break;
    }
    case Fault::kNone:
    case Fault::kCount: break;
  }
  return p;
}

std::vector<Planned> Adversary::burst(std::vector<Planned>& sealedQuiet) {
  std::vector<Planned> out;
  std::vector<bool> taken(bufferCount_, false);
  // Genuine opens first: kOut's sealed packets, opened under kLoop (same key).
  for (auto& s : sealedQuiet) {
    Planned p = s;
    p.role = kLoop;
    p.fault = Fault::kNone;
    p.genuineOpen = true;
    name(p.request, kLoop, CryptoOp::kOpen);
    p.request.status = CryptoStatus::kPending;
    p.request.segmentFailMask = 0;
    p.allowed = {CryptoStatus::kOk};
    p.request.cookie = ++cookie_;
    taken[p.request.bufferIndex] = true;
    out.push_back(p);
  }
  sealedQuiet.clear();
  const std::uint32_t n = 1 + pick(48);
  for (std::uint32_t i = 0; i < n; ++i) {
    // Half on hammered buffers (contents rewritten under the broker), half on
    // a free quiet one (contents checked byte for byte).
    std::uint32_t buffer = pick(kHammered);
    bool quiet = false;
    if (pick(2)) {
      for (int tries = 0; tries < 8; ++tries) {
        const std::uint32_t b = kHammered + pick(bufferCount_ - kHammered);
        if (!taken[b] && !isCanary(b, bufferCount_)) {
          buffer = b;
          quiet = true;
          taken[b] = true;
          break;
        }
      }
    }
    const bool bad = pick(5) >= 2;  // 60 % faulty
    Planned p = bad ? faulty(static_cast<Fault>(1 + pick(static_cast<std::uint32_t>(Fault::kCount) - 1)), quiet, buffer)
                    : valid(quiet, buffer);
    p.request.cookie = ++cookie_;
    p.request.status = CryptoStatus::kPending;
    out.push_back(p);
  }
  return out;
}

}  // namespace ipsec::hostile
