// See harness.h.
#include "harness.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <stdlib.h>

#include <cerrno>
#include <stdexcept>

namespace ipsec::policy::test {

void TestClient::send(const Bytes& b) const {
  ASSERT_EQ(::send(fd_.get(), b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
}

std::optional<Bytes> TestClient::tryRecv() const {
  Bytes buf(70000);
  const ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), MSG_DONTWAIT);
  if (n <= 0) return std::nullopt;
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

std::vector<Bytes> TestClient::drain() const {
  std::vector<Bytes> out;
  while (auto b = tryRecv()) out.push_back(std::move(*b));
  return out;
}

Harness::Harness(ServerOptions options) {
  char tmpl[] = "/tmp/policy-test-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
  dir_ = tmpl;
  path_ = (dir_ / "pfkey").string();
  control::UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path_.c_str());
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 || ::listen(listener.get(), 64) != 0) {
    throw std::runtime_error("bind/listen");
  }
  auto [keydbServer, keydbPeer] = control::makeSeqpacketPair();
  auto [fwdServer, fwdPeer] = control::makeSeqpacketPair();
  keydbPeer_ = std::move(keydbPeer);
  forwarderPeer_ = std::move(fwdPeer);
  server_ = std::make_unique<Server>(io_, std::move(listener), std::move(keydbServer), std::move(fwdServer),
                                     std::move(options));
  server_->start();
  pump();
}

Harness::~Harness() {
  server_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void Harness::pump() {
  // Run until nothing is ready twice in a row: replies to replies settle.
  for (int idle = 0, rounds = 0; idle < 2 && rounds < 1000; ++rounds) {
    io_.restart();
    idle = io_.poll() == 0 ? idle + 1 : 0;
    if (answerMarks_ && answerPendingMarks() != 0) idle = 0;
  }
}

std::size_t Harness::answerPendingMarks() {
  if (!keydbInbox_) keydbInbox_.emplace(keydbPeer_.get());
  std::size_t answered = 0;
  for (;;) {
    auto m = keydbInbox_->receive(0);
    if (!m.reader) return answered;
    auto req = m.reader->getRoot<proto::PolicyToKeydb>();
    if (req.which() == proto::PolicyToKeydb::MARK_OUTBOUND && req.getRequestId() != 0) {
      capnp::MallocMessageBuilder b;
      b.initRoot<proto::KeydbToPolicy>().setOutboundMarked(req.getRequestId());
      EXPECT_EQ(control::sendMessage(keydbPeer_.get(), b), 0);
      ++answered;
    }
    keydbBacklog_.push_back(std::move(m));
  }
}

void Harness::answerMark(std::uint64_t requestId) {
  capnp::MallocMessageBuilder b;
  b.initRoot<proto::KeydbToPolicy>().setOutboundMarked(requestId);
  answerKeydb(b);
}

TestClient Harness::connect() {
  control::UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path_.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) throw std::runtime_error("connect");
  pump();
  return TestClient(std::move(fd));
}

TestClient Harness::adopt(int serverSndbuf) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
  if (serverSndbuf > 0) ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &serverSndbuf, sizeof serverSndbuf);
  server_->adoptClient(control::UniqueFd(sv[0]), 0, ::getpid());
  return TestClient(control::UniqueFd(sv[1]));
}

control::ReceivedMessage Harness::keydbMessage(int timeoutMs) {
  if (!keydbBacklog_.empty()) {
    auto m = std::move(keydbBacklog_.front());
    keydbBacklog_.pop_front();
    return m;
  }
  if (!keydbInbox_) keydbInbox_.emplace(keydbPeer_.get());  // policy's channels coalesce bursts
  return keydbInbox_->receive(timeoutMs);
}

control::ReceivedMessage Harness::keydbRequest(int timeoutMs) {
  for (;;) {
    auto m = keydbMessage(timeoutMs);
    if (!m.reader || m.reader->getRoot<proto::PolicyToKeydb>().which() != proto::PolicyToKeydb::MARK_OUTBOUND) {
      return m;
    }
  }
}

control::ReceivedMessage Harness::forwarderMessage(int timeoutMs) {
  if (!forwarderInbox_) forwarderInbox_.emplace(forwarderPeer_.get());
  return forwarderInbox_->receive(timeoutMs);
}

void Harness::answerKeydb(capnp::MallocMessageBuilder& b) {
  ASSERT_EQ(control::sendMessage(keydbPeer_.get(), b), 0);
  pump();
}

void Harness::fromForwarder(capnp::MallocMessageBuilder& b) {
  ASSERT_EQ(control::sendMessage(forwarderPeer_.get(), b), 0);
  pump();
}

std::uint64_t Harness::stat(const std::string& name) {
  capnp::MallocMessageBuilder b;
  auto s = b.initRoot<proto::Stats>();
  server_->fillStats(s);
  for (auto c : s.asReader().getCounters()) {
    if (c.getName() == name) return c.getValue();
  }
  return ~std::uint64_t{0};
}

void Harness::restartDataPlane() {
  auto [serverEnd, peer] = control::makeSeqpacketPair();
  forwarderPeer_ = std::move(peer);
  forwarderInbox_.reset();
  std::vector<control::UniqueFd> fds;
  fds.push_back(std::move(serverEnd));
  ASSERT_TRUE(server_->onDataPlaneRestarted(fds));
  pump();
}

pfkey::SockAddress v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d, std::uint16_t port) {
  return pfkey::SockAddress::v4({a, b, c, d}, port);
}

Bytes spdAdd(std::uint8_t type, std::uint8_t dir, const pfkey::SockAddress& src, const pfkey::SockAddress& dst,
             std::uint16_t policyType, std::uint32_t seq, std::uint32_t pid) {
  pfkey::Builder b(type, SADB_SATYPE_UNSPEC, seq, pid);
  pfkey::PolicyFields p;
  p.type = policyType;
  p.dir = dir;
  p.priority = 0x80000000u;
  if (policyType == IPSEC_POLICY_IPSEC) p.requests.push_back({IPPROTO_ESP, IPSEC_MODE_TRANSPORT, IPSEC_LEVEL_REQUIRE, 0, {}, {}});
  b.policy(p);
  b.address(SADB_EXT_ADDRESS_SRC, src, 32, IPSEC_ULPROTO_ANY);
  b.address(SADB_EXT_ADDRESS_DST, dst, 32, IPSEC_ULPROTO_ANY);
  return b.finish();
}

Bytes header(std::uint8_t type, std::uint8_t satype, std::uint32_t seq, std::uint32_t pid) {
  return pfkey::Builder(type, satype, seq, pid).finish();
}

pfkey::ParsedMessage parsed(const Bytes& b) {
  auto r = pfkey::parse(b, pfkey::Origin::kService);
  if (auto* e = std::get_if<pfkey::ParseError>(&r)) {
    ADD_FAILURE() << "reply does not parse: " << e->reason;
    throw std::runtime_error("unparseable reply");
  }
  return std::get<pfkey::ParsedMessage>(r);
}

}  // namespace ipsec::policy::test
