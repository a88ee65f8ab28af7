// libFuzzer target: arbitrary datagrams from a PF_KEY client into
// ipsec-policy's dispatcher (Server::handleDatagram), the one place where
// untrusted local bytes enter the process that briefly holds keys, and
// those of a preload sync's size through the client socket as well (the
// sync is recognised on reading, Server::onReadable).
//
// Input format: a sequence of datagrams, each a 2-byte little-endian length
// followed by that many bytes (a short tail is one last datagram). Each input
// runs against a fresh Server with real socketpairs for the client, keydb and
// the forwarder, built once; each input gets a fresh client socket and ends
// with an SPDFLUSH, so inputs do not see each other's state. keydb's end
// answers every request with ESRCH so reply handling runs too. Seeds (corpus/) are messages setkey and charon sent,
// split from ../shared/pfkey-corpus.
#include <utility>  // before asio

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "control/wire.h"
#include "log/log.h"
#include "proto/pfkey_ack.h"
#include "proto/sad.capnp.h"
#include "server.h"

using namespace ipsec;

namespace {

void drain(int fd) {
  std::uint8_t buf[70000];
  while (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
  }
}

void answerKeydb(int fd) {
  control::Inbox inbox(fd, 64 * 1024);  // policy's channel coalesces a burst
  for (;;) {
    auto m = inbox.receive(0);
    if (!m.reader) return;
    capnp::MallocMessageBuilder b;
    // markOutbound (an outbound policy's templates) is answered as keydb
    // does once the broker has the marks; a SadReply would close the channel.
    if (m.reader->getRoot<proto::PolicyToKeydb>().which() == proto::PolicyToKeydb::MARK_OUTBOUND) {
      const std::uint64_t id = m.reader->getRoot<proto::PolicyToKeydb>().getRequestId();
      if (id == 0) continue;  // keydb answers none without an id
      b.initRoot<proto::KeydbToPolicy>().setOutboundMarked(id);
      control::sendMessage(fd, b);
      continue;
    }
    auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
    r.setRequestId(m.reader->getRoot<proto::PolicyToKeydb>().getRequestId());
    r.setErrno(ESRCH);
    control::sendMessage(fd, b);
  }
}

void poll(boost::asio::io_context& io) {
  for (int i = 0; i < 8; ++i) {
    io.restart();
    if (io.poll() == 0) break;
  }
}

}  // namespace

struct World {
  boost::asio::io_context io;
  control::UniqueFd keydbPeer, fwdPeer;
  std::unique_ptr<policy::Server> server;
  World() {
    log::setRole("policy-fuzz");
    auto [keydbServer, keydbEnd] = control::makeSeqpacketPair();
    auto [fwdServer, fwdEnd] = control::makeSeqpacketPair();
    keydbPeer = std::move(keydbEnd);
    fwdPeer = std::move(fwdEnd);
    policy::ServerOptions options;
    options.onPeerLost = [](std::string_view) {};
    server = std::make_unique<policy::Server>(io, control::UniqueFd(), std::move(keydbServer), std::move(fwdServer),
                                              options);
    server->start();
  }
};

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World w;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  control::UniqueFd client(sv[1]);
  const std::uint64_t id = w.server->adoptClient(control::UniqueFd(sv[0]), 0, 1);

  std::vector<std::uint8_t> datagram;
  auto feed = [&] {
    // A datagram of the preload sync's size also goes through the client's
    // socket: the sync is recognised there (Server::onReadable, isSync and
    // takeSync), before handleDatagram; without a descriptor it is refused.
    if (datagram.size() == kPfkeyAckSyncLen) {
      (void)::send(client.get(), datagram.data(), datagram.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      poll(w.io);
    }
    // handleDatagram wipes what it was given; libFuzzer's input is const, hence the copy.
    w.server->handleDatagram(id, datagram, false);
    poll(w.io);
    answerKeydb(w.keydbPeer.get());
    poll(w.io);
    drain(client.get());
    drain(w.fwdPeer.get());
  };
  for (std::size_t off = 0; off < size;) {
    std::size_t len = size - off;
    if (len >= 2) {
      len = std::min<std::size_t>(data[off] | (std::size_t{data[off + 1]} << 8), size - off - 2);
      off += 2;
    }
    datagram.assign(data + off, data + off + len);
    off += len;
    feed();
  }
  sadb_msg flush{};
  flush.sadb_msg_version = PF_KEY_V2;
  flush.sadb_msg_type = SADB_X_SPDFLUSH;
  flush.sadb_msg_len = 2;
  datagram.assign(reinterpret_cast<const std::uint8_t*>(&flush), reinterpret_cast<const std::uint8_t*>(&flush) + 16);
  feed();
  client.reset();
  poll(w.io);  // the server sees the close and forgets the client
  return 0;
}
