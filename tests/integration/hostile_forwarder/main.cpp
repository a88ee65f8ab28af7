// A hostile ipsec-forwarder (issue 10, integration.hostile_forwarder): the
// test puts this program in a copy of the bin directory under the name
// ipsec-forwarder, so a real ipsecd starts it with the forwarder's
// descriptors (services/forwarder/main.cpp: 3 ipsecd, 4 keydb, 5 policy,
// 6 TUN, 7..12 sockets, 13/14/15 worker 0's ring memfd, request bell,
// completion bell, then the header-included sockets). It plays an attacker
// with code execution inside the forwarder: it says ready and answers stats
// like the real one, learns each SA's session from keydb's installs, and then
// writes requests straight into the real broker's ring:
//   seal_under_inbound   seal under the peer's SA (B→A): kWrongDirection, no byte changed
//   seal_under_outbound  a good seal under this host's SA (A→B): kOk (the path works)
//   last_buffer_overrun  offset bufferSize-1, length 1 in the last buffer: kBadLength
//   open_under_outbound  open under this host's sending SA: kWrongDirection
// Results go to $IPSEC_HOSTILE_REPORT as JSON once $IPSEC_HOSTILE_GO exists
// (the test creates it when the broker has the A→B session outbound).
// $IPSEC_HOSTILE_LOCAL is this host's outer address: an SA from it is outbound.
// (ipsecd passes its environment on to its children: services/ipsecd/spawn.cpp.)
//
// Unlike ipsec-forwarder it applies no sandbox (service::Service::run applies
// the forwarder's seccomp profile inside the child itself): the attacker
// already runs inside the forwarder, and the sandbox only narrows what else it
// could reach, not what it can write into its own ring.
#include <arpa/inet.h>
#include <poll.h>
#include <unistd.h>

#include <capnp/message.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "control/wire.h"
#include "proto/dataplane.capnp.h"
#include "proto/supervisor.capnp.h"
#include "ring/region.h"
#include "ring_client.h"

namespace {

using namespace ipsec;
using proto::CryptoOp;
using proto::CryptoStatus;

constexpr int kSupervisorFd = 3, kKeydbFd = 4, kPolicyFd = 5;
constexpr int kRegionFd = 13, kRequestBellFd = 14, kCompletionBellFd = 15;

struct SessionRef {
  std::uint32_t spi = 0, index = 0, generation = 0;
};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

const char* statusName(CryptoStatus s) {
  switch (s) {
    case CryptoStatus::kPending: return "pending";
    case CryptoStatus::kOk: return "ok";
    case CryptoStatus::kBadIcv: return "bad_icv";
    case CryptoStatus::kBadSession: return "bad_session";
    case CryptoStatus::kBadDescriptor: return "bad_descriptor";
    case CryptoStatus::kBadOp: return "bad_op";
    case CryptoStatus::kSeqExhausted: return "seq_exhausted";
    case CryptoStatus::kInternalError: return "internal_error";
    case CryptoStatus::kBadLength: return "bad_length";
    case CryptoStatus::kWrongDirection: return "wrong_direction";
  }
  return "unknown";
}

class Hostile {
 public:
  Hostile() : local_(parseAddress(env("IPSEC_HOSTILE_LOCAL"))) {}

  // Serves ipsecd, keydb and policy until ipsecd says stop; attacks once.
  int run();

 private:
  static std::vector<std::uint8_t> parseAddress(const std::string& text);
  bool drain(int fd, bool (Hostile::*handle)(capnp::MessageReader&));
  bool onSupervisor(capnp::MessageReader& m);
  bool onKeydb(capnp::MessageReader& m);
  bool onPolicy(capnp::MessageReader&) { return true; }  // the SPD is of no use to the attack
  nlohmann::json attack();

  std::vector<std::uint8_t> local_;
  std::optional<SessionRef> outbound_, inbound_;
  bool stop_ = false, attacked_ = false;
};

std::vector<std::uint8_t> Hostile::parseAddress(const std::string& text) {
  std::uint8_t buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) return {buf, buf + 4};
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) return {buf, buf + 16};
  return {};
}

// Every message waiting on `fd`; false when the peer closed or sent garbage.
bool Hostile::drain(int fd, bool (Hostile::*handle)(capnp::MessageReader&)) {
  control::Inbox inbox(fd);
  for (;;) {
    auto m = inbox.receive(0);
    if (!m.reader) return m.error == "timed out";
    if (!(this->*handle)(*m.reader)) return false;
  }
}

bool Hostile::onSupervisor(capnp::MessageReader& m) {
  auto msg = m.getRoot<proto::ToService>();
  switch (msg.which()) {
    case proto::ToService::STOP: stop_ = true; return true;
    case proto::ToService::SYSCTL: return true;
    case proto::ToService::STATS_REQUEST: {
      capnp::MallocMessageBuilder b;
      auto s = b.initRoot<proto::FromService>().initStats();
      s.setRequestId(msg.getStatsRequest());
      auto c = s.initCounters(1);
      c[0].setName("hostile_attacks_run");
      c[0].setValue(attacked_ ? 1 : 0);
      return control::sendMessage(kSupervisorFd, b) == 0;
    }
    default: return false;
  }
}

bool Hostile::onKeydb(capnp::MessageReader& m) {
  auto msg = m.getRoot<proto::KeydbToForwarder>();
  if (msg.which() != proto::KeydbToForwarder::INSTALL) return true;
  auto install = msg.getInstall();
  auto p = install.getParams();
  if (p.getSatype() != 3) return true;  // SADB_SATYPE_ESP only
  const SessionRef ref{p.getSpi(), install.getSa().getIndex(), install.getSa().getGeneration()};
  auto src = p.getSrc();
  const bool fromUs = !local_.empty() && src.size() == local_.size() &&
                      std::memcmp(src.begin(), local_.data(), local_.size()) == 0;
  (fromUs ? outbound_ : inbound_) = ref;
  std::fprintf(stderr, "hostile: SA %#x is session %u/%u, %s\n", ref.spi, ref.index, ref.generation,
               fromUs ? "outbound" : "inbound");
  return true;
}

// The four requests of the file comment, each on its own buffer filled with
// a known pattern and compared whole afterwards.
nlohmann::json Hostile::attack() {
  nlohmann::json report;
  auto attached = ring::Region::attach(control::UniqueFd(kRegionFd), nullptr, ring::GuardPages::kSurround);
  if (!attached.region) return {{"error", std::string("attach: ") + ring::toString(attached.error)}};
  ring::Region& region = *attached.region;
  ring::Doorbell requestBell{control::UniqueFd(kRequestBellFd)}, completionBell{control::UniqueFd(kCompletionBellFd)};
  hostile::RingClient client{ring::requestProducer(region), ring::completionConsumer(region), requestBell,
                             completionBell};
  const std::uint32_t size = region.header().bufferSize, last = region.header().bufferCount - 1;
  const std::uint32_t length = hostile::kEspMinLength + 64;  // GCM: a 4-byte aligned payload
  struct Case {
    const char* name;
    proto::CryptoRequest request;
  };
  const Case cases[] = {
      {"seal_under_inbound", hostile::espRequest(1, inbound_->index, inbound_->generation, CryptoOp::kSeal, 1, 0, length)},
      {"seal_under_outbound", hostile::espRequest(2, outbound_->index, outbound_->generation, CryptoOp::kSeal, 2, 0, length)},
      {"last_buffer_overrun", hostile::espRequest(3, outbound_->index, outbound_->generation, CryptoOp::kSeal, last, size - 1, 1)},
      {"open_under_outbound", hostile::espRequest(4, outbound_->index, outbound_->generation, CryptoOp::kOpen, 3, 0, length)},
  };
  std::map<std::uint32_t, std::vector<std::uint8_t>> before;
  for (const auto& c : cases) {
    auto* b = reinterpret_cast<std::uint8_t*>(region.buffer(c.request.bufferIndex));
    for (std::uint32_t i = 0; i < size; ++i) b[i] = static_cast<std::uint8_t>(i * 7 + c.request.cookie);
    before[c.request.bufferIndex].assign(b, b + size);
  }
  std::vector<proto::CryptoRequest> requests;
  for (const auto& c : cases) requests.push_back(c.request);
  std::vector<proto::CryptoCompletion> done;
  if (!client.submit(requests, done, std::chrono::seconds(10))) return {{"error", "the broker did not complete"}};
  for (std::size_t i = 0; i < std::size(cases); ++i) {
    const auto& r = cases[i].request;
    const auto* b = reinterpret_cast<const std::uint8_t*>(region.buffer(r.bufferIndex));
    const auto& old = before[r.bufferIndex];
    // Bytes outside the named range must never change; inside, only a success may.
    bool outsideKept = true, insideKept = true;
    for (std::uint32_t k = 0; k < size; ++k) {
      const bool inside = k >= r.offset && k - r.offset < r.length;
      if (b[k] != old[k]) (inside ? insideKept : outsideKept) = false;
    }
    report["cases"][cases[i].name] = {{"status", statusName(done[i].status)},
                                      {"cookie", done[i].cookie},
                                      {"buffer", r.bufferIndex},
                                      {"outside_unchanged", outsideKept},
                                      {"inside_unchanged", insideKept}};
  }
  report["buffer_size"] = size;
  report["buffer_count"] = region.header().bufferCount;
  report["sessions"] = {{"outbound", {{"spi", outbound_->spi}, {"index", outbound_->index}}},
                        {"inbound", {{"spi", inbound_->spi}, {"index", inbound_->index}}}};
  return report;
}

int Hostile::run() {
  const std::string reportPath = env("IPSEC_HOSTILE_REPORT"), goPath = env("IPSEC_HOSTILE_GO");
  {
    capnp::MallocMessageBuilder ready;
    ready.initRoot<proto::FromService>().setReady();
    if (control::sendMessage(kSupervisorFd, ready) != 0) return 1;
  }
  std::fprintf(stderr, "hostile: ready, as ipsec-forwarder\n");
  while (!stop_) {
    pollfd fds[] = {{kSupervisorFd, POLLIN, 0}, {kKeydbFd, POLLIN, 0}, {kPolicyFd, POLLIN, 0}};
    if (poll(fds, 3, 50) < 0 && errno != EINTR) return 1;
    if (fds[0].revents && !drain(kSupervisorFd, &Hostile::onSupervisor)) return 1;
    if (fds[1].revents && !drain(kKeydbFd, &Hostile::onKeydb)) return 1;
    if (fds[2].revents && !drain(kPolicyFd, &Hostile::onPolicy)) return 1;
    if (attacked_ || !outbound_ || !inbound_ || goPath.empty() || access(goPath.c_str(), F_OK) != 0) continue;
    attacked_ = true;
    const nlohmann::json report = attack();
    std::fprintf(stderr, "hostile: %s\n", report.dump().c_str());
    const std::string tmp = reportPath + ".tmp";
    std::ofstream(tmp) << report.dump(2) << "\n";
    if (std::rename(tmp.c_str(), reportPath.c_str()) != 0) return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--print-profile") == 0) {  // ipsecctl audit asks every child
      std::printf("hostile test forwarder: no sandbox\n");
      return 0;
    }
  }
  return Hostile().run();
}
