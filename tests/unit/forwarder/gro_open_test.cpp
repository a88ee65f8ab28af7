// The inbound core for a UDP GRO datagram (services/forwarder/gro_open.cpp):
// the decision "one multi-segment request or split" and the per-segment walk
// of that request's completion, driven with bytes — ESP-in-UDP packets framed
// by lib/esp, sealed by lib/cryptodrv's AES-GCM (the broker's own transform),
// laid back to back as the kernel's UDP_GRO hands them, opened segment by
// segment as the broker's processEsp does (its fail mask and worst status),
// then judged. No socket, no ring, no process.
#include "gro_open.h"

#include <gtest/gtest.h>
#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>
#include <linux/udp.h>
#include <netinet/in.h>

#include <algorithm>
#include <vector>

#include "core_packets.h"
#include "core_tables.h"
#include "esp/esp.h"
#include "ring/pool.h"

namespace ipsec::forwarder {
namespace {

using core_packets::innerPacket;
using Kind = GroSegmentVerdict::Kind;

esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }
esp::Prefix host(const char* s) { return {ip(s), 32}; }

// A GRO datagram: the segments back to back from offset 0 of a pool-sized
// buffer (the bytes every view below points into live as long as it does).
struct Datagram {
  std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(proto::kDefaultBufferSize);
  std::uint32_t length = 0, stride = 0, count = 0;
  std::vector<std::vector<std::uint8_t>> inner;  // each segment's inner packet, as sent
  esp::GroSplit split() const { return esp::splitGro(length, {true, false, stride}); }
  std::span<const std::uint8_t> view() const { return {bytes.data(), length}; }
};

class GroOpen : public core_packets::GcmCore {
 protected:
  void SetUp() override {
    GcmCore::SetUp();
    install(0, 0x100, IPSEC_MODE_TUNNEL);
    install(1, 0x200, IPSEC_MODE_TUNNEL);  // another SA to the same address
    const Request tunnel{IPPROTO_ESP, IPSEC_MODE_TUNNEL, IPSEC_LEVEL_REQUIRE, 0, a4_, b4_};
    EXPECT_FALSE(core_tables::addPolicy(
        spd_, {1, IPSEC_DIR_INBOUND, IPSEC_POLICY_IPSEC, host("198.51.100.1"), host("203.0.113.1"), {tunnel}}));
  }

  Sa& install(std::uint32_t index, std::uint32_t spi, std::uint8_t mode) {
    core_tables::SaValues v;
    v.index = index;
    v.spi = spi;
    v.mode = mode;
    v.src = a4_;
    v.dst = b4_;
    v.layout = layout_;
    EXPECT_FALSE(core_tables::installSa(sas_, v));
    NatT nat;
    nat.present = true;
    nat.generation = 1;
    nat.type = UDP_ENCAP_ESPINUDP;
    nat.sport = nat.dport = 4500;
    natt_.set({index, 1}, nat);
    return *sas_.find({index, 1});
  }

  InboundTables tables() { return {sas_, spd_, ipcomp_, natt_, counters_, true}; }

  // One sealed ESP packet (header..ICV) carrying `inner` under spi/seq, next header `next`.
  std::vector<std::uint8_t> espPacket(std::uint32_t spi, std::uint32_t seq, const std::vector<std::uint8_t>& inner,
                                      std::uint8_t next = esp::kNextHeaderIpv4) {
    std::vector<std::uint8_t> frame(4096);
    std::copy(inner.begin(), inner.end(), frame.begin() + 256);
    const auto r = esp::encapsulate(frame, 256, inner.size(), spi, seq, layout_, next);
    EXPECT_TRUE(r.ok());
    const std::array<std::uint8_t, 8> iv{0, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(seq >> 8),
                                         static_cast<std::uint8_t>(seq)};
    EXPECT_EQ(sealer_->sealWithIv(frame.data() + r.offset, r.length, 0, iv.data()), cryptodrv::Status::kOk);
    return {frame.begin() + r.offset, frame.begin() + r.offset + r.length};
  }

  // n segments under (spi[i], seq[i]); every inner packet `payload` bytes but
  // the last one's, which is lastPayload (shorter: the GRO's short tail).
  Datagram datagram(std::size_t n, std::uint32_t firstSeq = 1, std::size_t payload = 64,
                    std::size_t lastPayload = 64) {
    Datagram d;
    for (std::size_t i = 0; i < n; ++i) {
      auto inner = innerPacket(4, i + 1 == n ? lastPayload : payload);
      inner.back() = static_cast<std::uint8_t>(i);  // tells the segments apart
      append(d, espPacket(0x100, static_cast<std::uint32_t>(firstSeq + i), inner), inner);
    }
    return d;
  }
  static void append(Datagram& d, const std::vector<std::uint8_t>& segment, const std::vector<std::uint8_t>& inner) {
    if (d.count == 0) d.stride = static_cast<std::uint32_t>(segment.size());
    std::copy(segment.begin(), segment.end(), d.bytes.begin() + d.length);
    d.length += static_cast<std::uint32_t>(segment.size());
    ++d.count;
    d.inner.push_back(inner);
  }
  // Segment i replaced by `segment` (same length).
  static void replace(Datagram& d, std::size_t i, const std::vector<std::uint8_t>& segment) {
    ASSERT_EQ(segment.size(), d.stride);
    std::copy(segment.begin(), segment.end(), d.bytes.begin() + i * d.stride);
  }

  GroOpenPlan plan(const Datagram& d) { return planGroOpen(sas_, natt_, d.view(), d.split(), b4_, sent_); }

  // The request the shell sends, answered as the broker's processEsp does:
  // each segment opened on its own, a failed one's bit set, the worst status.
  proto::CryptoCompletion broker(Datagram& d) {
    proto::CryptoCompletion c{};
    c.op = proto::CryptoOp::kOpen;
    c.offset = 0;
    c.length = d.length;
    c.segmentCount = static_cast<std::uint16_t>(d.count);
    c.segmentStride = d.stride;
    c.status = proto::CryptoStatus::kOk;
    for (std::uint16_t i = 0; i < c.segmentCount; ++i) {
      const auto [start, len] = ring::segmentOf(c, i);
      if (opener_->open(d.bytes.data() + start, len, 0) != cryptodrv::Status::kOk) {
        c.segmentFailMask |= std::uint64_t{1} << i;
        c.status = proto::CryptoStatus::kBadIcv;
      }
    }
    return c;
  }

  std::vector<GroSegmentVerdict> walk(Datagram& d, const proto::CryptoCompletion& c) {
    std::vector<GroSegmentVerdict> out;
    const OpenedFrom from{0, true, {a4_, 4500}};
    for (std::uint16_t i = 0; i < sent_.count; ++i) {
      out.push_back(judgeGroSegment(tables(), d.bytes, c, sent_, sa()->ref, echoesLayout(c, sent_), i, from));
    }
    return out;
  }

  std::vector<std::uint8_t> delivered(const Datagram& d, const GroSegmentVerdict& s) {
    EXPECT_EQ(s.kind, Kind::kJudged);
    EXPECT_EQ(s.verdict.kind, OpenedVerdict::Kind::kDeliver);
    return {d.bytes.begin() + s.verdict.offset, d.bytes.begin() + s.verdict.offset + s.verdict.length};
  }

  SaTable sas_;
  Spd spd_;
  IpcompSas ipcomp_;
  NattPeers natt_;
  Counters counters_;
  GroSegments sent_;
  // The SA under test, looked up afresh: an install may move the table's entries.
  Sa* sa() { return sas_.find({0, 1}); }
  const esp::IpAddress a4_ = ip("192.0.2.1"), b4_ = ip("192.0.2.2");
};

// ---- one request or split -----------------------------------------------------

TEST_F(GroOpen, AUniformDatagramIsOneRequestWithEachSegmentsSequenceNumber) {
  Datagram d = datagram(5, 10);
  const GroOpenPlan p = plan(d);
  ASSERT_EQ(p.sa, sa());
  EXPECT_EQ(p.splitWhy, nullptr);
  EXPECT_EQ(sent_.count, 5);
  EXPECT_EQ(sent_.stride, d.stride);
  EXPECT_EQ(sent_.length, d.length);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(sent_.seq[i], 10 + i);
  EXPECT_EQ(sa()->counters.in_drop_other + sa()->counters.in_drop_replay, 0u);  // planning counts nothing
}

TEST_F(GroOpen, AForeignSpiInTheMiddleSplitsTheDatagram) {
  Datagram d = datagram(3);
  replace(d, 1, espPacket(0x200, 2, d.inner[1]));
  const GroOpenPlan p = plan(d);
  EXPECT_EQ(p.sa, nullptr);
  EXPECT_EQ(p.splitWhy, &Counters::esp_in_multi_split_mixed);
}

TEST_F(GroOpen, AKeepaliveAmongTheSegmentsSplitsTheDatagram) {
  Datagram d = datagram(2);
  append(d, {0xff}, {});
  EXPECT_EQ(plan(d).splitWhy, &Counters::esp_in_multi_split_mixed);
}

TEST_F(GroOpen, AReplayedSegmentSplitsTheDatagramSoItIsNeverOpened) {
  ASSERT_TRUE(sa()->replay->accept(2));  // seq 2 already seen
  Datagram d = datagram(3, 1);
  const GroOpenPlan p = plan(d);
  EXPECT_EQ(p.sa, nullptr);
  EXPECT_EQ(p.splitWhy, &Counters::esp_in_multi_split_precheck);
  EXPECT_EQ(sa()->counters.in_drop_replay, 0u);  // the split path counts it, once
}

TEST_F(GroOpen, ATransportSaSplitsTheDatagram) {
  Sa& transport = install(2, 0x300, IPSEC_MODE_TRANSPORT);
  Datagram d;
  for (std::uint32_t i = 0; i < 2; ++i) append(d, espPacket(transport.spi, i + 1, innerPacket(4), IPPROTO_ICMP), {});
  EXPECT_EQ(plan(d).splitWhy, &Counters::esp_in_multi_split_sa);
}

TEST_F(GroOpen, OneSegmentIsNothingToDecide) {
  Datagram d = datagram(1);
  const GroOpenPlan p = plan(d);
  EXPECT_EQ(p.sa, nullptr);
  EXPECT_EQ(p.splitWhy, nullptr);
}

TEST_F(GroOpen, AsManySegmentsAsARequestCarriesIsOneRequestAndOneMoreIsSplit) {
  Datagram most = datagram(proto::kMaxSegments, 1, 8, 8);
  EXPECT_EQ(plan(most).sa, sa());
  Datagram tooMany = datagram(proto::kMaxSegments + 1, 1, 8, 8);
  const GroOpenPlan p = plan(tooMany);
  EXPECT_EQ(p.sa, nullptr);
  EXPECT_EQ(p.splitWhy, &Counters::esp_in_multi_split_too_many);
}

// ---- the completion, segment by segment ----------------------------------------

TEST_F(GroOpen, EverySegmentIsDeliveredInOrderWithTheShortLastOne) {
  Datagram d = datagram(4, 1, 200, 20);
  ASSERT_LT(d.length - 3 * d.stride, d.stride);  // the last segment is shorter
  ASSERT_EQ(plan(d).sa, sa());
  const auto c = broker(d);
  ASSERT_EQ(c.status, proto::CryptoStatus::kOk);
  const auto verdicts = walk(d, c);
  ASSERT_EQ(verdicts.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(delivered(d, verdicts[i]), d.inner[i]) << "segment " << i;
  EXPECT_EQ(sa()->replay->highest(), 4u);
}

TEST_F(GroOpen, AFailedIcvDropsOnlyItsSegmentAndTheRestAreDeliveredInOrder) {
  Datagram d = datagram(4);
  d.bytes[1 * d.stride + 30] ^= 1;  // segment 1's ciphertext
  ASSERT_EQ(plan(d).sa, sa());
  const auto c = broker(d);
  ASSERT_EQ(c.status, proto::CryptoStatus::kBadIcv);
  ASSERT_EQ(c.segmentFailMask, 0b10u);
  const auto verdicts = walk(d, c);
  EXPECT_EQ(verdicts[1].kind, Kind::kRefused);
  EXPECT_EQ(verdicts[1].drop, &Counters::esp_in_drop_bad_icv);
  EXPECT_EQ(sa()->counters.in_drop_bad_icv, 1u);
  for (std::size_t i : {0u, 2u, 3u}) EXPECT_EQ(delivered(d, verdicts[i]), d.inner[i]) << "segment " << i;
  // The failed one did not move the window: its number is still fresh.
  EXPECT_TRUE(sa()->replay->check(2).has_value());
}

TEST_F(GroOpen, ADuplicateInsideOneDatagramIsDeliveredOnceAndCountedAsAReplay) {
  Datagram d;
  const auto inner = innerPacket(4);
  for (int i = 0; i < 3; ++i) append(d, espPacket(0x100, 7, inner), inner);
  ASSERT_EQ(plan(d).sa, sa());  // each passes the pre-check alone
  const auto verdicts = walk(d, broker(d));
  EXPECT_EQ(delivered(d, verdicts[0]), inner);
  for (std::size_t i : {1u, 2u}) EXPECT_EQ(verdicts[i].drop, &Counters::esp_in_drop_replay);
  EXPECT_EQ(sa()->counters.in_drop_replay, 2u);
}

TEST_F(GroOpen, AWholeRequestRefusedFailsEverySegmentWhateverTheMask) {
  Datagram d = datagram(3);
  ASSERT_EQ(plan(d).sa, sa());
  proto::CryptoCompletion c = broker(d);
  c.status = proto::CryptoStatus::kWrongDirection;
  c.segmentFailMask = 0;
  for (const auto& v : walk(d, c)) EXPECT_EQ(v.drop, &Counters::esp_in_drop_wrong_direction);
}

TEST_F(GroOpen, ACompletionThatChangedTheLayoutDropsEverySegmentAsTheBrokersFault) {
  Datagram d = datagram(3);
  ASSERT_EQ(plan(d).sa, sa());
  proto::CryptoCompletion c = broker(d);
  c.segmentStride += 4;
  for (const auto& v : walk(d, c)) EXPECT_EQ(v.drop, &Counters::esp_in_drop_crypto);
  EXPECT_EQ(sa()->replay->highest(), 0u);
}

TEST_F(GroOpen, ADummySegmentIsJudgedOnACopyAndItsNeighboursInPlace) {
  Datagram d = datagram(3);
  replace(d, 1, espPacket(0x100, 2, d.inner[1], esp::kNextHeaderDummy));
  ASSERT_EQ(plan(d).sa, sa());
  const auto verdicts = walk(d, broker(d));
  EXPECT_EQ(delivered(d, verdicts[0]), d.inner[0]);
  ASSERT_EQ(verdicts[1].kind, Kind::kOnACopy);
  EXPECT_EQ(verdicts[1].start, d.stride);
  EXPECT_EQ(verdicts[1].length, d.stride);
  EXPECT_EQ(delivered(d, verdicts[2]), d.inner[2]);
  // On its copy, as the shell judges it: a dummy, as if it had come alone.
  std::vector<std::uint8_t> copy(4096);
  std::copy_n(d.bytes.begin() + d.stride, d.stride, copy.begin());
  const OpenedVerdict v = judgeOpened(tables(), copy, 0, d.stride, *sa(), {0, true, {a4_, 4500}});
  EXPECT_EQ(v.kind, OpenedVerdict::Kind::kDummy);
}

TEST_F(GroOpen, InnerEspGoesOnACopyAndTheNextSegmentIsStillDeliveredInPlace) {
  // Segment 0 carries inner ESP for one of our SAs (opened again: a buffer
  // of its own); segment 1 must come out of the walk untouched.
  auto innerEsp = innerPacket(4, 64);
  innerEsp[9] = IPPROTO_ESP;
  Datagram d;
  append(d, espPacket(0x100, 1, innerEsp), innerEsp);
  const auto second = innerPacket(4, 64);
  append(d, espPacket(0x100, 2, second), second);
  ASSERT_EQ(plan(d).sa, sa());
  const auto verdicts = walk(d, broker(d));
  EXPECT_EQ(verdicts[0].kind, Kind::kOnACopy);
  EXPECT_EQ(delivered(d, verdicts[1]), second);
}

}  // namespace
}  // namespace ipsec::forwarder
