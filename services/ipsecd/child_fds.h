// ipsecd: each child's descriptor vector, built from its row of the
// privilege-separation table (proto/fd_layout.h) rather than by the order of
// push_backs. Pure: it takes the descriptors ipsecd holds, as numbers it
// only borrows, and says which goes where; spawnChild then places vector[i]
// at descriptor 3 + i. Tested without forking (tests/unit/ipsecd).
#pragma once

#include <vector>

namespace ipsec::supervisor {

// One crypto worker's region and doorbells, as ipsecd holds them.
struct WorkerEnds {
  int region = -1, requestBell = -1, completionBell = -1;
};

// Every descriptor ipsecd hands to a child, by what it is. A pair's ends are
// named for the process that gets them: keydbOfPolicy is keydb's end of the
// keydb-policy pair. -1: not made for this start (policy's channel to keydb
// at a data-plane restart); a child whose table names it cannot be started.
struct ChildEnds {
  int ipsecd = -1;  // the starting child's end of its channel to ipsecd
  int keydbOfPolicy = -1, policyOfKeydb = -1;
  int keydbOfCrypto = -1, cryptoOfKeydb = -1;
  int keydbOfForwarder = -1, forwarderOfKeydb = -1;
  int policyOfForwarder = -1, forwarderOfPolicy = -1;
  int pfkeyListen = -1;
  int tun = -1, esp4 = -1, esp6 = -1, ah4 = -1, ah6 = -1, udp4 = -1, udp6 = -1;
  int headerIncluded4 = -1, headerIncluded6 = -1;
  int espRing4 = -1;
  int packet4 = -1, routeNetlink = -1;  // esp_send = packet (idle eventfds when off)
  std::vector<WorkerEnds> workers;  // one per crypto worker
  // A multi-queue TUN's queues 1..N-1 (queue 0 is `tun`), handed to the
  // forwarder after its table (fdlayout::tunQueueNumber); empty for one queue.
  std::vector<int> tunQueues;
};

// Index i of each vector becomes descriptor 3 + i in the child. Throws
// std::logic_error when an entry of the table has no descriptor in ends.
std::vector<int> keydbFds(const ChildEnds& ends);
std::vector<int> policyFds(const ChildEnds& ends);
std::vector<int> cryptoFds(const ChildEnds& ends);
std::vector<int> forwarderFds(const ChildEnds& ends);

// What a DataPlaneRestarted message carries to keydb and to policy: the
// replacements of their OnClose::kAwaitReplacement entries, in table order.
std::vector<int> keydbReplacementFds(const ChildEnds& ends);
std::vector<int> policyReplacementFds(const ChildEnds& ends);

}  // namespace ipsec::supervisor
