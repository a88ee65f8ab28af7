// ipsec-keydb: which way this host uses each SA (DESIGN §3, nonce safety; the
// rule is proto/sad.capnp OutboundTemplate's). policy, which holds the SPD,
// sends the templates of every outbound IPsec policy it stores; keydb marks
// the SAs they cover outbound and tells the broker, which seals only under
// outbound sessions. When policy asks for an answer, keydb follows the marks
// with a barrier on the broker's channel and answers once the broker echoes
// it: the broker handles its channel in order, so the echo means every mark
// is applied, and only then does policy give the forwarder the policy. The templates come from policy (our process, trusted to
// be well-formed only as far as capnp's limits go): a template of a bad
// address size covers nothing.
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>

#include "control/scratch_builder.h"
#include "keydb.h"
#include "log/log.h"

namespace ipsec::keydb {
namespace {

// Are the first `prefix` bits of `a` those of `net`? (Both 4 or 16 bytes.)
bool inPrefix(capnp::Data::Reader a, capnp::Data::Reader net, unsigned prefix) {
  if (a.size() != net.size() || prefix > a.size() * 8) return false;
  const unsigned whole = prefix / 8, rest = prefix % 8;
  for (unsigned i = 0; i < whole; ++i) {
    if (a[i] != net[i]) return false;
  }
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (net[whole] & mask);
}

}  // namespace

bool templateCovers(proto::OutboundTemplate::Reader t, proto::SaParams::Reader p) {
  if (t.getSatype() != p.getSatype()) return false;
  if (p.getMode() != IPSEC_MODE_ANY && p.getMode() != t.getMode()) return false;
  if (t.getReqid() != 0 && t.getReqid() != p.getReqid()) return false;
  return inPrefix(p.getSrc(), t.getSrc(), t.getSrcPrefix()) && inPrefix(p.getDst(), t.getDst(), t.getDstPrefix());
}

bool Keydb::markOutbound(std::uint64_t requestId, capnp::List<proto::OutboundTemplate>::Reader templates) {
  auto covered = [&](const Sa& sa) {
    for (auto t : templates) {
      if (templateCovers(t, sa.p())) return true;
    }
    return false;
  };
  for (Sa* sa : sad_.all()) {
    // An UPDATE's old SA still seals in the broker under its own ref until
    // its successor is installed.
    if (sa->replaced && covered(*sa->replaced)) setOutbound(*sa->replaced);
    if (covered(*sa)) setOutbound(*sa);
  }
  if (requestId == 0) return true;  // policy does not wait (sad.capnp)
  // The barrier goes even when this request marked nothing new: a mark an
  // earlier request made may still be on its way to the broker, and this
  // policy may name the same SA.
  if (!crypto_ || !crypto_->isOpen()) return answerMark(requestId), true;
  if (awaitedMarks_.size() >= kMaxAwaitedMarks) {
    log::error("ipsec-policy has more than {} outbound marks awaiting the broker", kMaxAwaitedMarks);
    return false;
  }
  const std::uint64_t token = nextBarrierToken_++;
  control::ScratchMessageBuilder<16> b;
  b.initRoot<proto::KeydbToCrypto>().setBarrier(token);
  if (crypto_->send(b) == control::Channel::SendResult::kClosed) return answerMark(requestId), true;
  awaitedMarks_.push_back({token, requestId});
  ++counters_.outbound_marks_awaited_broker;
  return true;
}

bool Keydb::onBarrierEcho(std::uint64_t token) {
  if (awaitedMarks_.empty() || awaitedMarks_.front().token != token) {
    log::error("ipsec-crypto echoed barrier {}, which is not the one awaited", token);
    return false;
  }
  const std::uint64_t requestId = awaitedMarks_.front().requestId;
  awaitedMarks_.pop_front();
  answerMark(requestId);
  return true;
}

void Keydb::answerAwaitedMarks() {
  while (!awaitedMarks_.empty()) {
    const std::uint64_t requestId = awaitedMarks_.front().requestId;
    awaitedMarks_.pop_front();
    answerMark(requestId);
  }
}

void Keydb::answerMark(std::uint64_t requestId) {
  control::ScratchMessageBuilder<16> b;
  b.initRoot<proto::KeydbToPolicy>().setOutboundMarked(requestId);
  policy_->send(b);
}

void Keydb::setOutbound(Sa& sa) {
  // GETSPI's SAs stay inbound (the host asked for that SPI to receive on),
  // outbound ones are so already: one setDirection per SA at most.
  if (sa.direction != proto::Direction::UNKNOWN) return;
  sa.direction = proto::Direction::OUTBOUND;
  ++counters_.sas_marked_outbound;
  if (debug_) log::info("SA SPI {:#x}: outbound", sa.p().getSpi());
  // Every keyed SA's session hears of it: one the broker has, or is creating
  // (a CreateSession already sent on this channel, also after a data-plane
  // restart), takes it in order behind that CreateSession; the broker ignores
  // a ref it has no session for, and any later CreateSession carries the
  // direction. (Judging by sessionReady/pendingAdd missed the sessions
  // re-created for a restarted data plane: they sealed nothing until rekey.)
  if (sa.larval() || sa.p().getSatype() == SADB_X_SATYPE_IPCOMP || !crypto_ || !crypto_->isOpen()) return;
  control::ScratchMessageBuilder<> b;
  auto d = b.initRoot<proto::KeydbToCrypto>().initSetDirection();
  auto ref = d.initSa();
  ref.setIndex(sa.ref.index);
  ref.setGeneration(sa.ref.generation);
  d.setDirection(proto::Direction::OUTBOUND);
  crypto_->send(b);
}

}  // namespace ipsec::keydb
