// outer_io_bench: the two network namespaces and the veth between them that
// every case runs over (sender 192.0.2.1, receiver 192.0.2.2, no default
// route), made with `ip` and removed by the names this process generated
// (they carry its pid), on every exit path including an exception.
//
// Trust: runs as root on the host; touches only the names it made.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace outer_io {

// Runs argv (argv[0] looked up in PATH) as a child and waits for it, up to
// 10 s (then the child is killed, by its pid); false if it failed or timed out.
bool runCommand(const std::vector<std::string>& argv);

// Moves the calling thread (only it) into the named namespace (/run/netns/<name>).
void enterNamespace(const std::string& name);

class Testbed {
 public:
  Testbed();  // throws std::runtime_error, having removed what it made
  ~Testbed();
  Testbed(const Testbed&) = delete;
  Testbed& operator=(const Testbed&) = delete;

  const std::string& senderNamespace() const { return senderNs_; }
  const std::string& receiverNamespace() const { return receiverNs_; }
  int senderIfindex() const { return senderIfindex_; }                   // in the sender's namespace
  int receiverIfindex() const { return receiverIfindex_; }               // in the receiver's namespace
  const std::array<std::uint8_t, 6>& senderMac() const { return senderMac_; }
  const std::array<std::uint8_t, 6>& receiverMac() const { return receiverMac_; }  // the next hop's

 private:
  void removeAll() noexcept;

  std::string senderNs_, receiverNs_, senderIf_, receiverIf_;
  int senderIfindex_ = 0, receiverIfindex_ = 0;
  std::array<std::uint8_t, 6> senderMac_{}, receiverMac_{};
};

}  // namespace outer_io
