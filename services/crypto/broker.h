// ipsec-crypto: the broker — keydb's channel on the control thread, the
// session table, and one worker per ring.
#pragma once

#include <utility>  // before asio (Boost 1.74 with GCC 12)

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <memory>
#include <vector>

#include "control/channel.h"
#include "counters.h"
#include "cryptodrv/driver.h"
#include "proto/supervisor.capnp.h"
#include "sessions.h"
#include "worker.h"

namespace ipsec::crypto {

using control::UniqueFd;

struct RingFds {
  UniqueFd region, requestBell, completionBell;
};

class Broker {
 public:
  Broker(boost::asio::io_context& io, UniqueFd keydb, std::vector<RingFds> rings);
  ~Broker();
  void start();          // the keydb channel
  void startWorkers();   // after the sandbox: threads inherit the seccomp filter
  void stop();
  void fillStats(proto::Stats::Builder out);
  // net.inet.ipsec.allow_legacy: 3DES and HMAC-MD5 sessions are refused unless set.
  void setSysctl(std::string_view name, std::int64_t value);

 private:
  bool onKeydb(capnp::MessageReader& m, std::vector<UniqueFd>& fds);
  void armIvLow();  // asks keydb for more IVs for each session a worker found low
  void addWorkerCounters(Counters& now) const;
  void addSessionCounters(Counters& now) const;

  boost::asio::io_context& io_;
  cryptodrv::DriverRegistry drivers_;
  std::unique_ptr<control::Channel> keydb_;
  std::unique_ptr<SessionTable> sessions_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> ivLowWatch_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::uint64_t sessionsCreated_ = 0, sessionsRefused_ = 0;
  std::uint64_t sessionsNoKeyMemory_ = 0;  // refusals for lack of locked key memory (ENOMEM)
  bool stopped_ = false;
  bool allowLegacy_ = false;
};

}  // namespace ipsec::crypto
