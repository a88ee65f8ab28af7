// ipsec-forwarder: the outbound packet core for AH (RFC 4302) — AH alone in
// tunnel or transport mode once its SA is chosen (the SA's path MTU, the
// outer DF bit), the framing around a packet or around a sealed ESP packet
// (a bundle's second stage, bundle_frame.h), the headers saved and the
// packet canonicalised for the MAC; and, once the broker has signed, the
// headers put back and the send decided (whole, or in fragments cut from the
// signed packet). Pure functions of the bytes and what they borrow; ah.cpp
// applies their verdicts (outbound_frame.h). The byte work is ah_frame.h's.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "ah/ah.h"
#include "outbound_frame.h"

namespace ipsec::forwarder {

// What an AH packet in flight needs back on completion (kept by buffer, in
// the forwarder's private memory): the header bytes canonicalisation
// changed, and where the AH header sits.
struct AhBuffer {
  ah::SavedHeaders saved;
  std::uint32_t start = 0;             // the IP packet's start in the buffer
  std::uint32_t length = 0;            // and its length, as signed
  std::uint16_t ahOffset = 0;          // headers before AH
  std::uint16_t nextHeaderOffset = 0;  // the byte that says 51
  std::uint32_t mtu = 0;               // outbound: fragment the signed packet beyond this (0: never)
};

// The AH state of the buffer being framed and the IPv4 Identification a
// tunnel's outer header would take (ours: the ICV covers it; never 0). A
// verdict with tookIpv4Id used it.
struct AhOut {
  AhBuffer &state;
  std::uint16_t ipv4Id = 1;
};

// How AH goes around buffer[offset, offset+length).
struct AhFraming {
  bool tunnel = false;                       // our outer header and AH in front; else AH inside the
                                             // host's packet
  std::optional<std::uint8_t> aroundEspTos;  // tunnel around a sealed ESP packet: this TOS, AH next
                                             // header 50
  bool outerDf = false;                      // tunnel over IPv4: DF (mutable for AH, outside the ICV)
  std::uint32_t fragmentMtu = 0;             // cut the signed packet beyond this (0: never)
};

// Frames, saves the headers, canonicalises: the kAhSign request under `sa`,
// or a drop. No MTU judgement (the caller's).
FrameVerdict frameAhSign(Sa &sa, const AhFraming &how, std::span<std::uint8_t> buffer, std::uint32_t offset,
                         std::uint32_t length, AhOut out) noexcept;

// AH alone on the host's packet: the SA's path MTU judges it first (tunnel:
// outer IP and AH in front, the DF policy; transport: AH behind the host's
// header) — too big, or fragments of the signed packet beyond the MTU.
FrameVerdict frameAhAlone(const OutboundTables &t, Sa &sa, bool tunnel, std::span<std::uint8_t> buffer,
                          std::uint32_t offset, std::uint32_t length, AhOut out) noexcept;

// The broker has signed: what to send.
struct AhSigned {
  enum class Kind : std::uint8_t {
    kDrop,       // counted under `drop`
    kSend,       // buffer[start, start+length) to `dst` on the header-included socket
    kFragments,  // the same, cut into fragments of at most `mtu`
  };
  Kind kind = Kind::kDrop;
  DropReason drop = nullptr;
  std::uint32_t start = 0, length = 0, mtu = 0;
  esp::IpAddress dst;  // as the header names it (with a routing header, the next hop)
};

// c: the broker's completion for the buffer whose AH state is `st`;
// saPresent: its SA is still installed. Only our own record says where the
// packet is: the completion must agree with it. Puts the saved headers back.
AhSigned finishAhSigned(std::span<std::uint8_t> buffer, const proto::CryptoCompletion &c, const AhBuffer &st,
                        bool saPresent) noexcept;

}  // namespace ipsec::forwarder
