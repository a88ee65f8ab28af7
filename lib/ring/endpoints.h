// The four ring ends of a region, typed: the forwarder holds a RequestProducer
// and a CompletionConsumer, a crypto worker a RequestConsumer and a
// CompletionProducer. Capacities come from the region's validated header copy.
#pragma once

#include "proto/ring_abi.h"
#include "ring/region.h"
#include "ring/spsc.h"

namespace ipsec::ring {

using RequestProducer = SpscProducer<proto::CryptoRequest>;
using RequestConsumer = SpscConsumer<proto::CryptoRequest>;
using CompletionProducer = SpscProducer<proto::CryptoCompletion>;
using CompletionConsumer = SpscConsumer<proto::CryptoCompletion>;

inline RequestProducer requestProducer(const Region& region) noexcept {
  return {region.requestControl(), region.requestSlots(), region.header().requestCapacity};
}
inline RequestConsumer requestConsumer(const Region& region) noexcept {
  return {region.requestControl(), region.requestSlots(), region.header().requestCapacity};
}
inline CompletionProducer completionProducer(const Region& region) noexcept {
  return {region.completionControl(), region.completionSlots(), region.header().completionCapacity};
}
inline CompletionConsumer completionConsumer(const Region& region) noexcept {
  return {region.completionControl(), region.completionSlots(), region.header().completionCapacity};
}

}  // namespace ipsec::ring
