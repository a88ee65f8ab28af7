// See server.h. This file: the PF_KEY socket side (accepting and
// authenticating clients, receiving datagrams, bounded per-client send
// queues, Linux's broadcast rules), the dispatch of one request, and stats.
#include "server.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <string>

#include "log/log.h"
#include "pfkey/builder.h"
#include "proto/pfkey_ack.h"
#include "stats/drop.h"

namespace ipsec::policy {
namespace {

// Datagrams handled per readiness event before other clients get a turn.
constexpr std::size_t kReadBurst = 32;
// Datagrams per recvmmsg (a burst takes two calls at most).
constexpr std::size_t kRxSlots = 16;
constexpr std::size_t kRxWords = pfkey::kMaxMessageBytes / sizeof(std::uint64_t) + 1;
// Datagrams per sendmmsg; also the most messages held for one client before
// they are offered to its socket without waiting for the burst's end.
constexpr std::size_t kSendBatch = 64;
// Room for the descriptors a datagram may carry (the preload's sync has one;
// more are closed: the kernel closes what does not fit) and for the sender's
// credentials (SO_PASSCRED), which vouch for a sync's channel.
constexpr std::size_t kRxControlBytes = CMSG_SPACE(sizeof(int) * 4) + CMSG_SPACE(sizeof(ucred));

// A header to answer with even when the datagram is shorter than one.
sadb_msg headerOf(std::span<const std::uint8_t> d) {
  sadb_msg h{};
  std::memcpy(&h, d.data(), std::min(d.size(), sizeof h));
  return h;
}

// The descriptors that came with one datagram (SCM_RIGHTS), owned, and the
// pid of the process that sent it (SCM_CREDENTIALS; 0 if absent).
std::vector<UniqueFd> takeDescriptors(msghdr& mh, pid_t& sender) {
  std::vector<UniqueFd> fds;
  sender = 0;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm != nullptr; cm = CMSG_NXTHDR(&mh, cm)) {
    if (cm->cmsg_level != SOL_SOCKET) continue;
    if (cm->cmsg_type == SCM_CREDENTIALS && cm->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
      ucred cred{};
      std::memcpy(&cred, CMSG_DATA(cm), sizeof cred);
      sender = cred.pid;
      continue;
    }
    if (cm->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  return fds;
}

// Whether the datagram has the shape of the preload's sync (proto/pfkey_ack.h).
bool isSync(std::span<const std::uint8_t> d) {
  if (d.size() != kPfkeyAckSyncLen) return false;
  const sadb_msg h = headerOf(d);
  return h.sadb_msg_version == PF_KEY_V2 && h.sadb_msg_type == SADB_RESERVED && h.sadb_msg_len == 2 &&
         h.sadb_msg_reserved == kPfkeyAckSyncMagic;
}

// A sync's channel is taken only if it is exactly one Unix socket the sender
// made itself: one end of a socketpair, whose peer credentials are its
// creator's, the pid the kernel gave for the sync's sender. Anything else is
// refused — the client's own end of its PF_KEY connection (then every
// acknowledgement would come back to us as a request, for ever), or a socket
// connected to some other process.
bool isOwnChannel(const std::vector<UniqueFd>& fds, pid_t sender) {
  if (fds.size() != 1 || sender <= 0) return false;
  int domain = 0;
  socklen_t len = sizeof domain;
  if (::getsockopt(fds[0].get(), SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX) return false;
  ucred peer{};
  len = sizeof peer;
  return ::getsockopt(fds[0].get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0 && peer.pid == sender;
}

}  // namespace

OutMessage::~OutMessage() {
  if (!bytes_.empty()) explicit_bzero(bytes_.data(), bytes_.size());
}

Server::Client::StalledDatagram::~StalledDatagram() {
  if (!bytes.empty()) explicit_bzero(bytes.data(), bytes.size());
}

Server::Server(boost::asio::io_context& io, UniqueFd listener, UniqueFd keydb, UniqueFd forwarder,
               ServerOptions options)
    : io_(io), options_(std::move(options)), tick_(io), rx_(new std::uint64_t[kRxSlots * kRxWords]) {
  if (listener) {
    listener_.emplace(io_);
    listener_->assign(listener.release());
    listener_->non_blocking(true);
  }
  keydb_ = std::make_unique<control::Channel>(io_, std::move(keydb), "ipsec-keydb");
  if (forwarder) forwarder_ = std::make_unique<control::Channel>(io_, std::move(forwarder), "ipsec-forwarder");
}

Server::~Server() {
  stopped_ = true;
  explicit_bzero(rx_.get(), rxSlotsUsed_ * kRxWords * sizeof(std::uint64_t));
}

void Server::start() {
  keydb_->start([this](capnp::MessageReader& m, std::vector<UniqueFd>& f) { return onKeydb(m, f); },
                [this](std::string_view why) {
                  if (stopped_) return;
                  log::error("channel to ipsec-keydb closed: {}", why);
                  if (options_.onPeerLost) options_.onPeerLost(why);
                });
  startForwarder();
  if (listener_) armAccept();
  armTick();
}

void Server::stop() {
  stopped_ = true;
  tick_.cancel();
  if (listener_) listener_->close();
  clients_.clear();
  keydb_->close();
  if (forwarder_) forwarder_->close();
}

// ---- accepting -----------------------------------------------------------------

void Server::armAccept() {
  std::weak_ptr<int> alive = alive_;
  listener_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                        [this, alive](const boost::system::error_code& ec) {
                          if (alive.expired() || ec || stopped_) return;
                          onAcceptable();
                        });
}

void Server::onAcceptable() {
  for (std::size_t i = 0; i < kReadBurst; ++i) {
    UniqueFd fd(::accept4(listener_->native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        log::warn("accept on the PF_KEY socket: {}", std::strerror(errno));
      }
      break;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
      ++counters_.pfkey_clients_refused;
      continue;
    }
    const bool allowed = cred.uid == 0 || (options_.pfkeyGroup && cred.gid == *options_.pfkeyGroup);
    if (!allowed || clients_.size() >= options_.maxClients) {
      ++counters_.pfkey_clients_refused;
      log::warn("PF_KEY client pid {} uid {} gid {} refused: {}", cred.pid, cred.uid, cred.gid,
                allowed ? "too many clients" : "neither root nor in the PF_KEY group");
      continue;
    }
    adoptClient(std::move(fd), cred.uid, cred.pid);
  }
  armAccept();
}

std::uint64_t Server::adoptClient(UniqueFd fd, uid_t uid, pid_t pid) {
  const std::uint64_t id = nextClientId_++;
  auto c = std::make_unique<Client>(io_, fd.release());
  c->id = id;
  c->uid = uid;
  c->pid = pid;
  c->socket.non_blocking(true);
  // Every datagram then says which process sent it: a sync's channel must be
  // that process's own (isOwnChannel).
  const int on = 1;
  if (::setsockopt(c->socket.native_handle(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) {
    log::warn("PF_KEY client {}: SO_PASSCRED: {} (its syncs will be refused)", id, std::strerror(errno));
  }
  Client& ref = *c;
  clients_.emplace(id, std::move(c));
  ++counters_.pfkey_clients_accepted;
  log::debug("PF_KEY client {} connected (pid {}, uid {})", id, pid, uid);
  armRead(ref);
  return id;
}

Server::Client* Server::findClient(std::uint64_t id) noexcept {
  auto it = clients_.find(id);
  return it == clients_.end() ? nullptr : it->second.get();
}

void Server::removeClient(std::uint64_t id) {
  log::debug("PF_KEY client {} gone", id);
  clients_.erase(id);  // closes the socket; its pending waits end as aborted
}

// ---- receiving ------------------------------------------------------------------

void Server::armRead(Client& c) {
  std::weak_ptr<int> alive = alive_;
  const std::uint64_t id = c.id;
  c.socket.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                      [this, alive, id](const boost::system::error_code& ec) {
                        if (alive.expired() || ec || stopped_) return;
                        onReadable(id);
                      });
}

void Server::onReadable(std::uint64_t id) {
  auto* rx = reinterpret_cast<std::uint8_t*>(rx_.get());
  constexpr std::size_t kSlotBytes = kRxWords * sizeof(std::uint64_t);
  // The requests of this burst go to keydb in sendmmsg batches, not one
  // sendmsg each; the replies to clients likewise (SendHold).
  control::SendBatch batch;
  SendHold hold(*this);
  std::array<mmsghdr, kRxSlots> msgs;
  std::array<iovec, kRxSlots> iovs;
  alignas(cmsghdr) std::array<std::array<char, kRxControlBytes>, kRxSlots> controls;
  for (std::size_t done = 0; done < kReadBurst;) {
    Client* c = findClient(id);
    if (!c) return;
    if (c->marksAwaited != 0) {  // resumeClient reads on
      c->readPaused = true;
      return;
    }
    const std::size_t want = std::min(kRxSlots, kReadBurst - done);
    for (std::size_t i = 0; i < want; ++i) {
      iovs[i] = iovec{rx + i * kSlotBytes, kSlotBytes};
      msgs[i] = mmsghdr{};
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = controls[i].data();
      msgs[i].msg_hdr.msg_controllen = controls[i].size();
    }
    // MSG_TRUNC makes the kernel report each datagram's real length.
    const int n = ::recvmmsg(c->socket.native_handle(), msgs.data(), static_cast<unsigned>(want),
                             MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC, nullptr);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      removeClient(id);
      return;
    }
    const std::size_t got = static_cast<std::size_t>(n);
    rxSlotsUsed_ = std::max(rxSlotsUsed_, got);
    for (std::size_t i = 0; i < got; ++i) {
      std::uint8_t* slot = rx + i * kSlotBytes;
      const std::size_t len = msgs[i].msg_len;
      // End of stream (a zero-length datagram is no PF_KEY message either),
      // or the client went away while this burst was handled: wipe the rest,
      // and close the descriptors the rest carried (ours: the kernel gave
      // them to this process when recvmmsg returned).
      if (len == 0 || !findClient(id)) {
        for (std::size_t j = i; j < got; ++j) {
          explicit_bzero(rx + j * kSlotBytes, std::min<std::size_t>(msgs[j].msg_len, kSlotBytes));
          pid_t ignored = 0;
          (void)takeDescriptors(msgs[j].msg_hdr, ignored);
        }
        if (len == 0) removeClient(id);
        return;
      }
      const bool truncated = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0 || len > pfkey::kMaxMessageBytes;
      const std::span<std::uint8_t> datagram(slot, std::min(len, kSlotBytes));
      // Descriptors are only welcome in the preload's sync; others are closed here.
      pid_t sender = 0;
      std::vector<UniqueFd> fds = takeDescriptors(msgs[i].msg_hdr, sender);
      Client* from = findClient(id);
      if (!truncated && isSync(datagram)) {
        takeSync(*from, headerOf(datagram).sadb_msg_seq, std::move(fds), sender);
        continue;
      }
      ++from->requests;
      if (from->marksAwaited != 0) {
        from->stalled.emplace_back(std::vector<std::uint8_t>(datagram.begin(), datagram.end()), truncated);
        explicit_bzero(datagram.data(), datagram.size());
        continue;
      }
      handleDatagram(id, datagram, truncated);
    }
    done += got;
    if (got < want) break;  // drained: no need for a call that says EAGAIN
  }
  if (Client* c = findClient(id)) armRead(*c);
}

void Server::resumeClient(std::uint64_t id) {
  for (;;) {
    Client* c = findClient(id);
    if (!c || c->marksAwaited != 0) return;
    if (c->stalled.empty()) break;
    Client::StalledDatagram d = std::move(c->stalled.front());
    c->stalled.pop_front();
    handleDatagram(id, d.bytes, d.truncated);
  }
  Client* c = findClient(id);
  if (c && c->readPaused) {
    c->readPaused = false;
    armRead(*c);
  }
}

void Server::takeSync(Client& c, PfkeyAck token, std::vector<UniqueFd> fds, pid_t sender) {
  if (c.syncs.size() >= kPfkeyAckMaxSyncs || !isOwnChannel(fds, sender)) {
    ++counters_.pfkey_syncs_refused;
    return;  // closes what came with it; the sender's wait runs out
  }
  c.syncs.push_back(Client::Sync{token, std::move(fds[0]), c.requests});
}

void Server::handleDatagram(std::uint64_t clientId, std::span<std::uint8_t> datagram, bool truncated) noexcept {
  Client* c = findClient(clientId);
  if (c) ++c->handled;
  ++counters_.pfkey_requests;
  const sadb_msg header = headerOf(datagram);
  try {
    if (truncated) {
      ++counters_.pfkey_truncated;
      replyError(c, header, EMSGSIZE);
    } else {
      auto parsed = pfkey::parse(datagram);
      if (auto* err = std::get_if<pfkey::ParseError>(&parsed)) {
        stats::drop(counters_.pfkey_malformed, "malformed PF_KEY message from client {}: {} (ext {}, offset {})",
                    clientId, err->reason, err->extType, err->offset);
        replyError(c, header, err->errnum);
      } else {
        const auto& m = std::get<pfkey::ParsedMessage>(parsed);
        ++pfkeyInByType_[m.msg().sadb_msg_type];
        promiscuousCopy(m);
        dispatch(c, m);
      }
    }
  } catch (const std::exception& e) {
    log::warn("PF_KEY request from client {} failed: {}", clientId, e.what());
    try {
      replyError(c, header, ENOBUFS);
    } catch (...) {
    }
  }
  // The datagram may hold keys (ADD/UPDATE): wipe it whatever happened.
  if (!datagram.empty()) explicit_bzero(datagram.data(), datagram.size());
}

void Server::dispatch(Client* c, const pfkey::ParsedMessage& m) {
  if (pfkeyDebug_) {
    log::info("PF_KEY {} satype {} seq {} pid {} from client {} ({} bytes)",
              pfkey::messageTypeName(m.msg().sadb_msg_type), m.msg().sadb_msg_satype, m.msg().sadb_msg_seq,
              m.msg().sadb_msg_pid, c ? c->id : 0, m.bytes().size());
  }
  int err = EOPNOTSUPP;
  switch (m.msg().sadb_msg_type) {
    case SADB_GETSPI: err = onGetSpi(c, m); break;
    case SADB_ADD:
    case SADB_UPDATE: err = onAddOrUpdate(c, m); break;
    case SADB_DELETE:
    case SADB_GET: err = onDeleteOrGet(c, m); break;
    case SADB_REGISTER: err = onRegister(c, m); break;
    case SADB_FLUSH: err = onFlush(c, m); break;
    case SADB_DUMP: err = dumping(c) ? EBUSY : onDump(c, m); break;
    case SADB_X_PROMISC: err = onPromisc(c, m); break;
    case SADB_X_SPDADD:
    case SADB_X_SPDSETIDX:  // as Linux: an SPDADD (KAME's index-only form is not kept)
    case SADB_X_SPDUPDATE: err = onSpdAddOrUpdate(c, m); break;
    case SADB_X_SPDDELETE: err = onSpdDelete(c, m); break;
    case SADB_X_SPDGET:
    case SADB_X_SPDDELETE2: err = onSpdGetOrDelete2(c, m); break;
    case SADB_X_SPDDUMP: err = dumping(c) ? EBUSY : onSpdDump(c, m); break;
    case SADB_X_SPDFLUSH: err = onSpdFlush(c, m); break;
    case SADB_X_MIGRATE: err = onMigrate(c, m); break;
    // ACQUIRE, EXPIRE, X_SPDEXPIRE and X_NAT_T_NEW_MAPPING flow from us to key
    // managers; X_PCHANGE and X_SPDACQUIRE are not served (EOPNOTSUPP).
    default: break;
  }
  if (err != 0) replyError(c, m.msg(), err);
}

// ---- sending --------------------------------------------------------------------

void Server::replyError(Client* c, const sadb_msg& request, int errnum) {
  ++counters_.pfkey_errors;
  deliver(pfkey::Builder::errorReply(request, static_cast<std::uint8_t>(errnum)), Audience::kOne, c);
}

void Server::deliver(std::vector<std::uint8_t> bytes, Audience to, Client* one) {
  deliver(std::make_shared<const OutMessage>(std::move(bytes)), to, one);
}

void Server::deliver(const OutPtr& m, Audience to, Client* one) {
  std::size_t receivers = 0;
  for (auto& [id, cp] : clients_) {
    Client& c = *cp;
    // As Linux: a promiscuous socket gets a copy of everything, and a second
    // one if it is also a receiver in its own right.
    if (c.promiscuous) enqueue(c, m);
    if (&c == one) continue;
    if (to == Audience::kAll || (to == Audience::kRegistered && c.registered != 0)) {
      enqueue(c, m);
      ++receivers;
    }
  }
  if (one) {
    enqueue(*one, m);
    ++receivers;
  }
  if (receivers > 1) ++counters_.pfkey_broadcasts;
}

void Server::promiscuousCopy(const pfkey::ParsedMessage& m) {
  const bool anyone = std::any_of(clients_.begin(), clients_.end(), [](const auto& e) { return e.second->promiscuous; });
  if (!anyone) return;
  // The raw request minus its key extensions (see server.h on key material).
  // parse() accepted the framing, so the walk below stays in bounds.
  auto in = m.bytes();
  std::vector<std::uint8_t> out(in.begin(), in.begin() + sizeof(sadb_msg));
  for (std::size_t off = sizeof(sadb_msg); off + sizeof(sadb_ext) <= in.size();) {
    sadb_ext e;
    std::memcpy(&e, in.data() + off, sizeof e);
    const std::size_t len = std::size_t{e.sadb_ext_len} * 8;
    if (len == 0 || off + len > in.size()) break;
    if (e.sadb_ext_type != SADB_EXT_KEY_AUTH && e.sadb_ext_type != SADB_EXT_KEY_ENCRYPT) {
      out.insert(out.end(), in.begin() + off, in.begin() + off + len);
    }
    off += len;
  }
  sadb_msg h = m.msg();
  h.sadb_msg_len = static_cast<std::uint16_t>(out.size() / 8);
  std::memcpy(out.data(), &h, sizeof h);
  auto msg = std::make_shared<const OutMessage>(std::move(out));
  for (auto& [id, c] : clients_) {
    if (c->promiscuous) enqueue(*c, msg);
  }
}

void Server::enqueue(Client& c, const OutPtr& m) {
  auto bytes = m->bytes();
  // Held messages were never offered to the socket: offer them before the
  // queue bounds could drop this one, and every kSendBatch messages.
  if (c.held && (c.queue.size() >= kSendBatch || c.queue.size() >= options_.maxQueuedMessages ||
                 c.queuedBytes + bytes.size() > options_.maxQueuedBytes)) {
    releaseHeld(c);
  }
  if (c.queue.empty()) {
    if (options_.maxQueuedMessages > 0 && bytes.size() <= options_.maxQueuedBytes) {
      // Held until the burst ends (flushHeld), then sent with the rest.
      c.held = true;
      heldClients_.push_back(c.id);
      if (holdDepth_ == 0 && !flushPosted_) {
        flushPosted_ = true;
        std::weak_ptr<int> alive = alive_;
        boost::asio::post(io_, [this, alive] {
          if (!alive.expired()) flushHeld();
        });
      }
    } else {
      // Could never be queued: offered now, dropped if refused (as always).
      const ssize_t n = ::send(c.socket.native_handle(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0) return;
      if (errno != EAGAIN && errno != ENOBUFS && errno != EINTR) {
        ++counters_.pfkey_send_failed;  // the client is going away; its read side notices
      } else {
        ++counters_.pfkey_enobufs;
      }
      return;
    }
  } else if (!c.held) {
    // The socket refused earlier messages: the queue bounds apply.
    if (c.queue.size() >= options_.maxQueuedMessages || c.queuedBytes + bytes.size() > options_.maxQueuedBytes) {
      ++counters_.pfkey_enobufs;
      return;
    }
  }
  c.queue.push_back(m);
  c.queuedBytes += bytes.size();
  if (!c.held) armWrite(c);
}

Server::SendHold::~SendHold() {
  if (--s_.holdDepth_ == 0) s_.flushHeld();
}

void Server::flushHeld() noexcept {
  flushPosted_ = false;
  // releaseHeld does not hold anything new, so the list is stable here.
  for (std::size_t i = 0; i < heldClients_.size(); ++i) {
    if (Client* c = findClient(heldClients_[i]); c && c->held) releaseHeld(*c);
  }
  heldClients_.clear();
  sendAcks();
}

void Server::sendAcks() noexcept {
  for (auto& [id, cp] : clients_) {
    Client& c = *cp;
    if (c.syncs.empty() || c.syncs.front().after > c.handled) continue;
    // A SAD request still with keydb: its answer may not be there yet.
    if (std::any_of(pending_.begin(), pending_.end(), [&](const auto& p) { return p.second.clientId == c.id; })) {
      continue;
    }
    // Queued answers (a dump's first entries, a socket that was full) are
    // offered now, not at the next writability event, so that they are on
    // the socket before the acknowledgement says so.
    if (!c.queue.empty() && !c.held) {
      while (sendQueued(c) && !c.dumpBacklog.empty()) refillFromBacklog(c);
      if (!c.queue.empty()) armWrite(c);
    }
    while (!c.syncs.empty() && c.syncs.front().after <= c.handled) {
      const Client::Sync& sync = c.syncs.front();
      // Never blocks; a channel that is full or whose reader is gone loses
      // this acknowledgement (the sender's wait is bounded).
      (void)::send(sync.channel.get(), &sync.token, sizeof sync.token, MSG_DONTWAIT | MSG_NOSIGNAL);
      c.syncs.pop_front();  // closes the service's copy of the channel
    }
  }
}

void Server::releaseHeld(Client& c) noexcept {
  c.held = false;
  if (!sendQueued(c)) armWrite(c);
}

void Server::deliverDump(Client* c, std::vector<std::uint8_t> bytes) {
  if (!c) return;
  auto m = std::make_shared<const OutMessage>(std::move(bytes));
  // Promiscuous sockets see dump entries as they see any message.
  for (auto& [id, other] : clients_) {
    if (other.get() != c && other->promiscuous) enqueue(*other, m);
  }
  // Entries are queued, not sent one send() each: onWritable hands them to
  // the kernel in sendmmsg batches (a dump is a burst of small datagrams).
  if (c->dumpBacklog.empty() && c->queue.size() < options_.maxQueuedMessages / 2) {
    appendToQueue(*c, std::move(m));
  } else {
    c->dumpBacklog.push_back(std::move(m));
  }
}

void Server::appendToQueue(Client& c, OutPtr m) {
  c.queuedBytes += m->bytes().size();
  c.queue.push_back(std::move(m));
  armWrite(c);
}

void Server::refillFromBacklog(Client& c) {
  while (!c.dumpBacklog.empty() && c.queue.size() < options_.maxQueuedMessages / 2) {
    OutPtr m = std::move(c.dumpBacklog.front());
    c.dumpBacklog.pop_front();
    c.queuedBytes += m->bytes().size();
    c.queue.push_back(std::move(m));
  }
}

void Server::armWrite(Client& c) {
  if (c.writeArmed) return;
  c.writeArmed = true;
  std::weak_ptr<int> alive = alive_;
  const std::uint64_t id = c.id;
  c.socket.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                      [this, alive, id](const boost::system::error_code& ec) {
                        if (alive.expired() || ec) return;
                        onWritable(id);
                      });
}

bool Server::sendQueued(Client& c) {
  std::array<mmsghdr, kSendBatch> msgs;
  std::array<iovec, kSendBatch> iovs;
  while (!c.queue.empty()) {
    const std::size_t n = std::min(c.queue.size(), kSendBatch);
    for (std::size_t i = 0; i < n; ++i) {
      auto bytes = c.queue[i]->bytes();
      iovs[i] = iovec{const_cast<std::uint8_t*>(bytes.data()), bytes.size()};
      msgs[i] = mmsghdr{};
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    const int sent = ::sendmmsg(c.socket.native_handle(), msgs.data(), static_cast<unsigned>(n),
                                MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0 && (errno == EAGAIN || errno == ENOBUFS || errno == EINTR)) return false;
    // A hard error is the first datagram's: count it and drop it, as send() did.
    const std::size_t done = sent < 0 ? 1 : static_cast<std::size_t>(sent);
    if (sent < 0) ++counters_.pfkey_send_failed;
    for (std::size_t i = 0; i < done; ++i) {
      c.queuedBytes -= c.queue.front()->bytes().size();
      c.queue.pop_front();
    }
  }
  return true;
}

void Server::onWritable(std::uint64_t id) {
  SendHold hold(*this);  // what reaches the socket now may complete an acknowledgement
  Client* c = findClient(id);
  if (!c) return;
  c->writeArmed = false;
  c->held = false;  // every queued message is offered below
  while (sendQueued(*c) && !c->dumpBacklog.empty()) refillFromBacklog(*c);
  if (!c->queue.empty()) armWrite(*c);
}

// ---- sysctls -----------------------------------------------------------------------

void Server::setSysctl(std::string_view name, std::int64_t value) {
  auto clamp = [&](std::int64_t lo, std::int64_t hi) { return std::clamp<std::int64_t>(value, lo, hi); };
  if (name == "net.inet.ipsec.allow_legacy") allowLegacy_ = value != 0;
  else if (name == "net.key.larval_lifetime") {
    larvalLifetime_ = static_cast<std::uint64_t>(clamp(1, 86400));
    armTick();  // every larval state's end moved
  }
  else if (name == "net.key.blockacq_count") blockacqCount_ = static_cast<std::uint64_t>(clamp(0, 1 << 30));
  else if (name == "net.key.blockacq_lifetime") blockacqLifetime_ = static_cast<std::uint64_t>(clamp(1, 86400));
  else if (name == "net.key.spi_minval") spiMin_ = static_cast<std::uint32_t>(clamp(0, 0xffffffff));
  else if (name == "net.key.spi_maxval") spiMax_ = static_cast<std::uint32_t>(clamp(0, 0xffffffff));
  else if (name == "net.key.debug") pfkeyDebug_ = value != 0;
}

// ---- stats -----------------------------------------------------------------------

void Server::fillStats(proto::Stats::Builder out) const {
  Counters now = counters_;
  now.pfkey_clients = clients_.size();
  now.pfkey_acquires_pending = acquires_.size();
  now.sad_requests_pending = pending_.size();
  now.spd_policies = spd_.size();
  // After the list: pfkey_in_<message type>, for each type received.
  std::vector<std::pair<std::string, std::uint64_t>> received;
  for (std::size_t t = 1; t < pfkeyInByType_.size(); ++t) {
    if (pfkeyInByType_[t] == 0) continue;
    std::string name = std::string("pfkey_in_") + pfkey::messageTypeName(static_cast<std::uint8_t>(t));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
    received.emplace_back(std::move(name), pfkeyInByType_[t]);
  }
  auto list = stats::fillCounters(out, now, static_cast<unsigned>(received.size()));
  unsigned i = static_cast<unsigned>(std::size(Counters::kInfo));
  for (const auto& [name, value] : received) {
    list[i].setName(name);
    list[i++].setValue(value);
  }
}

}  // namespace ipsec::policy
