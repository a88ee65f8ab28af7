// ipsec-forwarder: the outbound packet core's first stage — what the
// forwarder decides about a packet read from the TUN before it frames
// anything, as a pure function of the bytes and the tables it borrows (the
// SPD with its compiled plans, the SA table). No I/O: the shell
// (outbound.cpp) applies the route — a drop counted under its reason, a hold
// with the ACQUIRE it names, a bundle handed to its shape's stages
// (bundle.cpp, ah.cpp), or one ESP SA to seal with. The bytes come from local
// hosts but are parsed as untrusted all the same (tests/fuzz/forwarder).
#pragma once

#include <cstdint>
#include <span>

#include "esp/ip.h"
#include "esp_in.h"
#include "tables.h"

namespace ipsec::forwarder {

struct OutboundRoute {
  enum class Kind : std::uint8_t {
    kDrop,    // counted under `drop`; with `sa` set (out_drop_seq_wait) keydb is asked for more numbers
    kHold,    // no SA yet: held while an ACQUIRE for `request` goes out
    kBundle,  // AH alone, ESP+AH or ESP in ESP: the policy's plan names the stages
    kEsp,     // one ESP SA: `sa` for `request`, transport mode or a tunnel
  };
  Kind kind = Kind::kDrop;
  DropReason drop = nullptr;
  const Policy* policy = nullptr;
  esp::FlowKey flow{};
  const Request* request = nullptr;
  Sa* sa = nullptr;
  bool transport = false;  // kEsp: ESP transport between the packet's own addresses
};

// espEnabled: net.inet.esp.enable (AH shapes are judged by their own switch, later).
OutboundRoute routeOutbound(const Spd& spd, SaTable& sas, std::span<const std::uint8_t> packet,
                            bool espEnabled) noexcept;

}  // namespace ipsec::forwarder
