@0x911c54f741caa163;
# Test-only messages for the control-channel tests (tests/unit/control).
# Not a protocol: the real schemas live in proto/.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("ipsec::control::test");

struct Node {
  value @0 :UInt32;
  child @1 :Node;    # nests to exercise the nesting limit
}

struct TestMessage {
  union {
    ping @0 :UInt64;   # a counter the peer echoes
    blob @1 :Data;     # bulk payload for queueing and size tests
    fds @2 :Text;      # an eventfd then a memfd ride along; the text is the memfd's content
    nested @3 :Node;
  }
}
