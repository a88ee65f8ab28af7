// The privilege-separation table (proto/fd_layout.h) and ipsecd's use of it
// (services/ipsecd/child_fds.cpp): the numbers every process expects, pinned
// for one and two crypto workers, and each child's descriptor vector placing
// ipsecd's descriptors at exactly those numbers. No fork: the vector builder
// is pure.
#include <fcntl.h>

#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>

#include "child_fds.h"
#include "proto/fd_layout.h"
#include "service/service.h"

namespace ipsec {
namespace {

using fdlayout::CryptoFd;
using fdlayout::ForwarderFd;
using fdlayout::KeydbFd;
using fdlayout::PolicyFd;
using supervisor::ChildEnds;

TEST(FdLayout, KeydbAndPolicyNumbersAreFixed) {
  EXPECT_EQ(fdlayout::kKeydb.number(KeydbFd::kIpsecd, 1), 3);
  EXPECT_EQ(fdlayout::kKeydb.number(KeydbFd::kPolicy, 1), 4);
  EXPECT_EQ(fdlayout::kKeydb.number(KeydbFd::kCrypto, 1), 5);
  EXPECT_EQ(fdlayout::kKeydb.number(KeydbFd::kForwarder, 2), 6);
  EXPECT_EQ(fdlayout::kKeydb.count(2), 4);
  EXPECT_EQ(fdlayout::kPolicy.number(PolicyFd::kIpsecd, 1), 3);
  EXPECT_EQ(fdlayout::kPolicy.number(PolicyFd::kKeydb, 1), 4);
  EXPECT_EQ(fdlayout::kPolicy.number(PolicyFd::kForwarder, 1), 5);
  EXPECT_EQ(fdlayout::kPolicy.number(PolicyFd::kPfkeyListen, 2), 6);
  EXPECT_EQ(fdlayout::kPolicy.count(1), 4);
}

TEST(FdLayout, CryptoNumbersRepeatTheWorkerGroup) {
  const auto& l = fdlayout::kCrypto;
  EXPECT_EQ(l.number(CryptoFd::kIpsecd, 1), 3);
  EXPECT_EQ(l.number(CryptoFd::kKeydb, 1), 4);
  EXPECT_EQ(l.number(CryptoFd::kRingMemfd, 1, 0), 5);
  EXPECT_EQ(l.number(CryptoFd::kRequestBell, 1, 0), 6);
  EXPECT_EQ(l.number(CryptoFd::kCompletionBell, 1, 0), 7);
  EXPECT_EQ(l.count(1), 5);
  EXPECT_EQ(l.number(CryptoFd::kRingMemfd, 2, 1), 8);
  EXPECT_EQ(l.number(CryptoFd::kRequestBell, 2, 1), 9);
  EXPECT_EQ(l.number(CryptoFd::kCompletionBell, 2, 1), 10);
  EXPECT_EQ(l.count(2), 8);
}

TEST(FdLayout, ForwarderSocketsAfterTheWorkersMoveUpWithThem) {
  const auto& l = fdlayout::kForwarder;
  const std::pair<ForwarderFd, int> fixed[] = {
      {ForwarderFd::kIpsecd, 3}, {ForwarderFd::kKeydb, 4}, {ForwarderFd::kPolicy, 5}, {ForwarderFd::kTun, 6},
      {ForwarderFd::kEsp4, 7},   {ForwarderFd::kEsp6, 8},  {ForwarderFd::kAh4, 9},     {ForwarderFd::kAh6, 10},
      {ForwarderFd::kUdp4, 11},  {ForwarderFd::kUdp6, 12},
  };
  for (const auto& [id, n] : fixed) {
    EXPECT_EQ(l.number(id, 1), n) << l[id].name;
    EXPECT_EQ(l.number(id, 2), n) << l[id].name;
  }
  EXPECT_EQ(l.number(ForwarderFd::kRingMemfd, 1, 0), 13);
  EXPECT_EQ(l.number(ForwarderFd::kRequestBell, 1, 0), 14);
  EXPECT_EQ(l.number(ForwarderFd::kCompletionBell, 1, 0), 15);
  EXPECT_EQ(l.number(ForwarderFd::kHeaderIncluded4, 1), 16);
  EXPECT_EQ(l.number(ForwarderFd::kHeaderIncluded6, 1), 17);
  EXPECT_EQ(l.number(ForwarderFd::kEspRing4, 1), 18);
  EXPECT_EQ(l.number(ForwarderFd::kPacket4, 1), 19);
  EXPECT_EQ(l.number(ForwarderFd::kRouteNetlink, 1), 20);
  EXPECT_EQ(l.count(1), 18);
  EXPECT_EQ(l.number(ForwarderFd::kRingMemfd, 2, 1), 16);
  EXPECT_EQ(l.number(ForwarderFd::kRequestBell, 2, 1), 17);
  EXPECT_EQ(l.number(ForwarderFd::kCompletionBell, 2, 1), 18);
  EXPECT_EQ(l.number(ForwarderFd::kHeaderIncluded4, 2), 19);
  EXPECT_EQ(l.number(ForwarderFd::kHeaderIncluded6, 2), 20);
  EXPECT_EQ(l.number(ForwarderFd::kEspRing4, 2), 21);
  EXPECT_EQ(l.number(ForwarderFd::kPacket4, 2), 22);
  EXPECT_EQ(l.number(ForwarderFd::kRouteNetlink, 2), 23);
  EXPECT_EQ(l.count(2), 21);
}

template <class Layout>
void expectNamesUnique(const Layout& l) {
  std::set<std::string_view> names;
  for (const auto& e : l.entries) {
    EXPECT_TRUE(names.insert(e.name).second) << l.process << ": " << e.name << " twice";
    EXPECT_FALSE(e.role.empty()) << l.process << ": " << e.name << " has no role";
  }
}

TEST(FdLayout, NamesAreUniqueWithinEachProcess) {
  expectNamesUnique(fdlayout::kKeydb);
  expectNamesUnique(fdlayout::kPolicy);
  expectNamesUnique(fdlayout::kCrypto);
  expectNamesUnique(fdlayout::kForwarder);
}

// ipsecd's descriptors, each a distinct number, as if open.
ChildEnds distinctEnds(unsigned workers) {
  int next = 100;
  ChildEnds e;
  for (int* f : {&e.ipsecd, &e.keydbOfPolicy, &e.policyOfKeydb, &e.keydbOfCrypto, &e.cryptoOfKeydb,
                 &e.keydbOfForwarder, &e.forwarderOfKeydb, &e.policyOfForwarder, &e.forwarderOfPolicy,
                 &e.pfkeyListen, &e.tun, &e.esp4, &e.esp6, &e.ah4, &e.ah6, &e.udp4, &e.udp6, &e.headerIncluded4,
                 &e.headerIncluded6, &e.espRing4, &e.packet4, &e.routeNetlink}) {
    *f = next++;
  }
  for (unsigned i = 0; i < workers; ++i) e.workers.push_back({next++, next++, next++});
  return e;
}

// fds[n - 3] is what the child finds at descriptor n.
int at(const std::vector<int>& fds, int n) { return fds.at(static_cast<std::size_t>(n - 3)); }

TEST(ChildFds, KeydbAndPolicyGetTheirEndsOfEachPair) {
  const ChildEnds e = distinctEnds(1);
  EXPECT_EQ(supervisor::keydbFds(e), (std::vector<int>{e.ipsecd, e.keydbOfPolicy, e.keydbOfCrypto, e.keydbOfForwarder}));
  EXPECT_EQ(supervisor::policyFds(e),
            (std::vector<int>{e.ipsecd, e.policyOfKeydb, e.policyOfForwarder, e.pfkeyListen}));
}

TEST(ChildFds, CryptoGetsEveryWorkersRingInTheTablesPlaces) {
  for (unsigned workers : {1u, 2u}) {
    const ChildEnds e = distinctEnds(workers);
    const auto fds = supervisor::cryptoFds(e);
    ASSERT_EQ(fds.size(), 2 + 3 * workers);
    EXPECT_EQ(at(fds, 3), e.ipsecd);
    EXPECT_EQ(at(fds, 4), e.cryptoOfKeydb);
    for (unsigned i = 0; i < workers; ++i) {
      const int base = 5 + 3 * static_cast<int>(i);
      EXPECT_EQ(at(fds, base), e.workers[i].region);
      EXPECT_EQ(at(fds, base + 1), e.workers[i].requestBell);
      EXPECT_EQ(at(fds, base + 2), e.workers[i].completionBell);
    }
  }
}

TEST(ChildFds, ForwarderGetsItsSocketsRingsAndHeaderIncludedSocketsInTheTablesPlaces) {
  for (unsigned workers : {1u, 2u}) {
    const ChildEnds e = distinctEnds(workers);
    const auto fds = supervisor::forwarderFds(e);
    ASSERT_EQ(fds.size(), 15 + 3 * workers);
    EXPECT_EQ(fds[0], e.ipsecd);
    EXPECT_EQ((std::vector<int>(fds.begin() + 1, fds.begin() + 10)),
              (std::vector<int>{e.forwarderOfKeydb, e.forwarderOfPolicy, e.tun, e.esp4, e.esp6, e.ah4, e.ah6, e.udp4,
                                e.udp6}));
    for (unsigned i = 0; i < workers; ++i) {
      const int base = 13 + 3 * static_cast<int>(i);
      EXPECT_EQ(at(fds, base), e.workers[i].region);
      EXPECT_EQ(at(fds, base + 1), e.workers[i].requestBell);
      EXPECT_EQ(at(fds, base + 2), e.workers[i].completionBell);
    }
    const int after = 13 + 3 * static_cast<int>(workers);
    EXPECT_EQ(at(fds, after), e.headerIncluded4);
    EXPECT_EQ(at(fds, after + 1), e.headerIncluded6);
    EXPECT_EQ(at(fds, after + 2), e.espRing4);
    EXPECT_EQ(at(fds, after + 3), e.packet4);
    EXPECT_EQ(at(fds, after + 4), e.routeNetlink);
  }
}

TEST(ChildFds, EveryNumberTheTableGivesHoldsThatEntrysDescriptor) {
  const ChildEnds e = distinctEnds(2);
  const auto fds = supervisor::forwarderFds(e);
  const auto& l = fdlayout::kForwarder;
  EXPECT_EQ(at(fds, l.number(ForwarderFd::kTun, 2)), e.tun);
  EXPECT_EQ(at(fds, l.number(ForwarderFd::kCompletionBell, 2, 1)), e.workers[1].completionBell);
  EXPECT_EQ(at(fds, l.number(ForwarderFd::kHeaderIncluded6, 2)), e.headerIncluded6);
}

TEST(ChildFds, TheTunsFurtherQueuesFollowTheTableInQueueOrder) {
  ChildEnds e = distinctEnds(2);
  EXPECT_EQ(supervisor::forwarderFds(e).size(), static_cast<std::size_t>(fdlayout::kForwarder.count(2)));
  e.tunQueues = {900, 901};
  const auto fds = supervisor::forwarderFds(e);
  ASSERT_EQ(fds.size(), static_cast<std::size_t>(fdlayout::kForwarder.count(2)) + 2);
  EXPECT_EQ(at(fds, fdlayout::tunQueueNumber(2, 1)), 900);
  EXPECT_EQ(at(fds, fdlayout::tunQueueNumber(2, 2)), 901);
  EXPECT_EQ(at(fds, fdlayout::kForwarder.number(ForwarderFd::kTun, 2)), e.tun);
}

TEST(ChildFds, ADataPlaneRestartReplacesWhatTheTableSaysToAwait) {
  const ChildEnds e = distinctEnds(1);
  EXPECT_EQ(supervisor::keydbReplacementFds(e), (std::vector<int>{e.keydbOfCrypto, e.keydbOfForwarder}));
  EXPECT_EQ(supervisor::policyReplacementFds(e), (std::vector<int>{e.policyOfForwarder}));
}

TEST(ChildFds, AnEntryWithoutADescriptorIsRefusedByName) {
  ChildEnds e = distinctEnds(1);
  e.headerIncluded6 = -1;
  try {
    supervisor::forwarderFds(e);
    FAIL() << "a forwarder vector without its header-included IPv6 socket was built";
  } catch (const std::logic_error& err) {
    EXPECT_NE(std::string(err.what()).find("header-included IPv6 socket"), std::string::npos) << err.what();
  }
  e = distinctEnds(0);  // a data-plane restart's ends: no policy-keydb pair
  e.keydbOfPolicy = -1;
  EXPECT_THROW(supervisor::keydbFds(e), std::logic_error);
}

TEST(TakeFd, ADescriptorNotOpenIsNamedAsTheTableNamesIt) {
  service::Args args;
  args.workers = 16;
  const int n = fdlayout::kForwarder.number(ForwarderFd::kRequestBell, 16, 15);
  ASSERT_LT(fcntl(n, F_GETFD), 0) << "descriptor " << n << " is open in the test process";
  try {
    service::takeFd(ForwarderFd::kRequestBell, args, 15);
    FAIL() << "descriptor " << n << " was taken though not open";
  } catch (const std::runtime_error& err) {
    const std::string what = err.what();
    EXPECT_NE(what.find("descriptor " + std::to_string(n) + " "), std::string::npos) << what;
    EXPECT_NE(what.find("crypto worker 15 request bell"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace ipsec
