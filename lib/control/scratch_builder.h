// A capnp message builder whose first segment lives inside it.
//
// Used by every process for the small messages it sends one per SA or per
// request (a session to create, an install, a reply): MallocMessageBuilder
// callocs its first segment (8 KiB by default) on the heap for each, which
// under an ADD burst of tens of thousands was the largest single cost in
// keydb. A message that outgrows the scratch continues in heap segments as
// usual. Callers that put keys in one still wipe it (wire.h wipeMessage
// zeroes every segment, the scratch included).
#pragma once

#include <capnp/message.h>

#include <cstddef>

namespace ipsec::control {

namespace detail {
template <std::size_t Words>
struct ScratchSegment {
  // capnp wants the first segment zeroed.
  capnp::word words[Words] = {};
};
}  // namespace detail

// Meant for the stack: Words * 8 bytes.
template <std::size_t Words = 128>
class ScratchMessageBuilder : private detail::ScratchSegment<Words>, public capnp::MallocMessageBuilder {
 public:
  ScratchMessageBuilder()
      : detail::ScratchSegment<Words>(), capnp::MallocMessageBuilder(kj::arrayPtr(this->words, Words)) {}
};

}  // namespace ipsec::control
