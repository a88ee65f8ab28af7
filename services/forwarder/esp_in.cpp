// ipsec-forwarder: the inbound packet core (esp_in.h). Pure functions of
// hostile bytes and borrowed tables; noexcept, allocation-free.
#include "esp_in.h"

#include <linux/pfkeyv2.h>

#include "esp/esp.h"

namespace ipsec::forwarder {

const VerifyDrops kEspVerifyDrops{&Counters::esp_in_drop_no_sa,     &Counters::esp_in_drop_bad_icv,
                                  &Counters::esp_in_drop_crypto,    &Counters::esp_in_drop_replay,
                                  &Counters::esp_in_drop_bad_length, &Counters::esp_in_drop_wrong_direction};
const VerifyDrops kAhVerifyDrops{&Counters::ah_in_drop_no_sa,  &Counters::ah_in_drop_bad_icv,
                                 &Counters::ah_in_drop_crypto, &Counters::ah_in_drop_replay,
                                 &Counters::ah_in_drop_crypto,  // AH verify never answers kBadLength
                                 &Counters::ah_in_drop_wrong_direction};

InboundEsp peekInboundEsp(SaTable& sas, const NattPeers& natt, std::span<const std::uint8_t> esp,
                          const esp::IpAddress& dst, bool udp) noexcept {
  auto h = esp::parseHeader(esp);
  if (!h.ok()) return {&Counters::esp_in_drop_truncated};
  Sa* sa = sas.findInbound(SADB_SATYPE_ESP, h.header.spi, dst);
  if (!sa) return {&Counters::esp_in_drop_no_sa};
  // An SA is either ESP-in-UDP or plain ESP, never both (as Linux's x->encap).
  if ((natt.of(*sa) != nullptr) != udp) return {&Counters::esp_in_drop_encap_mismatch, sa};
  const auto& l = sa->layout;
  if (esp.size() < esp::kEspHeaderLength + l.ivLength + esp::kEspTrailerLength + l.icvLength) {
    return {&Counters::esp_in_drop_truncated, sa};
  }
  // The encrypted part must be whole cipher blocks (RFC 4303 §2.4): judged
  // here so that such a packet costs no ring slot (the broker judges it again).
  if (l.padAlign == 0 || (esp.size() - esp::kEspHeaderLength - l.ivLength - l.icvLength) % l.padAlign != 0) {
    return {&Counters::esp_in_drop_bad_length, sa};
  }
  std::uint64_t seq = h.header.seqLow;
  if (sa->replay) {
    auto full = sa->replay->check(h.header.seqLow);
    if (!full) return {&Counters::esp_in_drop_replay, sa};
    seq = *full;
  }
  return {nullptr, sa, seq};
}

InboundEsp checkInboundEsp(SaTable& sas, const NattPeers& natt, std::span<const std::uint8_t> esp,
                           const esp::IpAddress& dst, bool udp) noexcept {
  const InboundEsp v = peekInboundEsp(sas, natt, esp, dst, udp);
  // A drop after the SA was found is the SA's too: a replay as such, the rest as "other".
  if (v.drop && v.sa) {
    if (v.drop == &Counters::esp_in_drop_replay) {
      v.sa->counters.in_drop_replay++;
    } else {
      v.sa->counters.in_drop_other++;
    }
  }
  return v;
}

Verified acceptVerified(SaTable& sas, SaRef ref, proto::CryptoStatus status, bool sane, std::uint64_t seq,
                        const VerifyDrops& d) noexcept {
  Sa* sa = sas.find(ref);
  if (!sa) return {d.noSa};
  if (status == proto::CryptoStatus::kBadIcv) {
    sa->counters.in_drop_bad_icv++;
    return {d.badIcv, sa};
  }
  // The broker judged the packet too short or misaligned for the SA (a bad
  // packet, issue 10 item 8), or refused to open under an outbound SA.
  if (status == proto::CryptoStatus::kBadLength || status == proto::CryptoStatus::kWrongDirection) {
    sa->counters.in_drop_other++;
    return {status == proto::CryptoStatus::kBadLength ? d.badLength : d.wrongDirection, sa};
  }
  if (status != proto::CryptoStatus::kOk || !sane) {
    sa->counters.in_drop_other++;
    return {d.crypto, sa};
  }
  // Only an authenticated packet may move the window (RFC 4303 §3.4.3,
  // RFC 4302 §3.4.3).
  if (sa->replay && !sa->replay->accept(seq)) {
    sa->counters.in_drop_replay++;
    return {d.replay, sa};
  }
  return {nullptr, sa};
}

}  // namespace ipsec::forwarder
