// Test harness for ipsec-policy's PF_KEY server: a real Server on a real
// listening SOCK_SEQPACKET socket in a temporary directory, real client
// sockets, and the other ends of real keydb and forwarder socketpairs that
// the test reads and answers with real Cap'n Proto messages. The event loop
// runs on the test thread (pump()), so every step is deterministic.
#pragma once

#include <utility>  // before asio

#include <linux/pfkeyv2.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <capnp/message.h>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "control/wire.h"
#include "pfkey/builder.h"
#include "pfkey/message.h"
#include "proto/dataplane.capnp.h"
#include "proto/sad.capnp.h"
#include "server.h"

namespace ipsec::policy::test {

using Bytes = std::vector<std::uint8_t>;

// A PF_KEY client socket as setkey or charon would hold it.
class TestClient {
 public:
  explicit TestClient(control::UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }
  void send(const Bytes& b) const;
  // The next datagram if one is waiting (the server must have been pumped).
  std::optional<Bytes> tryRecv() const;
  std::vector<Bytes> drain() const;

 private:
  control::UniqueFd fd_;
};

class Harness {
 public:
  explicit Harness(ServerOptions options = {});
  ~Harness();

  void pump();
  // Connects through the listening socket (SO_PEERCRED path).
  TestClient connect();
  // A socketpair whose server end the Server adopts; `serverSndbuf` > 0 shrinks
  // that end's send buffer so that the client's queue fills quickly.
  TestClient adopt(int serverSndbuf = 0);

  // The next message the server sent keydb / the forwarder, or null.
  // keydbRequest passes over markOutbound (an outbound policy's templates);
  // keydbMessage returns those too.
  control::ReceivedMessage keydbRequest(int timeoutMs = 1000);
  control::ReceivedMessage keydbMessage(int timeoutMs = 1000);
  control::ReceivedMessage forwarderMessage(int timeoutMs = 0);
  void answerKeydb(capnp::MallocMessageBuilder& b);
  // Sends as the forwarder (ForwarderToPolicy) and pumps.
  void fromForwarder(capnp::MallocMessageBuilder& b);

  // keydb's answer to a markOutbound with a request id (outboundMarked): by
  // default pump() gives it as keydb would once the broker has the marks;
  // after holdMarks() the test gives it with answerMark().
  void holdMarks() { answerMarks_ = false; }
  void answerMark(std::uint64_t requestId);

  Server& server() { return *server_; }
  boost::asio::io_context& io() { return io_; }
  const std::string& socketPath() const { return path_; }
  std::uint64_t stat(const std::string& name);
  // Replaces the forwarder channel the way ipsecd does after a restart.
  void restartDataPlane();

 private:
  boost::asio::io_context io_;
  std::filesystem::path dir_;
  std::string path_;
  control::UniqueFd keydbPeer_;
  control::UniqueFd forwarderPeer_;
  std::optional<control::Inbox> keydbInbox_, forwarderInbox_;
  // keydb messages pump() read (to answer marks) that the test has not yet.
  std::deque<control::ReceivedMessage> keydbBacklog_;
  bool answerMarks_ = true;
  // Reads what keydb was sent into keydbBacklog_ and answers the marks;
  // returns how many it answered.
  std::size_t answerPendingMarks();
  std::unique_ptr<Server> server_;
};

// Request builders (host order in, wire order out, as pfkey::Builder does).
pfkey::SockAddress v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d, std::uint16_t port = 0);
Bytes spdAdd(std::uint8_t type, std::uint8_t dir, const pfkey::SockAddress& src, const pfkey::SockAddress& dst,
             std::uint16_t policyType = 2 /* IPSEC_POLICY_IPSEC */, std::uint32_t seq = 0, std::uint32_t pid = 4242);
Bytes header(std::uint8_t type, std::uint8_t satype, std::uint32_t seq = 0, std::uint32_t pid = 4242);

// Parses a reply; fails the test if it does not parse.
pfkey::ParsedMessage parsed(const Bytes& b);

}  // namespace ipsec::policy::test
