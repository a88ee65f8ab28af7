// ipsec-policy's PF_KEY v2 server: local clients (setkey, charon) on a Unix
// SOCK_SEQPACKET socket, one PF_KEY message per datagram, answered with
// Linux's af_key.c semantics; SA messages become SAD requests to keydb, SPD
// messages are served here (spd.h) and pushed to the forwarder.
//
// Runs in ipsec-policy on its single event-loop thread. Trust:
//  - PF_KEY clients are authenticated by SO_PEERCRED (uid 0, or the group of
//    ServerOptions::pfkeyGroup) but their bytes are untrusted: every datagram
//    goes through pfkey::parse, a bad one gets an error reply (the request's
//    header alone, len 2, with sadb_msg_errno) and the server keeps serving.
//  - keydb and the forwarder are our own processes, not trusted to be
//    well-formed: a malformed or unexpected message closes that channel
//    (control::Channel). Losing keydb is fatal (onPeerLost); losing the
//    forwarder is not (ipsecd restarts the data plane and hands us a new
//    channel: the whole SPD is pushed again).
//
// Delivery follows Linux's pfkey_broadcast: BROADCAST_ONE (the requester),
// REGISTERED (sockets that REGISTERed a satype, plus the requester),
// ALL (every socket); promiscuous sockets get a copy of every message
// delivered to anyone and of every well-formed request. Each client has a
// bounded send queue: a client that does not read loses messages (counted as
// pfkey_enobufs, as Linux drops to a full receive buffer), it never stalls
// the service or other clients.
//
// Batching (the kernel's work is per system call): a client's readable
// socket is read with recvmmsg, up to kReadBurst datagrams per readiness
// event (then other clients get their turn). Messages for a client whose
// queue is empty are held, not sent one send() each, until the end of the
// burst that produced them (a PF_KEY read burst, or the handler that ran:
// a keydb reply burst, a forwarder message, the tick) and then go to the
// kernel with sendmmsg, in order. A held message has not been refused by
// the socket yet: the queue bounds (pfkey_enobufs) apply only once the
// socket refused, as before.
//
// Outbound marks (DESIGN §3, nonce safety): an SPDADD/SPDUPDATE/SPDSETIDX or
// X_MIGRATE that leaves an outbound IPsec policy with templates is stored in
// the SPD at once, but its forwarder push and its PF_KEY message wait until
// keydb says the broker has the SAs' outbound marks (sad.capnp markOutbound);
// forwarder pushes after it queue behind it (spd_requests.cpp states the
// order rule), and the requesting client's later requests wait for it, so a
// socket's requests are still answered in order as on Linux.
//
// Key material: keys arrive in ADD/UPDATE (KEY_AUTH, KEY_ENCRYPT) and leave
// only in unicast GET and DUMP replies. A documented choice: unlike Linux we
// do NOT copy keys into the ADD/UPDATE/DELETE broadcasts, nor into
// promiscuous copies of requests; every received datagram is wiped after it
// is handled, every capnp message and reply buffer that held keys is wiped.
#pragma once

#include <utility>  // before asio (Boost 1.74 with GCC 12)

#include <linux/pfkeyv2.h>
#include <sys/types.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "control/channel.h"
#include "control/unique_fd.h"
#include "counters.h"
#include "pfkey/message.h"
#include "proto/pfkey_ack.h"
#include "proto/dataplane.capnp.h"
#include "proto/sad.capnp.h"
#include "proto/supervisor.capnp.h"
#include "spd.h"

namespace ipsec::policy {

using control::UniqueFd;

struct ServerOptions {
  // Members of this group may use PF_KEY besides uid 0 (IPSEC_PFKEY_GROUP).
  std::optional<gid_t> pfkeyGroup;
  // Per-client send queue bounds; beyond them a message is dropped and
  // counted (pfkey_enobufs).
  std::size_t maxQueuedMessages = 1024;
  std::size_t maxQueuedBytes = std::size_t{4} << 20;
  // More concurrent clients than this are refused at accept.
  std::size_t maxClients = 256;
  // SAD requests awaiting keydb's answer; beyond this a request gets ENOBUFS.
  std::size_t maxPendingRequests = 4096;
  // The keydb channel broke: the SAD is unreachable, fail closed.
  std::function<void(std::string_view why)> onPeerLost;
  // This host's addresses (ipsecd.conf local_addresses): which way an SA of
  // a transport policy whose selector covers both ends goes (sa_direction.h).
  std::vector<pfkey::SockAddress> localAddresses;
};

// Who receives a message (Linux's BROADCAST_* flags).
enum class Audience { kOne, kRegistered, kAll };

// Bytes of one outgoing message, wiped when the last queue lets go of them
// (GET and DUMP replies hold keys).
class OutMessage {
 public:
  explicit OutMessage(std::vector<std::uint8_t> bytes) : bytes_(std::move(bytes)) {}
  OutMessage(const OutMessage&) = delete;
  OutMessage& operator=(const OutMessage&) = delete;
  ~OutMessage();
  std::span<const std::uint8_t> bytes() const noexcept { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
};
using OutPtr = std::shared_ptr<const OutMessage>;

class Server {
 public:
  // `listener` may be invalid (tests and the fuzz target adopt clients).
  Server(boost::asio::io_context& io, UniqueFd listener, UniqueFd keydb, UniqueFd forwarder, ServerOptions options);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  void start();
  void stop();
  // ipsecd restarted the data plane: fds holds the new forwarder channel.
  bool onDataPlaneRestarted(std::vector<UniqueFd>& fds);
  void fillStats(proto::Stats::Builder out) const;
  // net.inet.ipsec.allow_legacy: REGISTER lists, and ADD accepts, 3DES and
  // HMAC-MD5 only when set (the broker refuses them otherwise too).
  // net.key.* (FAST_IPSEC's names; README, ipsecctl --help):
  //   larval_lifetime     s an ACQUIRE's larval state lives (Linux: 30)
  //   blockacq_count      ACQUIREs for one pending (policy, src, dst) that are
  //                       suppressed before one is sent again (FreeBSD: 32)
  //   blockacq_lifetime   s after which a pending ACQUIRE is sent again anyway (20)
  //   spi_minval/maxval   every GETSPI range is clamped to [minval, maxval]
  //   debug               trace every PF_KEY message in the log
  void setSysctl(std::string_view name, std::int64_t value);
  // Once a second (the timer, or a test with its own clock): policies whose
  // hard add-time ran out are deleted and announced with X_SPDEXPIRE; larval
  // ACQUIRE states past net.key.larval_lifetime are dropped.
  void onTick(std::uint64_t nowSeconds);

  // Serves an already connected socket as a client (credentials already
  // checked by the caller). Returns its id.
  std::uint64_t adoptClient(UniqueFd fd, uid_t uid, pid_t pid);
  // One datagram from client `clientId` (which may be unknown: replies then
  // reach only promiscuous sockets). `truncated`: it did not fit the receive
  // buffer. The bytes are wiped before this returns.
  void handleDatagram(std::uint64_t clientId, std::span<std::uint8_t> datagram, bool truncated) noexcept;

  std::size_t clientCount() const noexcept { return clients_.size(); }
  std::size_t pendingAcquires() const noexcept { return acquires_.size(); }
  const Spd& spd() const noexcept { return spd_; }

  // NAT mapping reports the forwarder may have checked (nat_mapping.cpp):
  static constexpr std::uint64_t kNatMappingIntervalMs = 1000;  // per SA, as the forwarder's own limit
  static constexpr std::size_t kNatMappingsPerSecond = 32;     // overall, reports that reach keydb

 private:
  bool allowLegacy_ = false;
  std::uint64_t larvalLifetime_ = 30;
  std::uint64_t blockacqCount_ = 32;
  std::uint64_t blockacqLifetime_ = 20;
  std::uint32_t spiMin_ = 0x100;
  std::uint32_t spiMax_ = 0xffffffff;
  bool pfkeyDebug_ = false;

  // What Linux keeps as an xfrm_state in the "acquire" state: an ACQUIRE was
  // sent for this (policy, src, dst) and no SA answered it yet. While it
  // lives, further ACQUIREs are rate-limited (net.key.blockacq_*); a GETSPI
  // carrying its seq (and its destination) takes its mode and reqid; an
  // ADD/UPDATE of an SA that satisfies it (satype, src, dst, mode unless the
  // SA's is any, a unique request's reqid) completes it; it dies
  // after net.key.larval_lifetime. DUMP shows it after keydb's SAs as Linux
  // shows its acquire state: an SA with SPI 0 in state larval.
  struct AcquireState {
    std::uint32_t seq = 0;
    std::uint8_t satype = 0;
    pfkey::SockAddress src, dst;
    std::uint8_t mode = 0;
    std::uint32_t reqid = 0;
    std::uint32_t policyId = 0;
    std::uint64_t created = 0;
    std::uint64_t lastSent = 0;
    std::uint64_t suppressed = 0;  // since lastSent
  };
  static constexpr std::size_t kMaxAcquires = 4096;
  std::vector<AcquireState> acquires_;
  void completeAcquires(std::uint8_t satype, const pfkey::SockAddress& src, const pfkey::SockAddress& dst,
                        std::uint8_t mode, std::uint32_t reqid);
  void armTick();
  // A new deadline (unix s) for the tick: re-arms it if earlier than its own.
  void noteDeadline(std::uint64_t atS);
  struct Client {
    Client(boost::asio::io_context& io, int fd) : socket(io) { socket.assign(fd); }
    std::uint64_t id = 0;
    boost::asio::posix::stream_descriptor socket;
    uid_t uid = 0;
    pid_t pid = 0;
    std::deque<OutPtr> queue;
    std::size_t queuedBytes = 0;
    bool writeArmed = false;
    // `queue` holds only messages not yet offered to the socket (see above).
    bool held = false;
    bool promiscuous = false;
    std::uint32_t registered = 0;  // bit n: REGISTERed satype n
    // The rest of a dump, fed into `queue` as the client reads: Linux paces a
    // dump by the reader's receive buffer (pfkey_do_dump), it never drops
    // entries. A second dump while one runs is EBUSY, as Linux answers.
    std::deque<OutPtr> dumpBacklog;
    // A SADB_DUMP whose chunks keydb is still sending (its backlog may be
    // empty between two chunks): a second dump meanwhile is EBUSY too.
    bool sadDumpRunning = false;
    // The preload's syncs (proto/pfkey_ack.h), in the order received: each
    // is acknowledged on its own channel once the requests received before
    // it (`after`) are handled and none of this client's waits for keydb.
    // `requests` counts the datagrams received that are not syncs, `handled`
    // those handleDatagram has taken (stalled ones come later, in order).
    struct Sync {
      PfkeyAck token = 0;
      UniqueFd channel;
      std::uint64_t after = 0;
    };
    std::deque<Sync> syncs;
    std::uint64_t requests = 0;
    std::uint64_t handled = 0;
    // Its SPD requests whose answer waits for keydb's outbound marks. Until
    // they are answered its later requests wait too (Linux answers a
    // socket's requests in order): the rest of the read burst in `stalled`
    // (wiped when dropped: an ADD holds keys), the rest in its socket.
    std::size_t marksAwaited = 0;
    bool readPaused = false;
    struct StalledDatagram {
      std::vector<std::uint8_t> bytes;
      bool truncated = false;
      StalledDatagram(std::vector<std::uint8_t> b, bool t) : bytes(std::move(b)), truncated(t) {}
      StalledDatagram(StalledDatagram&&) = default;
      StalledDatagram& operator=(StalledDatagram&&) = default;
      ~StalledDatagram();
    };
    std::deque<StalledDatagram> stalled;
  };

  // A SAD request waiting for keydb.
  struct Pending {
    std::uint64_t clientId = 0;
    sadb_msg request{};
    // A dump arriving in chunks (SadReply.more): entries so far, and the
    // latest one held back until it is known whether it is the last (seq 0).
    std::uint32_t dumped = 0;
    std::vector<std::uint8_t> heldBack;
    // X_MIGRATE: the request itself, applied to the SPD once keydb has moved the SAs.
    std::vector<std::uint8_t> migrate;
    // A markOutbound (spd_requests.cpp, "outbound marks"): answered by
    // keydb's outboundMarked, never by a SadReply; `announce` is the PF_KEY
    // message that goes to every socket then.
    bool awaitsMark = false;
    std::vector<std::uint8_t> announce;
  };

  // ---- clients (server.cpp)
  void armAccept();
  void onAcceptable();
  void armRead(Client& c);
  void onReadable(std::uint64_t id);
  void armWrite(Client& c);
  void onWritable(std::uint64_t id);
  void removeClient(std::uint64_t id);
  // Its outbound marks are answered: its stalled requests run, then reading resumes.
  void resumeClient(std::uint64_t id);
  Client* findClient(std::uint64_t id) noexcept;
  void enqueue(Client& c, const OutPtr& m);
  // Linux's pfkey_broadcast: `one` (may be null) always receives; others by `to`.
  void deliver(const OutPtr& m, Audience to, Client* one);
  void deliver(std::vector<std::uint8_t> bytes, Audience to, Client* one);
  void promiscuousCopy(const pfkey::ParsedMessage& m);
  void replyError(Client* c, const sadb_msg& request, int errnum);
  // One message of a dump to `c` (may be null), paced by its reading.
  void deliverDump(Client* c, std::vector<std::uint8_t> bytes);
  void refillFromBacklog(Client& c);
  // Holds client sends until the outermost scope ends, then flushHeld().
  class SendHold {
   public:
    explicit SendHold(Server& s) noexcept : s_(s) { ++s_.holdDepth_; }
    ~SendHold();
    SendHold(const SendHold&) = delete;
    SendHold& operator=(const SendHold&) = delete;

   private:
    Server& s_;
  };
  // Offers every held queue to its socket (sendmmsg), in the order held,
  // then acknowledges to preloaded clients whose answers are all there.
  void flushHeld() noexcept;
  void sendAcks() noexcept;
  // Offers c's held queue now; what the socket refuses waits for writability.
  void releaseHeld(Client& c) noexcept;
  // Appends to c's queue without sending: onWritable sends it in sendmmsg batches.
  void appendToQueue(Client& c, OutPtr m);
  // Sends c's queue in sendmmsg batches; false if the socket is full.
  bool sendQueued(Client& c);
  bool dumping(const Client* c) const noexcept { return c && (!c->dumpBacklog.empty() || c->sadDumpRunning); }
  void dispatch(Client* c, const pfkey::ParsedMessage& m);
  // The preload's sync (proto/pfkey_ack.h): kept until sendAcks answers it,
  // or refused and counted.
  void takeSync(Client& c, PfkeyAck token, std::vector<UniqueFd> fds, pid_t sender);

  // ---- SA messages and keydb (sa_requests.cpp)
  int onRegister(Client* c, const pfkey::ParsedMessage& m);
  int onAddOrUpdate(Client* c, const pfkey::ParsedMessage& m);
  int onDeleteOrGet(Client* c, const pfkey::ParsedMessage& m);
  int onFlush(Client* c, const pfkey::ParsedMessage& m);
  int onDump(Client* c, const pfkey::ParsedMessage& m);
  int onGetSpi(Client* c, const pfkey::ParsedMessage& m);
  int onPromisc(Client* c, const pfkey::ParsedMessage& m);
  // Starts a SAD request; returns 0 or an errno (ENOBUFS when too many wait).
  int sendToKeydb(Client* c, const sadb_msg& request, capnp::MallocMessageBuilder& b, std::uint64_t id);
  std::uint64_t newRequestId() noexcept { return nextRequestId_++; }
  bool onKeydb(capnp::MessageReader& m, std::vector<UniqueFd>& fds);
  bool onKeydbReply(proto::SadReply::Reader r);
  bool onKeydbExpire(proto::Expire::Reader e);
  // An outbound IPsec policy was stored (sa_direction.cpp): keydb marks the
  // SAs it covers outbound and answers once the broker has the marks; the
  // policy's forwarder push waits behind that answer, and so does `announce`
  // (its PF_KEY message to every socket). False when it has nothing to mark
  // (not an outbound IPsec policy, or no template): push and announce now.
  bool announceWhenMarked(Client* c, const sadb_msg& request, const Policy& p, std::vector<std::uint8_t> announce);
  bool needsMarks(const Policy& p) const;
  bool onOutboundMarked(std::uint64_t id);

  // ---- NAT mapping reports from the forwarder (nat_mapping.cpp)
  // The forwarder faces the network: a report is a claim to check, not news
  // to pass on. It is rate-limited (per SA and overall), then checked against
  // keydb's SA (it exists, is UDP-encapsulated, and the old endpoint is the
  // SA's), and only then broadcast as SADB_X_NAT_T_NEW_MAPPING.
  struct NatReport {
    std::uint32_t spi = 0;
    pfkey::SockAddress oldSrc, dst, newSrc;
    std::uint16_t sport = 0, dport = 0, newSport = 0;
  };
  bool onNatMapping(proto::NatMapping::Reader n);
  bool natMappingAdmitted(const NatReport& r);
  bool onNatMappingChecked(const NatReport& r, proto::SadReply::Reader reply);
  std::unordered_map<std::uint64_t, NatReport> natChecks_;  // by keydb request id
  std::map<std::pair<std::uint32_t, std::array<std::uint8_t, 16>>, std::uint64_t> natLastMs_;  // (spi, dst)
  std::uint64_t natWindowStartMs_ = 0;
  std::size_t natInWindow_ = 0;

  // ---- SPD messages and the forwarder (spd_requests.cpp)
  int onSpdAddOrUpdate(Client* c, const pfkey::ParsedMessage& m);
  int onSpdDelete(Client* c, const pfkey::ParsedMessage& m);
  int onSpdGetOrDelete2(Client* c, const pfkey::ParsedMessage& m);
  int onSpdDump(Client* c, const pfkey::ParsedMessage& m);
  int onSpdFlush(Client* c, const pfkey::ParsedMessage& m);
  int onMigrate(Client* c, const pfkey::ParsedMessage& m);
  // X_MIGRATE's policy part: checks the request and finds the policy
  // templates it moves (ENOENT, ENODATA as Linux); with commit, moves them
  // and echoes the request to every socket.
  int migratePolicy(Client* c, const sadb_msg& request, const pfkey::ParsedMessage& m, bool commit);
  bool onMigrateDone(Pending& p);
  void startForwarder();
  bool onForwarder(capnp::MessageReader& m, std::vector<UniqueFd>& fds);
  // The forwarder's replica changes in SPD order (spd_requests.cpp): a push
  // goes out at once unless pushes wait in forwarderQueue_, then behind them.
  // `awaitsMark`: the keydb request whose answer lets this one go.
  void pushPolicy(const Policy& p, std::uint64_t awaitsMark = 0);
  void pushDelete(std::uint32_t id);
  void pushFlush();
  void pushAll();
  struct ForwarderPush {
    std::uint64_t awaitsMark = 0;  // 0: goes as soon as it is at the head
    std::uint32_t policyId = 0;    // of an add; 0 for a delete or a flush
    std::unique_ptr<capnp::MallocMessageBuilder> message;
  };
  void push(std::unique_ptr<capnp::MallocMessageBuilder> m, std::uint32_t policyId, std::uint64_t awaitsMark);
  void sendToForwarder(capnp::MallocMessageBuilder& m);
  void releaseForwarderPushes();
  std::deque<ForwarderPush> forwarderQueue_;

  boost::asio::io_context& io_;
  ServerOptions options_;
  std::optional<boost::asio::posix::stream_descriptor> listener_;
  std::unique_ptr<control::Channel> keydb_;
  std::unique_ptr<control::Channel> forwarder_;
  std::map<std::uint64_t, std::unique_ptr<Client>> clients_;
  std::uint64_t nextClientId_ = 1;
  std::unordered_map<std::uint64_t, Pending> pending_;
  std::uint64_t nextRequestId_ = 1;
  std::uint32_t acquireSeq_ = 0;
  Spd spd_;
  boost::asio::steady_timer tick_;
  std::uint64_t tickAt_ = 0;  // the deadline (unix s) tick_ waits for; 0: not armed
  bool stopped_ = false;
  // Datagrams land here, kRxSlots of them per recvmmsg: each slot 8-byte
  // aligned, with one spare word so that a datagram larger than
  // pfkey::kMaxMessageBytes is seen as too large. Not zeroed: pages are
  // touched only by what arrives; rxSlotsUsed_ slots are wiped at the end.
  std::unique_ptr<std::uint64_t[]> rx_;
  std::size_t rxSlotsUsed_ = 0;
  // Clients with held messages (an id may repeat; `held` says if it still is).
  std::vector<std::uint64_t> heldClients_;
  int holdDepth_ = 0;
  bool flushPosted_ = false;
  // Handlers hold a weak_ptr to this, so a callback after destruction is a no-op.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);

  Counters counters_;  // the levels are set in fillStats
  std::array<std::uint64_t, SADB_MAX + 1> pfkeyInByType_{};  // messages received, by type
};

}  // namespace ipsec::policy
