// The forwarder's inbound packet core (services/forwarder/esp_in.cpp) driven
// with bytes: real ESP packets sealed by lib/cryptodrv's AES-GCM transform
// (the broker's own), the core's verdict before the broker, the transform's
// open as the broker would answer, the core's verdict after it. No socket, no
// ring, no process.
#include "esp_in.h"

#include <gtest/gtest.h>
#include <linux/pfkeyv2.h>
#include <linux/udp.h>

#include <array>
#include <capnp/message.h>
#include <memory>
#include <vector>

#include "core_packets.h"
#include "cryptodrv/driver.h"
#include "esp/esp.h"

namespace ipsec::forwarder {
namespace {

capnp::Data::Reader bytes(const esp::IpAddress& a) { return {a.bytes().data(), a.bytes().size()}; }
esp::IpAddress ip(const char* s) { return *esp::IpAddress::parse(s); }

constexpr std::uint32_t kSpi = 0x1001;
using core_packets::kKey;

// An inner IPv4 packet (ICMP echo, 198.51.100.1 -> 203.0.113.1) or IPv6 (2001:db8:a::1 -> 2001:db8:b::1).
std::vector<std::uint8_t> innerPacket(int version) {
  if (version == 4) {
    std::vector<std::uint8_t> p{0x45, 0, 0, 36, 0, 1, 0, 0, 64, 1, 0, 0, 198, 51, 100, 1, 203, 0, 113, 1,
                                8,    0, 0, 0,  0, 7, 0, 1, 'p', 'i', 'n', 'g', 'p', 'o', 'n', 'g'};
    return p;
  }
  std::vector<std::uint8_t> p(40 + 16, 0);
  p[0] = 0x60;
  p[5] = 16;
  p[6] = 58;
  p[7] = 64;
  // The addresses outlive the views of their bytes.
  const esp::IpAddress src = ip("2001:db8:a::1"), dst = ip("2001:db8:b::1");
  const auto s = src.bytes(), d = dst.bytes();
  std::copy(s.begin(), s.end(), p.begin() + 8);
  std::copy(d.begin(), d.end(), p.begin() + 24);
  p[40] = 128;  // echo request
  return p;
}

class InboundCore : public core_packets::GcmCore {
 protected:
  // Installs the inbound SA (slot `index`) from src to dst, as keydb would.
  Sa& install(std::uint32_t index, const esp::IpAddress& src, const esp::IpAddress& dst, std::uint32_t window = 64) {
    capnp::MallocMessageBuilder b;
    auto m = b.initRoot<proto::SaInstall>();
    m.initSa().setIndex(index);
    m.getSa().setGeneration(1);
    auto p = m.initParams();
    p.setSatype(SADB_SATYPE_ESP);
    p.setSpi(kSpi + index);
    p.setSrc(bytes(src));
    p.setDst(bytes(dst));
    p.setMode(2);  // tunnel
    p.setIvLength(layout_.ivLength);
    p.setIcvLength(layout_.icvLength);
    p.setPadAlign(layout_.padAlign);
    p.setReplayWindow(window);
    m.setSeqNext(1);
    m.setSeqLimit(1000);
    EXPECT_FALSE(sas_.install(m.asReader()));
    return *sas_.find({index, 1});
  }

  // A real ESP tunnel packet (header..ICV) carrying `inner`, sealed under SPI
  // kSpi + index with sequence number seq.
  std::vector<std::uint8_t> seal(std::uint32_t index, std::uint32_t seq, const std::vector<std::uint8_t>& inner) {
    std::vector<std::uint8_t> buf(128 + inner.size() + 64);
    std::copy(inner.begin(), inner.end(), buf.begin() + 128);
    const auto r = esp::encapsulate(buf, 128, inner.size(), kSpi + index, seq, layout_,
                                    (inner[0] >> 4) == 4 ? esp::kNextHeaderIpv4 : esp::kNextHeaderIpv6);
    EXPECT_TRUE(r.ok());
    std::array<std::uint8_t, 8> iv{0, 0, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(seq)};
    EXPECT_EQ(sealer_->sealWithIv(buf.data() + r.offset, r.length, 0, iv.data()), cryptodrv::Status::kOk);
    return {buf.begin() + static_cast<std::ptrdiff_t>(r.offset),
            buf.begin() + static_cast<std::ptrdiff_t>(r.offset + r.length)};
  }

  // The broker's answer to an open request on `packet` (decrypted in place).
  proto::CryptoStatus open(std::vector<std::uint8_t>& packet) {
    switch (opener_->open(packet.data(), packet.size(), 0)) {
      case cryptodrv::Status::kOk: return proto::CryptoStatus::kOk;
      case cryptodrv::Status::kBadIcv: return proto::CryptoStatus::kBadIcv;
      case cryptodrv::Status::kBadLength: return proto::CryptoStatus::kBadLength;
      default: return proto::CryptoStatus::kInternalError;
    }
  }

  // The whole inbound path of the core: check, the broker's open, accept, decapsulate.
  // The inner packet delivered, or the drop's reason.
  struct Outcome {
    DropReason drop = nullptr;
    std::vector<std::uint8_t> inner;
  };
  Outcome receive(std::vector<std::uint8_t> packet, const esp::IpAddress& dst, bool udp = false) {
    const InboundEsp in = checkInboundEsp(sas_, natt_, packet, dst, udp);
    if (in.drop) return {in.drop, {}};
    const proto::CryptoStatus status = open(packet);
    const Verified v = acceptVerified(sas_, in.sa->ref, status, true, in.seq, kEspVerifyDrops);
    if (v.drop) return {v.drop, {}};
    const auto d = esp::decapsulate(packet, v.sa->layout);
    EXPECT_EQ(d.error, esp::EspError::kOk);
    return {nullptr, {packet.begin() + static_cast<std::ptrdiff_t>(d.offset),
                      packet.begin() + static_cast<std::ptrdiff_t>(d.offset + d.length)}};
  }

  SaTable sas_;
  NattPeers natt_;
  const esp::IpAddress a4_ = ip("192.0.2.1"), b4_ = ip("192.0.2.2");
  const esp::IpAddress a6_ = ip("2001:db8:1::1"), b6_ = ip("2001:db8:1::2");
};

TEST_F(InboundCore, AnIpv4TunnelPacketIsOpenedAndItsInnerPacketDelivered) {
  install(0, a4_, b4_);
  const auto got = receive(seal(0, 1, innerPacket(4)), b4_);
  EXPECT_EQ(got.drop, nullptr);
  EXPECT_EQ(got.inner, innerPacket(4));
}

TEST_F(InboundCore, AnIpv6TunnelPacketIsOpenedAndItsInnerPacketDelivered) {
  install(0, a6_, b6_);
  const auto got = receive(seal(0, 1, innerPacket(6)), b6_);
  EXPECT_EQ(got.drop, nullptr);
  EXPECT_EQ(got.inner, innerPacket(6));
}

TEST_F(InboundCore, AReplayedPacketIsDroppedBeforeTheBroker) {
  Sa& sa = install(0, a4_, b4_);
  const auto packet = seal(0, 5, innerPacket(4));
  ASSERT_EQ(receive(packet, b4_).drop, nullptr);
  auto again = packet;
  const InboundEsp in = checkInboundEsp(sas_, natt_, again, b4_, false);
  EXPECT_EQ(in.drop, &Counters::esp_in_drop_replay);
  EXPECT_EQ(sa.counters.in_drop_replay, 1u);
}

TEST_F(InboundCore, TwoCopiesInFlightPassTheCheckButOnlyTheFirstMovesTheWindow) {
  install(0, a4_, b4_);
  auto first = seal(0, 9, innerPacket(4));
  auto second = first;
  const InboundEsp in1 = checkInboundEsp(sas_, natt_, first, b4_, false);
  const InboundEsp in2 = checkInboundEsp(sas_, natt_, second, b4_, false);
  ASSERT_EQ(in1.drop, nullptr);
  ASSERT_EQ(in2.drop, nullptr);
  EXPECT_EQ(acceptVerified(sas_, in1.sa->ref, open(first), true, in1.seq, kEspVerifyDrops).drop, nullptr);
  EXPECT_EQ(acceptVerified(sas_, in2.sa->ref, open(second), true, in2.seq, kEspVerifyDrops).drop,
            &Counters::esp_in_drop_replay);
}

TEST_F(InboundCore, AnUnknownSpiOrDestinationIsNoSa) {
  install(0, a4_, b4_);
  EXPECT_EQ(receive(seal(1, 1, innerPacket(4)), b4_).drop, &Counters::esp_in_drop_no_sa);
  EXPECT_EQ(receive(seal(0, 1, innerPacket(4)), ip("192.0.2.9")).drop, &Counters::esp_in_drop_no_sa);
}

TEST_F(InboundCore, ATamperedPacketFailsItsIcvAndLeavesTheWindowAlone) {
  Sa& sa = install(0, a4_, b4_);
  const auto packet = seal(0, 3, innerPacket(4));
  auto tampered = packet;
  tampered[20] ^= 1;
  EXPECT_EQ(receive(tampered, b4_).drop, &Counters::esp_in_drop_bad_icv);
  EXPECT_EQ(sa.counters.in_drop_bad_icv, 1u);
  EXPECT_EQ(receive(packet, b4_).drop, nullptr);  // the genuine one still gets in
}

TEST_F(InboundCore, TooShortForHeaderIvAndIcvIsTruncated) {
  Sa& sa = install(0, a4_, b4_);
  const auto packet = seal(0, 1, innerPacket(4));
  EXPECT_EQ(receive({packet.begin(), packet.begin() + 4}, b4_).drop, &Counters::esp_in_drop_truncated);
  EXPECT_EQ(receive({packet.begin(), packet.begin() + 30}, b4_).drop, &Counters::esp_in_drop_truncated);
  EXPECT_EQ(sa.counters.in_drop_other, 1u);  // the SA was known only for the second
}

TEST_F(InboundCore, CiphertextNotInWholeBlocksIsBadLength) {
  install(0, a4_, b4_);
  auto packet = seal(0, 1, innerPacket(4));
  packet.push_back(0);
  EXPECT_EQ(receive(packet, b4_).drop, &Counters::esp_in_drop_bad_length);
}

TEST_F(InboundCore, EspInUdpMustBeForANatTSaAndPlainEspForAPlainOne) {
  install(0, a4_, b4_);
  install(1, a4_, b4_);  // may move slot 0: both found again below
  const Sa& plain = *sas_.find({0, 1});
  const SaRef natt{1, 1};
  natt_.set(natt, NatT{true, natt.generation, UDP_ENCAP_ESPINUDP, 4500, 4500, 0, false, {}});
  EXPECT_EQ(receive(seal(0, 1, innerPacket(4)), b4_, true).drop, &Counters::esp_in_drop_encap_mismatch);
  EXPECT_EQ(receive(seal(1, 1, innerPacket(4)), b4_, false).drop, &Counters::esp_in_drop_encap_mismatch);
  EXPECT_EQ(plain.counters.in_drop_other, 1u);
  const auto got = receive(seal(1, 2, innerPacket(4)), b4_, true);
  EXPECT_EQ(got.drop, nullptr);
  EXPECT_EQ(got.inner, innerPacket(4));
}

TEST_F(InboundCore, TheBrokersRefusalsAreCountedByReason) {
  Sa& sa = install(0, a4_, b4_);
  using S = proto::CryptoStatus;
  EXPECT_EQ(acceptVerified(sas_, sa.ref, S::kWrongDirection, true, 1, kEspVerifyDrops).drop,
            &Counters::esp_in_drop_wrong_direction);
  EXPECT_EQ(acceptVerified(sas_, sa.ref, S::kBadLength, true, 1, kEspVerifyDrops).drop,
            &Counters::esp_in_drop_bad_length);
  EXPECT_EQ(acceptVerified(sas_, sa.ref, S::kInternalError, true, 1, kEspVerifyDrops).drop, &Counters::esp_in_drop_crypto);
  // An answer that looks fine but whose descriptor the shell found changed.
  EXPECT_EQ(acceptVerified(sas_, sa.ref, S::kOk, false, 1, kEspVerifyDrops).drop, &Counters::esp_in_drop_crypto);
  EXPECT_EQ(acceptVerified(sas_, sa.ref, S::kOk, false, 1, kAhVerifyDrops).drop, &Counters::ah_in_drop_crypto);
  const SaRef gone = sa.ref;
  sas_.remove(gone);
  EXPECT_EQ(acceptVerified(sas_, gone, S::kOk, true, 1, kEspVerifyDrops).drop, &Counters::esp_in_drop_no_sa);
}

TEST_F(InboundCore, ADropIsCountedUnderItsReason) {
  Counters c;
  countDrop(c, &Counters::esp_in_drop_replay);
  countDrop(c, &Counters::esp_in_drop_replay);
  EXPECT_EQ(c.esp_in_drop_replay, 2u);
  EXPECT_EQ(c.esp_in_drop_no_sa, 0u);
}

}  // namespace
}  // namespace ipsec::forwarder
