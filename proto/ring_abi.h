// The shared-memory data-path ABI between the forwarder and one crypto worker.
//
// ipsecd creates one sealed memfd region per forwarder–crypto-worker pair and
// hands the descriptor to both. The forwarder parses the network and holds no
// key; the worker holds session keys. Neither trusts what the other writes into
// the region: every reader takes a private copy of the header at attach time,
// masks ring indices, and bounds-checks descriptors (lib/ring). Therefore this
// file holds only plain data: standard-layout structs with fixed-width fields,
// explicit offsets (never pointers), and a static_assert on every size and
// offset, so that both processes agree byte for byte even if built apart.
//
// Region layout (all offsets from the start of the region, little-endian host
// order, because both sides always run on the same machine):
//
//   RegionHeader                     at 0, kRegionHeaderSize bytes
//   request ring    RingControl + requestCapacity    x CryptoRequest
//                   (forwarder produces, worker consumes)
//   completion ring RingControl + completionCapacity x CryptoCompletion
//                   (worker produces, forwarder consumes)
//   buffer pool     bufferCount x bufferSize bytes, page aligned
//
// Memfd pages are allocated on first touch, so a large pool costs only the
// buffers actually used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace ipsec::proto {

// "IPSRING1" read as a little-endian u64: recognisable in a hex dump.
inline constexpr std::uint64_t kRegionMagic = 0x31474e4952535049ULL;
// Bump on any change of layout or of a field's meaning.
// 2: CryptoOp kAhSign/kAhVerify and CryptoRequest::icvOffset.
// 3: CryptoStatus kBadLength and kWrongDirection.
inline constexpr std::uint32_t kRegionVersion = 3;

inline constexpr std::size_t kCacheLine = 64;
// Producer and consumer indices sit this far apart: adjacent-line prefetch on
// x86 pulls pairs of 64-byte lines, so 128 keeps the two sides from sharing.
inline constexpr std::size_t kIndexSpacing = 128;
inline constexpr std::size_t kPageSize = 4096;

// Defaults: a 64 KiB super-packet (TSO/USO from the TUN, DESIGN.md §3a) framed
// as one strided seal request (services/forwarder/super_frame.h): each segment
// carries its own IP and TCP headers and ESP's header, IV, padding and ICV, so
// the buffer holds the 64 KiB plus that much per segment. At the default
// tun_mtu of 1400 (MSS 1348 over IPv4, 1328 over IPv6, TCP timestamps) the
// largest IP packet has up to 50 segments; with the costliest ESP framing
// (8 + a 16-byte IV + up to 17 of padding and trailer + a 32-byte ICV) all of
// them fit one buffer, so a TSO read is one request, not two (at 64.5 KiB its
// 48 segments of 1436 bytes took two). A broker checks each request against
// the region's own bufferSize, whatever the default.
inline constexpr std::uint32_t kDefaultBufferSize = 65536 + 8192;
inline constexpr std::uint32_t kSuperPacketSegmentsAtDefaultMtu = 50;
static_assert(kDefaultBufferSize >= 40 + 65535 + kSuperPacketSegmentsAtDefaultMtu * (40 + 32 + 8 + 16 + 17 + 32),
              "a 64 KiB super-packet at the default MTU fits one pool buffer as ESP");
inline constexpr std::uint32_t kDefaultBufferCount = 512;
inline constexpr std::uint32_t kDefaultRingCapacity = 1024;

// Hard bounds a validator enforces whatever the header claims.
inline constexpr std::uint32_t kMinRingCapacity = 2;
inline constexpr std::uint32_t kMaxRingCapacity = 1u << 16;
inline constexpr std::uint32_t kMinBufferSize = 2048;
inline constexpr std::uint32_t kMaxBufferSize = 1u << 20;
inline constexpr std::uint32_t kMaxBufferCount = 1u << 16;
// A segment-failure mask in the completion has one bit per segment.
inline constexpr std::uint16_t kMaxSegments = 64;

// At offset 0 of the region. Written once by ipsecd before either peer maps
// it; afterwards only read, and each peer keeps its own validated copy.
struct RegionHeader {
  std::uint64_t magic;                  // kRegionMagic
  std::uint32_t version;                // kRegionVersion
  std::uint32_t headerSize;             // sizeof(RegionHeader)
  std::uint32_t requestCapacity;        // request ring slots, power of two
  std::uint32_t completionCapacity;     // completion ring slots, power of two
  std::uint32_t requestSlotSize;        // sizeof(CryptoRequest)
  std::uint32_t completionSlotSize;     // sizeof(CryptoCompletion)
  std::uint32_t bufferCount;            // buffers in the pool
  std::uint32_t bufferSize;             // bytes per buffer, multiple of kCacheLine
  std::uint64_t requestRingOffset;      // RingControl of the request ring
  std::uint64_t completionRingOffset;   // RingControl of the completion ring
  std::uint64_t bufferPoolOffset;       // first buffer, multiple of kPageSize
  std::uint64_t regionSize;             // total bytes; equals the memfd size
  std::uint8_t reserved[56];            // zero; room for later fields
};
inline constexpr std::size_t kRegionHeaderSize = 128;
static_assert(std::is_standard_layout_v<RegionHeader> && std::is_trivially_copyable_v<RegionHeader>);
static_assert(sizeof(RegionHeader) == kRegionHeaderSize);
static_assert(offsetof(RegionHeader, magic) == 0);
static_assert(offsetof(RegionHeader, version) == 8);
static_assert(offsetof(RegionHeader, headerSize) == 12);
static_assert(offsetof(RegionHeader, requestCapacity) == 16);
static_assert(offsetof(RegionHeader, completionCapacity) == 20);
static_assert(offsetof(RegionHeader, requestSlotSize) == 24);
static_assert(offsetof(RegionHeader, completionSlotSize) == 28);
static_assert(offsetof(RegionHeader, bufferCount) == 32);
static_assert(offsetof(RegionHeader, bufferSize) == 36);
static_assert(offsetof(RegionHeader, requestRingOffset) == 40);
static_assert(offsetof(RegionHeader, completionRingOffset) == 48);
static_assert(offsetof(RegionHeader, bufferPoolOffset) == 56);
static_assert(offsetof(RegionHeader, regionSize) == 64);
static_assert(offsetof(RegionHeader, reserved) == 72);

// The head of each ring. Indices are free-running u32 counters (slot = index
// & (capacity - 1)); each is written by one side only and accessed with
// acquire/release atomics. A side never reads its own index back from shared
// memory: it keeps a private copy, so a peer that scribbles here can only
// confuse itself.
//
// Doorbells (one eventfd per side, passed separately): a side about to block
// sets its "sleeping" flag, re-checks the ring, then waits on its eventfd; the
// other side, after publishing a burst, clears the flag with an exchange and
// writes the eventfd only if it was set, so a burst costs at most one wake-up.
struct RingControl {
  // Written by the producer.
  std::uint32_t producerIndex;      // next slot the producer will fill
  std::uint32_t producerSleeping;   // 1: producer waits for free slots
  std::uint8_t producerPad[kIndexSpacing - 8];
  // Written by the consumer.
  std::uint32_t consumerIndex;      // next slot the consumer will read
  std::uint32_t consumerSleeping;   // 1: consumer waits for new slots
  std::uint8_t consumerPad[kIndexSpacing - 8];
};
inline constexpr std::size_t kRingControlSize = 2 * kIndexSpacing;
static_assert(std::is_standard_layout_v<RingControl> && std::is_trivially_copyable_v<RingControl>);
static_assert(sizeof(RingControl) == kRingControlSize);
static_assert(offsetof(RingControl, producerIndex) == 0);
static_assert(offsetof(RingControl, producerSleeping) == 4);
static_assert(offsetof(RingControl, consumerIndex) == kIndexSpacing);
static_assert(offsetof(RingControl, consumerSleeping) == kIndexSpacing + 4);

enum class CryptoOp : std::uint8_t {
  kSeal = 1,    // ESP outbound: encrypt and authenticate each ESP packet in place
  kOpen = 2,    // ESP inbound: verify the ICV, then decrypt in place
  // AH (RFC 4302): each segment is a whole IP packet that the forwarder has
  // canonicalised for the ICV (lib/ah: mutable fields zeroed or predicted).
  kAhSign = 3,    // outbound: MAC the segment with the ICV field taken as zero,
                  // write the truncated ICV at segment start + icvOffset
  kAhVerify = 4,  // inbound: copy the segment privately, take the received ICV
                  // from the copy, zero it there, MAC, compare in constant time;
                  // the buffer is never written
};

enum class CryptoStatus : std::uint8_t {
  kPending = 0,        // requests carry this; a completion never does
  kOk = 1,             // every segment succeeded
  kBadIcv = 2,         // open / AH verify: at least one segment failed authentication
  kBadSession = 3,     // unknown session, stale generation, or not this ring's
  kBadDescriptor = 4,  // buffer index, offsets or segment layout out of bounds
  kBadOp = 5,          // unknown op, or an op the session's kind does not run
                       // (seal/open on an AH session, AH ops on an ESP one)
  kSeqExhausted = 6,   // seal: the SA's reserved IV/sequence space is used up
  kInternalError = 7,  // the driver failed; nothing was written to the buffer
  kBadLength = 8,      // a segment too short for its session's header, IV, pad
                       // and ICV, or an encrypted part that is not a multiple
                       // of the cipher's alignment: a bad packet, not a fault
  kWrongDirection = 9, // seal or AH sign under a session keydb did not name
                       // outbound, or open or AH verify under an outbound
                       // one (an SA is sealed only by the host that sends on
                       // it; services/crypto/sessions.h); nothing was written
};

// One descriptor, 64 bytes: one cache line. The request ring carries it with
// status = kPending; the worker returns the same struct on the completion ring
// with status and segmentFailMask filled in and every other field unchanged.
//
// The buffer holds segmentCount ESP packets laid out back to back (a
// super-packet split by the forwarder, or coalesced on receive): segment i
// starts at offset + i * segmentStride; all but the last are segmentStride
// bytes long, the last one runs to offset + length. With segmentCount == 1,
// segmentStride is ignored. Each segment is processed independently. A
// segment spans the whole ESP packet from the ESP header to the end of the
// ICV (whose room the forwarder leaves for seal); for the AH ops, the whole
// IP packet, and icvOffset says where the ICV field starts in each segment
// (the same offset in all of them: a super-packet's segments share headers).
// With ESN the MAC input is followed by the high 32 bits (RFC 4302 §2.5.1,
// RFC 4303 §2.2.1), seqHigh for the first segment as above.
struct CryptoRequest {
  std::uint64_t cookie;             // opaque to the worker, echoed back
  std::uint32_t session;            // index into this ring's session table
  std::uint32_t sessionGeneration;  // must match the slot's current generation
  CryptoOp op;                      // seal or open
  CryptoStatus status;              // kPending in requests; result in completions
  std::uint16_t segmentCount;       // 1..kMaxSegments
  std::uint32_t bufferIndex;        // which pool buffer, < bufferCount
  std::uint32_t offset;             // first segment's start within the buffer
  std::uint32_t length;             // bytes from offset to the end of the last segment
  std::uint32_t segmentStride;      // bytes from one segment's start to the next
  std::uint32_t seqHigh;            // ESN: high 32 bits for the first segment; later
                                    // segments whose low 32 bits wrapped use seqHigh + 1
  std::uint64_t segmentFailMask;    // completions: bit i set when segment i failed
  std::uint16_t icvOffset;          // kAhSign/kAhVerify: ICV field from each segment's
                                    // start (AH header offset + 12); zero otherwise
  std::uint8_t reserved[14];        // zero
};
using CryptoCompletion = CryptoRequest;
inline constexpr std::size_t kCryptoRequestSize = 64;
static_assert(std::is_standard_layout_v<CryptoRequest> && std::is_trivially_copyable_v<CryptoRequest>);
static_assert(sizeof(CryptoRequest) == kCryptoRequestSize);
static_assert(offsetof(CryptoRequest, cookie) == 0);
static_assert(offsetof(CryptoRequest, session) == 8);
static_assert(offsetof(CryptoRequest, sessionGeneration) == 12);
static_assert(offsetof(CryptoRequest, op) == 16);
static_assert(offsetof(CryptoRequest, status) == 17);
static_assert(offsetof(CryptoRequest, segmentCount) == 18);
static_assert(offsetof(CryptoRequest, bufferIndex) == 20);
static_assert(offsetof(CryptoRequest, offset) == 24);
static_assert(offsetof(CryptoRequest, length) == 28);
static_assert(offsetof(CryptoRequest, segmentStride) == 32);
static_assert(offsetof(CryptoRequest, seqHigh) == 36);
static_assert(offsetof(CryptoRequest, segmentFailMask) == 40);
static_assert(offsetof(CryptoRequest, icvOffset) == 48);
static_assert(offsetof(CryptoRequest, reserved) == 50);
static_assert(kMaxSegments <= 64, "segmentFailMask has one bit per segment");

}  // namespace ipsec::proto
