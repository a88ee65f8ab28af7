// SA messages through the PF_KEY server: what keydb is asked (exact keys,
// host-order SPI, addresses) and what clients get back, with the test
// answering on keydb's end of the channel with real SadReply messages.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/ipsec.h>

#include <algorithm>
#include <cerrno>

#include "harness.h"

namespace ipsec::policy::test {
namespace {

const std::uint8_t kEncKey[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                  0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
const std::uint8_t kAuthKey[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};

Bytes addRequest(std::uint8_t type = SADB_ADD, std::uint8_t enc = SADB_X_EALG_AESCBC, std::uint32_t seq = 1) {
  pfkey::Builder b(type, SADB_SATYPE_ESP, seq, 4242);
  // setkey puts keys before the SA extension.
  b.key(SADB_EXT_KEY_ENCRYPT, 128, kEncKey);
  b.key(SADB_EXT_KEY_AUTH, 160, kAuthKey);
  b.sa({0x1001, 32, SADB_SASTATE_MATURE, SADB_AALG_SHA1HMAC, enc, 0x40});
  b.sa2(IPSEC_MODE_TUNNEL, 7);
  b.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255);
  b.address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  b.lifetime(SADB_EXT_LIFETIME_HARD, 0, 0, 3600, 0);
  b.lifetime(SADB_EXT_LIFETIME_SOFT, 0, 0, 3000, 0);
  return b.finish();
}

Bytes nameRequest(std::uint8_t type, std::uint32_t spi = 0x1001) {
  pfkey::Builder b(type, SADB_SATYPE_ESP, 2, 4242);
  b.sa({spi, 0, SADB_SASTATE_LARVAL, 0, 0, 0});
  b.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255);
  b.address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  return b.finish();
}

// keydb's record of the SA above, as keydb.cpp fills it.
void fillRecord(proto::SaRecord::Builder r, bool withKeys) {
  auto p = r.initParams();
  p.setSatype(SADB_SATYPE_ESP);
  p.setSpi(0x1001);
  const std::uint8_t src[] = {192, 0, 2, 1}, dst[] = {192, 0, 2, 2};
  p.setSrc(capnp::Data::Reader(src, 4));
  p.setDst(capnp::Data::Reader(dst, 4));
  p.setMode(IPSEC_MODE_TUNNEL);
  p.setReqid(7);
  p.setEncAlg(SADB_X_EALG_AESCBC);
  p.setAuthAlg(SADB_AALG_SHA1HMAC);
  p.setEncKeyBits(128);
  p.setAuthKeyBits(160);
  p.setReplayWindow(32);
  p.setFlags(0x40);
  p.setState(SADB_SASTATE_MATURE);
  p.initHard().setAddTime(3600);
  p.initSoft().setAddTime(3000);
  if (withKeys) {
    r.initKeys().setEncrypt(capnp::Data::Reader(kEncKey, 16));
    r.getKeys().setAuth(capnp::Data::Reader(kAuthKey, 20));
  }
  auto c = r.initCurrent();
  c.setAddTime(1700000000);
  c.setUseTime(1700000100);
  c.setBytes(1500);
  c.setAllocations(3);
}

void answer(Harness& h, std::uint64_t id, int err, unsigned records, bool withKeys, bool more = false) {
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(id);
  r.setErrno(static_cast<std::uint16_t>(err));
  r.setMore(more);
  auto list = r.initSas(records);
  for (unsigned i = 0; i < records; ++i) fillRecord(list[i], withKeys);
  h.answerKeydb(b);
}

TEST(SaRequests, AddPassesExactKeysAndHostOrderSpiToKeydbAndBroadcastsWithoutKeys) {
  Harness h;
  auto c = h.connect();
  auto other = h.connect();
  c.send(addRequest());
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader) << req.error;
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  ASSERT_EQ(msg.which(), proto::PolicyToKeydb::ADD);
  auto add = msg.getAdd();
  EXPECT_FALSE(add.getUpdate());
  auto p = add.getParams();
  EXPECT_EQ(p.getSatype(), SADB_SATYPE_ESP);
  EXPECT_EQ(p.getSpi(), 0x1001u);
  EXPECT_EQ(p.getMode(), IPSEC_MODE_TUNNEL);
  EXPECT_EQ(p.getReqid(), 7u);
  EXPECT_EQ(p.getEncAlg(), SADB_X_EALG_AESCBC);
  EXPECT_EQ(p.getAuthAlg(), SADB_AALG_SHA1HMAC);
  EXPECT_EQ(p.getEncKeyBits(), 128);
  EXPECT_EQ(p.getAuthKeyBits(), 160);
  EXPECT_EQ(p.getReplayWindow(), 32u);
  EXPECT_FALSE(p.getEsn());
  EXPECT_EQ(p.getHard().getAddTime(), 3600u);
  EXPECT_EQ(p.getSoft().getAddTime(), 3000u);
  ASSERT_EQ(p.getDst().size(), 4u);
  EXPECT_EQ(p.getDst()[3], 2);
  auto keys = add.getKeys();
  ASSERT_EQ(keys.getEncrypt().size(), 16u);
  EXPECT_EQ(0, std::memcmp(keys.getEncrypt().begin(), kEncKey, 16));
  ASSERT_EQ(keys.getAuth().size(), 20u);
  EXPECT_EQ(0, std::memcmp(keys.getAuth().begin(), kAuthKey, 20));
  EXPECT_EQ(c.drain().size(), 0u);  // nothing until keydb answers

  answer(h, msg.getRequestId(), 0, 1, false);
  auto r = c.drain();
  auto ro = other.drain();
  ASSERT_EQ(r.size(), 1u);
  ASSERT_EQ(ro.size(), 1u);
  auto m = parsed(r[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_ADD);
  EXPECT_EQ(m.msg().sadb_msg_seq, 1u);
  EXPECT_EQ(m.msg().sadb_msg_pid, 4242u);
  ASSERT_TRUE(m.sa());
  EXPECT_EQ(ntohl(m.sa()->sadb_sa_spi), 0x1001u);
  EXPECT_EQ(m.sa()->sadb_sa_state, SADB_SASTATE_MATURE);
  EXPECT_EQ(m.sa()->sadb_sa_flags, 0u);  // KAME's CYCSEQ is not echoed, as Linux
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_HARD));
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_SOFT));
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_CURRENT));
  ASSERT_TRUE(m.sa2());
  EXPECT_EQ(m.sa2()->sadb_x_sa2_reqid, 7u);
  EXPECT_FALSE(m.has(SADB_EXT_KEY_ENCRYPT));
  EXPECT_FALSE(m.has(SADB_EXT_KEY_AUTH));
}

TEST(SaRequests, UpdateSetsTheUpdateFlag) {
  Harness h;
  auto c = h.connect();
  c.send(addRequest(SADB_UPDATE));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  EXPECT_TRUE(req.reader->getRoot<proto::PolicyToKeydb>().getAdd().getUpdate());
}

TEST(SaRequests, BadAddsAreRefusedBeforeKeydbIsAsked) {
  Harness h;
  auto c = h.connect();
  c.send(addRequest(SADB_ADD, SADB_EALG_3DESCBC));  // the broker has no 3DES
  pfkey::Builder noSa(SADB_ADD, SADB_SATYPE_ESP, 2, 1);
  noSa.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255).address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  c.send(noSa.finish());
  pfkey::Builder mixed(SADB_ADD, SADB_SATYPE_ESP, 3, 1);
  mixed.sa({0x1001, 0, SADB_SASTATE_MATURE, 0, SADB_EALG_NULL, 0});
  mixed.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255);
  mixed.address(SADB_EXT_ADDRESS_DST, pfkey::SockAddress::v6({0x20, 0x01, 0x0d, 0xb8}), 128, 255);
  c.send(mixed.finish());
  pfkey::Builder shortKey(SADB_ADD, SADB_SATYPE_ESP, 4, 1);
  shortKey.key(SADB_EXT_KEY_ENCRYPT, 64, kEncKey);
  shortKey.sa({0x1001, 0, SADB_SASTATE_MATURE, 0, SADB_X_EALG_AESCBC, 0});
  shortKey.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255).address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  c.send(shortKey.finish());
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, ENOSYS);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EINVAL);
  EXPECT_EQ(parsed(r[2]).msg().sadb_msg_errno, EINVAL);
  EXPECT_EQ(parsed(r[3]).msg().sadb_msg_errno, EINVAL);
  EXPECT_FALSE(h.keydbRequest(50).reader);
}

TEST(SaRequests, KeydbErrorsReachOnlyTheRequester) {
  Harness h;
  auto c = h.connect();
  auto other = h.connect();
  c.send(nameRequest(SADB_DELETE));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  ASSERT_EQ(msg.which(), proto::PolicyToKeydb::DELETE);
  EXPECT_EQ(msg.getDelete().getSpi(), 0x1001u);
  answer(h, msg.getRequestId(), ESRCH, 0, false);
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].size(), 16u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, ESRCH);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_seq, 2u);
  EXPECT_EQ(other.drain().size(), 0u);
}

// An ADD the broker refused for lack of locked key memory: keydb answers
// ENOMEM, which reaches the requester as such (not EINVAL), and no one else
// hears of an SA that does not exist.
TEST(SaRequests, AnAddKeydbAnswersEnomemIsEnomemForTheRequesterOnly) {
  Harness h;
  auto c = h.connect();
  auto other = h.connect();
  c.send(addRequest());
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  answer(h, req.reader->getRoot<proto::PolicyToKeydb>().getRequestId(), ENOMEM, 0, false);
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_type, SADB_ADD);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, ENOMEM);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_seq, 1u);
  EXPECT_EQ(other.drain().size(), 0u);
}

TEST(SaRequests, GetRepliesToTheRequesterWithKeysAndCurrentLifetime) {
  Harness h;
  auto c = h.connect();
  auto other = h.connect();
  c.send(nameRequest(SADB_GET));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  answer(h, req.reader->getRoot<proto::PolicyToKeydb>().getRequestId(), 0, 1, true);
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(other.drain().size(), 0u);
  auto m = parsed(r[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_GET);
  auto cur = m.lifetime(SADB_EXT_LIFETIME_CURRENT);
  ASSERT_TRUE(cur);
  EXPECT_EQ(cur->sadb_lifetime_bytes, 1500u);
  EXPECT_EQ(cur->sadb_lifetime_usetime, 1700000100u);
  auto enc = m.key(SADB_EXT_KEY_ENCRYPT);
  ASSERT_TRUE(enc);
  EXPECT_EQ(enc->bits, 128);
  EXPECT_EQ(0, std::memcmp(enc->bytes.data(), kEncKey, 16));
  auto auth = m.key(SADB_EXT_KEY_AUTH);
  ASSERT_TRUE(auth);
  EXPECT_EQ(auth->bits, 160);
}

TEST(SaRequests, DumpSendsOneMessagePerSaWithTheLastSeqZero) {
  Harness h;
  auto c = h.connect();
  c.send(header(SADB_DUMP, SADB_SATYPE_UNSPEC, 0, 555));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  ASSERT_EQ(msg.which(), proto::PolicyToKeydb::DUMP);
  answer(h, msg.getRequestId(), 0, 3, true);
  auto r = c.drain();
  ASSERT_EQ(r.size(), 3u);
  const std::uint32_t seqs[] = {1, 2, 0};
  for (int i = 0; i < 3; ++i) {
    auto m = parsed(r[i]);
    EXPECT_EQ(m.msg().sadb_msg_type, SADB_DUMP);
    EXPECT_EQ(m.msg().sadb_msg_satype, SADB_SATYPE_ESP);
    EXPECT_EQ(m.msg().sadb_msg_seq, seqs[i]);
    EXPECT_EQ(m.msg().sadb_msg_pid, 555u);
    EXPECT_TRUE(m.has(SADB_EXT_KEY_ENCRYPT));
  }
  c.send(header(SADB_DUMP, SADB_SATYPE_ESP, 0, 555));
  h.pump();
  req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  answer(h, req.reader->getRoot<proto::PolicyToKeydb>().getRequestId(), ENOENT, 0, false);
  r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, ENOENT);
}

// keydb answers a dump in chunks (SadReply.more); the client sees one
// numbering across them, the last entry of the last chunk seq 0, even when
// that chunk is empty (SAs deleted while the dump ran).
TEST(SaRequests, AChunkedDumpIsNumberedAcrossChunksWithTheLastSeqZero) {
  for (unsigned lastChunk : {2u, 0u}) {
    Harness h;
    auto c = h.connect();
    c.send(header(SADB_DUMP, SADB_SATYPE_UNSPEC, 0, 555));
    h.pump();
    auto req = h.keydbRequest();
    ASSERT_TRUE(req.reader);
    const auto id = req.reader->getRoot<proto::PolicyToKeydb>().getRequestId();
    answer(h, id, 0, 3, true, true);
    answer(h, id, 0, 0, true, true);
    std::vector<Bytes> got = c.drain();
    c.send(header(SADB_DUMP, SADB_SATYPE_UNSPEC, 0, 555));  // while chunks are still to come
    h.pump();
    answer(h, id, 0, lastChunk, true, false);
    for (auto& b : c.drain()) got.push_back(std::move(b));
    std::vector<std::uint32_t> seqs;
    unsigned busy = 0;
    for (const auto& b : got) {
      auto m = parsed(b);
      if (m.msg().sadb_msg_errno == EBUSY) {
        ++busy;
        continue;
      }
      EXPECT_EQ(m.msg().sadb_msg_type, SADB_DUMP);
      seqs.push_back(m.msg().sadb_msg_seq);
    }
    std::vector<std::uint32_t> want;
    for (unsigned i = 1; i < 3 + lastChunk; ++i) want.push_back(i);
    want.push_back(0);
    EXPECT_EQ(seqs, want) << "last chunk of " << lastChunk;
    EXPECT_EQ(busy, 1u);
    EXPECT_FALSE(h.keydbRequest(50).reader);  // the EBUSY dump never reached keydb
    // Once the last chunk is in, a new dump is accepted again.
    c.send(header(SADB_DUMP, SADB_SATYPE_UNSPEC, 0, 555));
    h.pump();
    EXPECT_TRUE(h.keydbRequest().reader);
  }
}

// A continued reply is only meaningful for a dump: anything else is a keydb
// that does not follow the protocol.
TEST(SaRequests, AContinuedReplyToAnythingButADumpClosesTheKeydbChannel) {
  bool lost = false;
  ServerOptions o;
  o.onPeerLost = [&](std::string_view) { lost = true; };
  Harness h(o);
  auto c = h.connect();
  c.send(header(SADB_FLUSH, SADB_SATYPE_ESP, 0, 8));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  answer(h, req.reader->getRoot<proto::PolicyToKeydb>().getRequestId(), 0, 1, false, true);
  h.pump();
  EXPECT_TRUE(lost);
  EXPECT_EQ(c.drain().size(), 0u);
}

TEST(SaRequests, FlushBroadcastsOnlyWhenSomethingWasFlushed) {
  Harness h;
  auto c = h.connect();
  auto other = h.connect();
  for (unsigned flushed : {0u, 2u}) {
    c.send(header(SADB_FLUSH, SADB_SATYPE_ESP, 0, 8));
    h.pump();
    auto req = h.keydbRequest();
    ASSERT_TRUE(req.reader);
    auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
    ASSERT_EQ(msg.which(), proto::PolicyToKeydb::FLUSH);
    EXPECT_EQ(msg.getFlush(), SADB_SATYPE_ESP);
    answer(h, msg.getRequestId(), 0, flushed, false);
    EXPECT_EQ(c.drain().size(), flushed ? 2u : 1u);
    EXPECT_EQ(other.drain().size(), flushed ? 1u : 0u);
  }
}

TEST(SaRequests, GetSpiAsksKeydbForTheRangeAndAnswersTheRequester) {
  Harness h;
  auto c = h.connect();
  auto other = h.connect();
  pfkey::Builder b(SADB_GETSPI, SADB_SATYPE_ESP, 1, 9);
  b.spirange(0xc0000000u, 0xcfffffffu);
  b.sa2(IPSEC_MODE_TRANSPORT, 11);
  b.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255).address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  c.send(b.finish());
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  ASSERT_EQ(msg.which(), proto::PolicyToKeydb::GET_SPI);
  EXPECT_EQ(msg.getGetSpi().getMin(), 0xc0000000u);
  EXPECT_EQ(msg.getGetSpi().getMax(), 0xcfffffffu);
  EXPECT_EQ(msg.getGetSpi().getReqid(), 11u);
  answer(h, msg.getRequestId(), 0, 1, false);
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(other.drain().size(), 0u);
  auto m = parsed(r[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_GETSPI);
  EXPECT_EQ(ntohl(m.sa()->sadb_sa_spi), 0x1001u);
  EXPECT_TRUE(m.has(SADB_EXT_ADDRESS_SRC));
  EXPECT_TRUE(m.has(SADB_EXT_ADDRESS_DST));
}

TEST(SaRequests, APromiscuousCopyOfAnAddCarriesNoKeys) {
  Harness h;
  auto watcher = h.connect();
  auto c = h.connect();
  watcher.send(header(SADB_X_PROMISC, 1));
  h.pump();
  watcher.drain();
  c.drain();
  c.send(addRequest());
  h.pump();
  auto copies = watcher.drain();
  ASSERT_EQ(copies.size(), 1u);
  auto m = parsed(copies[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_ADD);
  EXPECT_TRUE(m.sa());
  EXPECT_FALSE(m.has(SADB_EXT_KEY_ENCRYPT));
  EXPECT_FALSE(m.has(SADB_EXT_KEY_AUTH));
}

TEST(SaRequests, AnExpireFromKeydbReachesRegisteredSocketsWithTheHardLifetime) {
  Harness h;
  auto km = h.connect();
  auto other = h.connect();
  km.send(header(SADB_REGISTER, SADB_SATYPE_ESP));
  h.pump();
  km.drain();
  capnp::MallocMessageBuilder b;
  auto e = b.initRoot<proto::KeydbToPolicy>().initExpire();
  fillRecord(e.initRecord(), false);
  e.setHard(true);
  h.answerKeydb(b);
  auto r = km.drain();
  ASSERT_EQ(r.size(), 1u);
  auto m = parsed(r[0]);
  EXPECT_EQ(m.msg().sadb_msg_type, SADB_EXPIRE);
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_HARD));
  EXPECT_FALSE(m.has(SADB_EXT_LIFETIME_SOFT));
  EXPECT_TRUE(m.has(SADB_EXT_LIFETIME_CURRENT));
  EXPECT_EQ(other.drain().size(), 0u);
}

// A dump larger than a client's queue is paced by the client's reading, as
// Linux's pfkey_do_dump: every entry arrives, none is dropped as ENOBUFS.
TEST(SaRequests, ADumpLargerThanTheClientQueueArrivesWhole) {
  ServerOptions o;
  o.maxQueuedMessages = 64;
  Harness h(o);
  auto c = h.connect();
  c.send(header(SADB_DUMP, SADB_SATYPE_ESP, 7));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  constexpr unsigned kSas = 3000;
  answer(h, req.reader->getRoot<proto::PolicyToKeydb>().getRequestId(), 0, kSas, true);
  c.send(header(SADB_DUMP, SADB_SATYPE_ESP, 8));  // a second dump while one runs
  unsigned entries = 0, busy = 0;
  bool last = false;
  for (int rounds = 0; rounds < 10000 && !(last && busy); ++rounds) {
    h.pump();
    for (const auto& b : c.drain()) {
      auto m = parsed(b);
      if (m.msg().sadb_msg_errno == EBUSY) {
        ++busy;
        continue;
      }
      ASSERT_EQ(m.msg().sadb_msg_type, SADB_DUMP);
      ++entries;
      last = m.msg().sadb_msg_seq == 0;
    }
  }
  EXPECT_EQ(entries, kSas);
  EXPECT_TRUE(last);
  EXPECT_EQ(busy, 1u);
  EXPECT_EQ(h.stat("pfkey_enobufs"), 0u);
}

// ---- ESN and replay windows above 255 (lib/pfkey/message.h) -------------------

Bytes windowAdd(std::uint32_t window, bool esn, bool ext, std::uint8_t satype = SADB_SATYPE_ESP) {
  pfkey::Builder b(SADB_ADD, satype, 6, 4242);
  if (satype == SADB_SATYPE_ESP) {
    b.key(SADB_EXT_KEY_ENCRYPT, 128, kEncKey);
    b.key(SADB_EXT_KEY_AUTH, 160, kAuthKey);
  }
  b.sa({0x1001, std::uint8_t(std::min<std::uint32_t>(window, 255)), SADB_SASTATE_MATURE,
        std::uint8_t(satype == SADB_SATYPE_ESP ? SADB_AALG_SHA1HMAC : 0),
        std::uint8_t(satype == SADB_SATYPE_ESP ? SADB_X_EALG_AESCBC : SADB_X_CALG_DEFLATE),
        0x40u | (esn ? pfkey::kSaFlagEsn : 0u)});
  if (ext) b.saReplay(window);
  b.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255);
  b.address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  return b.finish();
}

TEST(SaRequests, EsnAndAWindowAbove255ReachKeydbAndComeBackTheSameWay) {
  Harness h;
  auto c = h.connect();
  c.send(windowAdd(4096, true, true));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader) << req.error;
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  auto p = msg.getAdd().getParams();
  EXPECT_EQ(p.getReplayWindow(), 4096u);
  EXPECT_TRUE(p.getEsn());

  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(msg.getRequestId());
  auto rec = r.initSas(1)[0];
  fillRecord(rec, false);
  rec.getParams().setReplayWindow(4096);
  rec.getParams().setEsn(true);
  h.answerKeydb(b);
  auto out = c.drain();
  ASSERT_EQ(out.size(), 1u);
  auto m = parsed(out[0]);
  EXPECT_EQ(m.sa()->sadb_sa_replay, 255);
  EXPECT_EQ(m.sa()->sadb_sa_flags, pfkey::kSaFlagEsn);
  ASSERT_TRUE(m.saReplay());
  EXPECT_EQ(*m.saReplay(), 4096u);
}

TEST(SaRequests, TheLargestWindowIsAcceptedAndOneMoreIsEinvalNeverClipped) {
  Harness h;
  auto c = h.connect();
  c.send(windowAdd(pfkey::kMaxReplayWindow + 1, false, true));
  c.send(windowAdd(1000, true, true, SADB_X_SATYPE_IPCOMP));  // IPComp has no sequence numbers
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, EINVAL);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EINVAL);
  EXPECT_FALSE(h.keydbRequest(50).reader);
  c.send(windowAdd(pfkey::kMaxReplayWindow, false, true));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  EXPECT_EQ(req.reader->getRoot<proto::PolicyToKeydb>().getAdd().getParams().getReplayWindow(),
            pfkey::kMaxReplayWindow);
}

TEST(SaRequests, EsnWithoutAReplayWindowIsEinval) {
  Harness h;
  auto c = h.connect();
  c.send(windowAdd(0, true, false));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, EINVAL);
  EXPECT_FALSE(h.keydbRequest(50).reader);
}

TEST(SaRequests, AWindowOf255OrLessUsesOnlyLinuxsFieldInTheReply) {
  Harness h;
  auto c = h.connect();
  c.send(windowAdd(200, false, false));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  EXPECT_EQ(msg.getAdd().getParams().getReplayWindow(), 200u);
  EXPECT_FALSE(msg.getAdd().getParams().getEsn());
  answer(h, msg.getRequestId(), 0, 1, false);  // the record says 32
  auto out = c.drain();
  ASSERT_EQ(out.size(), 1u);
  auto m = parsed(out[0]);
  EXPECT_EQ(m.sa()->sadb_sa_replay, 32);
  EXPECT_FALSE(m.has(pfkey::kExtSaReplay));
}

// ---- our SA_OPTIONS extension (per-SA tunnel options) ------------------------------

Bytes optionsAdd(const pfkey::SaOptions& o, std::uint8_t satype = SADB_SATYPE_ESP, bool v6 = false) {
  pfkey::Builder b(SADB_ADD, satype, 9, 4242);
  if (satype == SADB_SATYPE_ESP) {
    b.key(SADB_EXT_KEY_ENCRYPT, 128, kEncKey);
    b.key(SADB_EXT_KEY_AUTH, 160, kAuthKey);
  }
  b.sa({0x1001, 32, SADB_SASTATE_MATURE, std::uint8_t(satype == SADB_SATYPE_ESP ? SADB_AALG_SHA1HMAC : 0),
        std::uint8_t(satype == SADB_SATYPE_ESP ? SADB_X_EALG_AESCBC : SADB_X_CALG_DEFLATE), 0x40u});
  b.saOptions(o);
  if (v6) {
    b.address(SADB_EXT_ADDRESS_SRC, *pfkey::SockAddress::fromString("2001:db8:1::1"), 128, 255);
    b.address(SADB_EXT_ADDRESS_DST, *pfkey::SockAddress::fromString("2001:db8:1::2"), 128, 255);
  } else {
    b.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255);
    b.address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  }
  return b.finish();
}

TEST(SaRequests, TunnelOptionsReachKeydbAndComeBackInTheReply) {
  Harness h;
  auto c = h.connect();
  c.send(optionsAdd({pfkey::kSaDfCopy, 1400, 256, 100}));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader) << req.error;
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  auto p = msg.getAdd().getParams();
  EXPECT_EQ(p.getDfPolicy(), pfkey::kSaDfCopy);
  EXPECT_EQ(p.getMtu(), 1400);
  EXPECT_EQ(p.getTfcPad(), 256);
  EXPECT_EQ(p.getDummyInterval(), 100u);

  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(msg.getRequestId());
  auto rec = r.initSas(1)[0];
  fillRecord(rec, false);
  rec.getParams().setDfPolicy(pfkey::kSaDfSet);
  rec.getParams().setMtu(1300);
  h.answerKeydb(b);
  auto out = c.drain();
  ASSERT_EQ(out.size(), 1u);
  auto m = parsed(out[0]);
  ASSERT_TRUE(m.saOptions());
  EXPECT_EQ(*m.saOptions(), (pfkey::SaOptions{pfkey::kSaDfSet, 1300, 0, 0}));
}

TEST(SaRequests, NoTunnelOptionsInTheReplyWhenEveryFieldIsTheDefault) {
  Harness h;
  auto c = h.connect();
  c.send(addRequest());
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  answer(h, req.reader->getRoot<proto::PolicyToKeydb>().getRequestId(), 0, 1, false);
  auto out = c.drain();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(parsed(out[0]).has(pfkey::kExtSaOptions));
}

TEST(SaRequests, TunnelOptionsOnIpcompOrAnIpv6PathBelow1280AreEinval) {
  Harness h;
  auto c = h.connect();
  c.send(optionsAdd({pfkey::kSaDfSet, 0, 0, 0}, SADB_X_SATYPE_IPCOMP));
  c.send(optionsAdd({0, 1279, 0, 0}, SADB_SATYPE_ESP, true));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, EINVAL);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EINVAL);
  EXPECT_FALSE(h.keydbRequest(50).reader);
  c.send(optionsAdd({0, 1280, 0, 0}, SADB_SATYPE_ESP, true));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  EXPECT_EQ(req.reader->getRoot<proto::PolicyToKeydb>().getAdd().getParams().getMtu(), 1280);
}

// ---- IPComp ---------------------------------------------------------------------

Bytes ipcompAdd(std::uint32_t cpi, std::uint8_t calg, bool key) {
  pfkey::Builder b(SADB_ADD, SADB_X_SATYPE_IPCOMP, 8, 4242);
  if (key) b.key(SADB_EXT_KEY_ENCRYPT, 128, kEncKey);
  b.sa({cpi, 0, SADB_SASTATE_MATURE, 0, calg, 0x80});
  b.sa2(IPSEC_MODE_TUNNEL, 0);
  b.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255);
  b.address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  return b.finish();
}

TEST(SaRequests, IpcompTakesDeflateWithASixteenBitCpiAndNoKeys) {
  Harness h;
  auto c = h.connect();
  c.send(ipcompAdd(0x10000, SADB_X_CALG_DEFLATE, false));
  c.send(ipcompAdd(0x3001, SADB_X_CALG_DEFLATE, true));
  c.send(ipcompAdd(0x3001, SADB_X_CALG_LZS, false));
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(parsed(r[0]).msg().sadb_msg_errno, EINVAL);
  EXPECT_EQ(parsed(r[1]).msg().sadb_msg_errno, EINVAL);
  EXPECT_EQ(parsed(r[2]).msg().sadb_msg_errno, ENOSYS);
  EXPECT_FALSE(h.keydbRequest(50).reader);
  c.send(ipcompAdd(0x3001, SADB_X_CALG_DEFLATE, false));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  auto p = req.reader->getRoot<proto::PolicyToKeydb>().getAdd().getParams();
  EXPECT_EQ(p.getSatype(), SADB_X_SATYPE_IPCOMP);
  EXPECT_EQ(p.getSpi(), 0x3001u);
  EXPECT_EQ(p.getEncAlg(), SADB_X_CALG_DEFLATE);
}

// ---- NAT-T (RFC 3948) ----------------------------------------------------------

Bytes natTAdd(std::uint8_t satype = SADB_SATYPE_ESP, std::uint8_t type = 2, bool ports = true,
              std::optional<pfkey::SockAddress> oa = std::nullopt) {
  pfkey::Builder b(SADB_ADD, satype, 5, 4242);
  if (satype == SADB_SATYPE_ESP) b.key(SADB_EXT_KEY_ENCRYPT, 128, kEncKey);
  b.key(SADB_EXT_KEY_AUTH, 160, kAuthKey);
  b.sa({0x1001, 32, SADB_SASTATE_MATURE, SADB_AALG_SHA1HMAC,
        std::uint8_t(satype == SADB_SATYPE_ESP ? SADB_X_EALG_AESCBC : SADB_EALG_NONE), 0});
  b.sa2(IPSEC_MODE_TRANSPORT, 0);
  b.natTType(type);  // charon's order: type before the addresses, ports after
  b.address(SADB_EXT_ADDRESS_SRC, v4(192, 0, 2, 1), 32, 255);
  b.address(SADB_EXT_ADDRESS_DST, v4(192, 0, 2, 2), 32, 255);
  if (ports) {
    b.natTPort(SADB_X_EXT_NAT_T_SPORT, 4500);
    b.natTPort(SADB_X_EXT_NAT_T_DPORT, 31337);
  }
  if (oa) b.address(SADB_X_EXT_NAT_T_OA, *oa, oa->fullPrefix(), 0);
  return b.finish();
}

TEST(SaRequests, NatTTypePortsAndOriginalAddressReachKeydbAndComeBackInTheReply) {
  Harness h;
  auto c = h.connect();
  c.send(natTAdd(SADB_SATYPE_ESP, 2, true, v4(10, 1, 2, 3)));
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader) << req.error;
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  auto p = msg.getAdd().getParams();
  EXPECT_EQ(p.getNatTType(), 2);
  EXPECT_EQ(p.getNatTSport(), 4500);
  EXPECT_EQ(p.getNatTDport(), 31337);
  ASSERT_EQ(p.getNatOaSrc().size(), 4u);
  EXPECT_EQ(p.getNatOaSrc()[3], 3);
  EXPECT_EQ(p.getNatOaDst().size(), 0u);

  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<proto::KeydbToPolicy>().initReply();
  r.setRequestId(msg.getRequestId());
  auto rec = r.initSas(1)[0];
  fillRecord(rec, false);
  rec.getParams().setNatTType(2);
  rec.getParams().setNatTSport(4500);
  rec.getParams().setNatTDport(31337);
  const std::uint8_t oa[] = {10, 1, 2, 3};
  rec.getParams().setNatOaSrc(capnp::Data::Reader(oa, 4));
  h.answerKeydb(b);
  auto out = c.drain();
  ASSERT_EQ(out.size(), 1u);
  auto m = parsed(out[0]);
  ASSERT_TRUE(m.natTType());
  EXPECT_EQ(*m.natTType(), 2);
  EXPECT_EQ(*m.natTPort(SADB_X_EXT_NAT_T_SPORT), 4500);
  EXPECT_EQ(*m.natTPort(SADB_X_EXT_NAT_T_DPORT), 31337);
  ASSERT_TRUE(m.address(SADB_X_EXT_NAT_T_OA));
  EXPECT_EQ(m.address(SADB_X_EXT_NAT_T_OA)->addr, v4(10, 1, 2, 3));
}

TEST(SaRequests, AnSaWithoutNatTCarriesNoNatTExtensions) {
  Harness h;
  auto c = h.connect();
  c.send(addRequest());
  h.pump();
  auto req = h.keydbRequest();
  ASSERT_TRUE(req.reader);
  auto msg = req.reader->getRoot<proto::PolicyToKeydb>();
  EXPECT_EQ(msg.getAdd().getParams().getNatTType(), 0);
  answer(h, msg.getRequestId(), 0, 1, false);
  auto out = c.drain();
  ASSERT_EQ(out.size(), 1u);
  auto m = parsed(out[0]);
  EXPECT_FALSE(m.has(SADB_X_EXT_NAT_T_TYPE));
  EXPECT_FALSE(m.has(SADB_X_EXT_NAT_T_SPORT));
  EXPECT_FALSE(m.has(SADB_X_EXT_NAT_T_OA));
}

TEST(SaRequests, BadNatTIsRefusedWithEinvalBeforeKeydbIsAsked) {
  Harness h;
  auto c = h.connect();
  c.send(natTAdd(SADB_SATYPE_AH));                       // AH cannot be encapsulated
  c.send(natTAdd(SADB_SATYPE_ESP, 1));                   // NON_IKE is not run
  c.send(natTAdd(SADB_SATYPE_ESP, 2, false));            // no ports
  c.send(natTAdd(SADB_SATYPE_ESP, 2, true, pfkey::SockAddress::v6({0x20, 0x01, 0x0d, 0xb8})));  // OA family
  h.pump();
  auto r = c.drain();
  ASSERT_EQ(r.size(), 4u);
  for (const auto& e : r) EXPECT_EQ(parsed(e).msg().sadb_msg_errno, EINVAL);
  EXPECT_FALSE(h.keydbRequest(50).reader);
}

// NAT mapping reports from the forwarder: nat_mapping_test.cpp.

TEST(SaRequests, AnAnswerToARequestNeverAskedClosesTheKeydbChannel) {
  bool lost = false;
  ServerOptions o;
  o.onPeerLost = [&](std::string_view) { lost = true; };
  Harness h(o);
  answer(h, 12345, 0, 0, false);
  h.pump();
  EXPECT_TRUE(lost);
}

}  // namespace
}  // namespace ipsec::policy::test
