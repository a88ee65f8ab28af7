// The setkey tool's PF_KEY conversation with ipsec-policy over the Unix
// SOCK_SEQPACKET socket (one PF_KEY message per datagram). Trusts nothing it
// receives: every reply goes through pfkey::parse before it is used.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pfkey/message.h"

namespace ipsec::setkey {

class Client {
 public:
  // Connects; throws std::runtime_error with the path and errno text.
  explicit Client(const std::string& socketPath, bool verbose);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  uint32_t pid() const noexcept { return pid_; }
  void send(const std::vector<uint8_t>& request);
  // Reads replies to the last request of `type`, calling onReply for each,
  // until the final one (sadb_msg_seq == 0) or the timeout. Messages of other
  // types or pids (broadcasts of other clients' changes) are skipped.
  // Returns false when `timeout` passes with no message of the reply (the
  // wait restarts at each one, so a long dump is not cut short).
  bool awaitReplies(uint8_t type, const std::function<void(const pfkey::ParsedMessage&)>& onReply,
                    std::chrono::milliseconds timeout = std::chrono::seconds(1));
  // Reads any message (for -x); false on error/EOF.
  bool receiveAny(const std::function<void(const pfkey::ParsedMessage&)>& onMessage);

 private:
  int fd_ = -1;
  uint32_t pid_ = 0;
  bool verbose_ = false;
  std::vector<uint8_t> buf_;
};

}  // namespace ipsec::setkey
