// PF_KEY client socket for the setkey tool (see client.h).
#include "client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <stdexcept>

#include "setkey/format.h"

namespace ipsec::setkey {

Client::Client(const std::string& path, bool verbose)
    : pid_(static_cast<uint32_t>(getpid())), verbose_(verbose), buf_(pfkey::kMaxMessageBytes) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof sun.sun_path) throw std::runtime_error("socket path too long: " + path);
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int size = 128 * 1024;  // as setkey: room for a burst of dump replies
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) < 0) {
    int e = errno;
    ::close(fd_);
    throw std::runtime_error("cannot reach the PF_KEY service at " + path + ": " + std::strerror(e));
  }
}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

void Client::send(const std::vector<uint8_t>& request) {
  if (verbose_) {
    auto r = pfkey::parse(request);
    if (auto* m = std::get_if<pfkey::ParsedMessage>(&r)) std::cout << "send: " << formatDebug(*m) << "\n";
  }
  ssize_t n;
  do n = ::send(fd_, request.data(), request.size(), MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
  if (static_cast<size_t>(n) != request.size()) throw std::runtime_error("send: short write");
}

bool Client::receiveAny(const std::function<void(const pfkey::ParsedMessage&)>& onMessage) {
  ssize_t n;
  do n = ::recv(fd_, buf_.data(), buf_.size(), MSG_TRUNC);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  if (static_cast<size_t>(n) > buf_.size()) {
    std::cerr << "setkey: dropped an oversized message (" << n << " bytes)\n";
    return true;
  }
  auto r = pfkey::parse({buf_.data(), static_cast<size_t>(n)}, pfkey::Origin::kService);
  if (auto* e = std::get_if<pfkey::ParseError>(&r)) {
    std::cerr << "setkey: ignored a malformed message from the service: " << e->reason << "\n";
    return true;
  }
  const auto& m = std::get<pfkey::ParsedMessage>(r);
  if (verbose_) std::cout << "recv: " << formatDebug(m) << "\n";
  onMessage(m);
  return true;
}

bool Client::awaitReplies(uint8_t type,
                          const std::function<void(const pfkey::ParsedMessage&)>& onReply,
                          std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return false;
    bool done = false;
    bool alive = receiveAny([&](const pfkey::ParsedMessage& m) {
      // Other clients' changes are broadcast to us too: only our own count.
      if (m.msg().sadb_msg_type != type || m.msg().sadb_msg_pid != pid_) return;
      // The timeout bounds silence, not the whole reply: a dump of 100 000
      // SAs takes longer than a second to arrive and print, but never
      // pauses that long between two of its messages.
      deadline = std::chrono::steady_clock::now() + timeout;
      onReply(m);
      // The last message of a reply (or of a dump) has seq 0. ipsec-tools
      // also waits through error replies; ours end the wait at once.
      done = m.msg().sadb_msg_seq == 0;
    });
    if (!alive) return false;
    if (done) return true;
  }
}

}  // namespace ipsec::setkey
