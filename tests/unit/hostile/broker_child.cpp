// See broker_child.h.
#include "broker_child.h"

#include <linux/pfkeyv2.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/message.h>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "control/wire.h"
#include "proto/supervisor.capnp.h"
#include "child_fds.h"
#include "sandbox/apply.h"
#include "spawn.h"

namespace ipsec::hostile {
namespace {

// The ids the child drops to: nobody, as no file of ours is reachable from it.
constexpr const char* kChildId = "65534";

// AES-GCM-16 and HMAC-SHA-256 as PF_KEY names them (<linux/pfkeyv2.h>).
constexpr std::uint8_t kGcm16 = SADB_X_EALG_AES_GCM_ICV16;
constexpr std::uint8_t kHmacSha256 = SADB_X_AALG_SHA2_256HMAC;

void sendOrThrow(int fd, capnp::MessageBuilder& b, const char* what) {
  if (int err = control::sendMessage(fd, b); err != 0) {
    throw std::runtime_error(std::string(what) + ": send failed, errno " + std::to_string(err));
  }
}

}  // namespace

BrokerChild::BrokerChild(const std::string& binary, const ring::RegionConfig& config)
    : requestBell_(ring::Doorbell::create()), completionBell_(ring::Doorbell::create()) {
  char root[] = "/tmp/ipsec-hostile-root-XXXXXX";
  if (mkdtemp(root) == nullptr) throw std::runtime_error("mkdtemp");
  emptyRoot_ = root;
  chmod(root, 0555);
  sandbox::ensureEmptyDir(emptyRoot_);

  auto [supEnd, supChild] = control::makeSeqpacketPair();
  auto [keydbEnd, keydbChild] = control::makeSeqpacketPair();
  supervisor_ = std::move(supEnd);
  keydb_ = std::move(keydbEnd);
  region_.emplace(ring::Region::create(config));

  supervisor::ChildSpec spec;
  spec.role = "ipsec-crypto";
  spec.binary = binary;
  spec.args = {"--uid", kChildId, "--gid", kChildId, "--root", emptyRoot_, "--workers", "1"};
  // Placed by ipsecd's own table code (child_fds.cpp, proto/fd_layout.h), so
  // the child is started exactly as ipsecd starts it.
  supervisor::ChildEnds ends;
  ends.ipsecd = supChild.get();
  ends.cryptoOfKeydb = keydbChild.get();
  ends.workers = {supervisor::WorkerEnds{region_->fd(), requestBell_.fd(), completionBell_.fd()}};
  spec.fds = supervisor::cryptoFds(ends);
  pid_ = supervisor::spawnChild(spec);

  control::Inbox inbox(supervisor_.get());
  auto ready = inbox.receive(15000);
  if (!ready.reader || ready.reader->getRoot<proto::FromService>().which() != proto::FromService::READY) {
    throw std::runtime_error("ipsec-crypto did not say ready: " + ready.error);
  }
}

BrokerChild::~BrokerChild() {
  stopGranting_ = true;
  if (granter_.joinable()) granter_.join();
  if (!stop(5000) && pid_ > 0 && alive()) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  rmdir(emptyRoot_.c_str());
}

std::string BrokerChild::createSession(const SessionSpec& spec) {
  capnp::MallocMessageBuilder b;
  auto c = b.initRoot<proto::KeydbToCrypto>().initCreateSession();
  c.initSa().setIndex(spec.index);
  c.getSa().setGeneration(spec.generation);
  auto p = c.initParams();
  p.setSatype(spec.ah ? SADB_SATYPE_AH : SADB_SATYPE_ESP);
  p.setSpi(0x1000 + spec.index);
  auto keys = c.initKeys();
  kj::ArrayPtr<const kj::byte> key(spec.key.data(), spec.key.size());
  if (spec.ah) {
    p.setAuthAlg(kHmacSha256);
    keys.setAuth(key);
  } else {
    p.setEncAlg(kGcm16);
    keys.setEncrypt(key);
  }
  c.setIvNext(spec.ivNext);
  c.setIvLimit(spec.ivLimit);
  c.setDirection(spec.direction);
  sendOrThrow(keydb_.get(), b, "CreateSession");
  control::wipeMessage(b);
  {
    std::lock_guard lock(grantsMutex_);
    granted_[spec.index] = spec.ivLimit;
  }
  control::Inbox inbox(keydb_.get());
  auto reply = inbox.receive(5000);
  if (!reply.reader) return "no SessionResult: " + reply.error;
  auto msg = reply.reader->getRoot<proto::CryptoToKeydb>();
  if (msg.which() != proto::CryptoToKeydb::SESSION_RESULT) return "expected a SessionResult";
  auto r = msg.getSessionResult();
  return r.getOk() ? "" : std::string("refused: ") + r.getError().cStr();
}

void BrokerChild::destroySession(std::uint32_t index, std::uint32_t generation) {
  capnp::MallocMessageBuilder b;
  auto sa = b.initRoot<proto::KeydbToCrypto>().initDestroySession();
  sa.setIndex(index);
  sa.setGeneration(generation);
  sendOrThrow(keydb_.get(), b, "DestroySession");
}

void BrokerChild::startGranting(std::uint64_t grantStep) {
  grantStep_ = grantStep;
  granter_ = std::thread([this] { grantLoop(); });
}

std::uint64_t BrokerChild::grantedLimit(std::uint32_t index) {
  std::lock_guard lock(grantsMutex_);
  return granted_[index];
}

// keydb's answer to an IvRequest, as services/keydb does it: a new limit
// above where the broker is. Anything else from the broker now is a bug.
void BrokerChild::grantLoop() {
  control::Inbox inbox(keydb_.get());
  while (!stopGranting_.load()) {
    auto m = inbox.receive(100);
    if (!m.reader) continue;  // a timeout; a closed socket shows as the child dying
    auto msg = m.reader->getRoot<proto::CryptoToKeydb>();
    if (msg.which() != proto::CryptoToKeydb::IV_REQUEST) continue;
    auto req = msg.getIvRequest();
    ++ivRequests_;
    const std::uint64_t limit = req.getIvNext() + grantStep_;
    {
      std::lock_guard lock(grantsMutex_);
      auto& g = granted_[req.getSa().getIndex()];
      if (limit > g) g = limit;
    }
    capnp::MallocMessageBuilder b;
    auto grant = b.initRoot<proto::KeydbToCrypto>().initIvGrant();
    grant.setSa(req.getSa());
    grant.setIvLimit(limit);
    control::sendMessage(keydb_.get(), b);
  }
}

std::optional<std::map<std::string, std::uint64_t>> BrokerChild::stats() {
  capnp::MallocMessageBuilder b;
  b.initRoot<proto::ToService>().setStatsRequest(++statsId_);
  if (control::sendMessage(supervisor_.get(), b) != 0) return std::nullopt;
  control::Inbox inbox(supervisor_.get());
  auto m = inbox.receive(5000);
  if (!m.reader) return std::nullopt;
  auto msg = m.reader->getRoot<proto::FromService>();
  if (msg.which() != proto::FromService::STATS || msg.getStats().getRequestId() != statsId_) return std::nullopt;
  std::map<std::string, std::uint64_t> out;
  for (auto c : msg.getStats().getCounters()) out[c.getName().cStr()] = c.getValue();
  return out;
}

bool BrokerChild::alive() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  if (r == pid_) {
    exitStatus_ = status;
    pid_ = -1;
  }
  return false;
}

bool BrokerChild::stop(int timeoutMs) {
  if (pid_ <= 0) return exitStatus_ == 0;
  capnp::MallocMessageBuilder b;
  b.initRoot<proto::ToService>().setStop();
  control::sendMessage(supervisor_.get(), b);
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (alive()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFEXITED(exitStatus_) && WEXITSTATUS(exitStatus_) == 0;
}

}  // namespace ipsec::hostile
