// Fuzz target: what a compromised forwarder can make the crypto broker do
// through its ring (issue 10). The input is a sequence of records, each
//   64 bytes   a CryptoRequest exactly as it would sit in a ring slot
//   2 bytes    n (little-endian), then n bytes copied into the named buffer
//              at the request's offset (clamped to the buffer), so that real
//              packets (sealed ones to open, AH packets to verify) can be built
// and every record goes through the worker's request handling
// (handleRequest: lib/ring's generic check, then SessionTable::process with
// its session, direction and layout checks) on a real memfd region mapped
// with guard pages, as ipsec-crypto maps it: an access outside the pool faults
// and AddressSanitizer or the guard page reports it. Sessions, both
// directions: 0/1 AES-GCM-16 outbound/inbound (one key), 2/3 AES-CBC with
// HMAC-SHA-256 outbound/inbound, 4/5 AH HMAC-SHA-256 outbound/inbound,
// all generation 1. The session index is taken modulo 8 (6 and 7 name no
// session) so that the fuzzer spends its time past the lookup.
#include <linux/pfkeyv2.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <shared_mutex>
#include <vector>

#include "ring/region.h"
#include "sessions.h"
#include "worker.h"

namespace {

using namespace ipsec;

constexpr std::uint32_t kBufferSize = proto::kMinBufferSize;
constexpr std::uint32_t kBuffers = 4;

struct Broker {
  cryptodrv::DriverRegistry drivers = cryptodrv::DriverRegistry::withDefaultDrivers();
  crypto::SessionTable table{drivers, 1};
  ring::Region owner = ring::Region::create({2, 2, kBuffers, kBufferSize});
  std::unique_ptr<ring::Region> region;
  crypto::WorkerCounters counters;

  Broker() {
    auto a = ring::Region::attach(control::UniqueFd(::dup(owner.fd())), nullptr, ring::GuardPages::kSurround);
    if (!a.region) std::abort();
    region = std::make_unique<ring::Region>(std::move(*a.region));
    const std::vector<std::uint8_t> gcmKey(20, 0x11), aesKey(16, 0x22), hmacKey(32, 0x33);
    cryptodrv::TransformSpec gcm, cbc, ah;
    gcm.encAlg = SADB_X_EALG_AES_GCM_ICV16;
    gcm.encKey = gcmKey;
    cbc.encAlg = SADB_X_EALG_AESCBC;
    cbc.encKey = aesKey;
    cbc.authAlg = SADB_X_AALG_SHA2_256HMAC;
    cbc.authKey = hmacKey;
    ah.authAlg = SADB_X_AALG_SHA2_256HMAC;
    ah.authKey = hmacKey;
    std::uint8_t layout[3];
    using D = crypto::SessionDirection;
    bool ok = table.create(0, 1, gcm, D::kOutbound, 0, std::uint64_t{1} << 40, layout).empty() &&
              table.create(1, 1, gcm, D::kInbound, 0, 0, layout).empty() &&
              table.create(2, 1, cbc, D::kOutbound, 0, 0, layout).empty() &&
              table.create(3, 1, cbc, D::kInbound, 0, 0, layout).empty() &&
              table.createAh(4, 1, ah, D::kOutbound, layout).empty() &&
              table.createAh(5, 1, ah, D::kInbound, layout).empty();
    if (!ok) std::abort();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Broker broker;
  std::size_t at = 0;
  while (size - at >= sizeof(proto::CryptoRequest)) {
    proto::CryptoRequest r;
    std::memcpy(&r, data + at, sizeof r);
    at += sizeof r;
    r.session %= 8;
    std::size_t n = 0;
    if (size - at >= 2) {
      n = std::size_t{data[at]} | std::size_t{data[at + 1]} << 8;
      at += 2;
      n = std::min(n, size - at);
    }
    // The forwarder writes the buffer as it likes; in bounds here, since this
    // harness is not what is under test.
    if (r.bufferIndex < kBuffers && n != 0) {
      const std::size_t offset = std::min<std::size_t>(r.offset, kBufferSize);
      std::memcpy(broker.region->buffer(r.bufferIndex) + offset, data + at, std::min(n, kBufferSize - offset));
    }
    at += n;
    // A refusal writes nothing: the named buffer (when there is one) is
    // compared whole before and after.
    static std::vector<std::uint8_t> before(kBufferSize);
    const bool named = r.bufferIndex < kBuffers;
    if (named) std::memcpy(before.data(), broker.region->buffer(r.bufferIndex), kBufferSize);
    std::shared_lock lock(broker.table.mutex());
    crypto::handleRequest(r, *broker.region, broker.table, 0, broker.counters);
    if (r.status == proto::CryptoStatus::kPending) std::abort();  // every request gets a verdict
    using S = proto::CryptoStatus;
    const bool refused = r.status == S::kBadOp || r.status == S::kBadSession || r.status == S::kBadDescriptor ||
                         r.status == S::kWrongDirection ||
                         (r.status == S::kBadLength && r.segmentFailMask == ring::allSegments(r.segmentCount));
    if (named && refused && std::memcmp(before.data(), broker.region->buffer(r.bufferIndex), kBufferSize) != 0) {
      std::abort();
    }
  }
  return 0;
}
