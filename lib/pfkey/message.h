// A parsed, zero-copy view of one PF_KEY v2 message (RFC 2367 with the
// KAME/Linux extensions, Linux numbering from <linux/pfkeyv2.h>).
//
// Who runs it: ipsec-policy parses every datagram a local client sends on the
// PF_KEY socket with parse(); the setkey tool parses the service's replies.
// Trust: the bytes are untrusted. parse() checks everything it later hands
// out, never allocates, never throws, and answers a malformed message with the
// errno Linux's af_key.c would put in the error reply.
//
// Alignment: none required. The view keeps a span over the caller's buffer
// and reads every structure with memcpy, so a buffer at any address works;
// the caller must keep the buffer alive and unchanged while the view is used.
//
// What parse() checks (structure only; whether a message TYPE has the
// extensions it needs, or a satype/dir/policy type is acceptable, is the
// service's decision):
//  - header: version PF_KEY_V2, type 1..SADB_MAX, reserved 0 (EINVAL);
//    sadb_msg_len * 8 equal to the datagram length, at least 16 bytes, at most
//    kMaxMessageBytes (EMSGSIZE);
//  - each extension: at least 8 bytes, within the message, type 1..SADB_EXT_MAX
//    or one of ours, kExtSaReplay and kExtSaOptions (unknown types are
//    refused; Linux skips them, we prefer to be told),
//    not repeated, at least the size of its struct, exactly that size for the
//    fixed-size ones (SA, lifetimes, SA2, SPIRANGE, NAT-T type and ports,
//    SA_REPLAY, SA_OPTIONS);
//  - SA_OPTIONS: df <= 3, reserved fields 0, mtu 0 or at least 576;
//  - sadb_address (SRC, DST, PROXY, NAT_T_OA): AF_INET with ext len 3 and
//    prefixlen <= 32, or AF_INET6 with ext len 5 and prefixlen <= 128;
//  - sadb_key: ceil(bits / 8) key bytes fit in the extension;
//  - sadb_x_policy: its ipsecrequests (len in BYTES, >= 16, within the
//    extension), at most kMaxIpsecRequests of them (ELOOP as Linux), proto
//    ESP/AH/IPCOMP, mode transport/tunnel/beet, level <= unique, a request
//    longer than 16 bytes carries two sockaddrs of the same family (src, dst);
//  - sadb_x_sec_ctx: its context length matches the extension length.
#pragma once

#include <linux/pfkeyv2.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <variant>

#include "pfkey/address.h"

namespace ipsec::pfkey {

// The largest datagram the service accepts; larger ones get EMSGSIZE.
// Real requests are far smaller (a v6 SPDADD with six tunnel requests is
// under 600 bytes); 64 KiB bounds the receive buffer.
inline constexpr size_t kMaxMessageBytes = 64 * 1024;
// Linux's XFRM_MAX_DEPTH: the most transforms one policy may chain.
inline constexpr size_t kMaxIpsecRequests = 6;

// ---- Beyond Linux: ESN and replay windows above 255 -------------------------
// Linux's PF_KEY can say neither (sadb_sa_replay is a u8, and af_key.c has no
// ESN). We take FreeBSD's two extensions, with FreeBSD's values, checked not
// to collide with Linux's numbering (README, "PF_KEY"):
//
// kSaFlagEsn, FreeBSD's SADB_X_SAFLAGS_ESN, in sadb_sa_flags: the SA uses
// 64-bit sequence numbers (RFC 4303 §2.2.1). Linux's SADB_SAFLAGS_* are bit 0
// (PFS) and the top three bits; the KAME bits setkey sends are 0x40-0x200.
inline constexpr uint32_t kSaFlagEsn = 0x400;
// kExtSaReplay, FreeBSD's SADB_X_EXT_SA_REPLAY: struct SaReplayExt below, the
// replay window in PACKETS as a u32. It overrides sadb_sa_replay. Linux's
// extension types end at SADB_EXT_MAX (26); FreeBSD's 27 (NAT_T_FRAG) stays
// unknown here. The service sends it only for windows above 255, so that
// clients that know only Linux's types never see it unless they asked.
inline constexpr uint16_t kExtSaReplay = 28;
// kExtSaOptions, ours alone (no BSD has it): per-SA tunnel options, struct
// SaOptionsExt below: the outer DF bit, the outer path MTU, TFC padding
// (RFC 4303 §2.7) and dummy packets (next header 59, §2.6). ESP and AH only
// (an IPComp SA with it is EINVAL: it has no outer header of its own to tune
// nor padding). The service sends it back (GET, DUMP, replies) only when a
// field is nonzero, so a client that never sent it never sees it.
inline constexpr uint16_t kExtSaOptions = 29;
inline constexpr uint16_t kExtMax = kExtSaOptions;
static_assert(kExtSaReplay > SADB_EXT_MAX, "our extension must not take a Linux number");
static_assert(kExtSaOptions > kExtSaReplay, "our extensions follow each other");
static_assert((kSaFlagEsn & (SADB_SAFLAGS_PFS | SADB_SAFLAGS_NOPMTUDISC | SADB_SAFLAGS_DECAP_DSCP |
                             SADB_SAFLAGS_NOECN | 0x03c0u)) == 0,
              "the ESN flag must not take a Linux or KAME bit");
struct SaReplayExt {
  uint16_t len;      // 1 (64-bit words)
  uint16_t exttype;  // kExtSaReplay
  uint32_t replay;   // window in packets
};
static_assert(sizeof(SaReplayExt) == 8);
// The largest window the data path keeps (esp::ReplayWindow::kMaxSize); a
// larger one is refused with EINVAL, never clipped.
inline constexpr uint32_t kMaxReplayWindow = 65536;

// sadb_x_sa_options-style: the 8-byte ext header's length and type, then the
// options. parse() refuses (EINVAL) df above kSaDfCopy, a nonzero reserved
// field, and an mtu below kMinMtuV4 (576, RFC 791's every-host minimum):
// nothing carries IPv4 below that. The IPv6 floor (1280, RFC 8200 §5) needs
// the SA's family, which the service checks (an IPv6 outer below 1280 is
// EINVAL there). 0 in every field means "the default".
inline constexpr uint8_t kSaDfInherit = 0;  // net.inet.ipsec.dfbit decides
inline constexpr uint8_t kSaDfClear = 1;
inline constexpr uint8_t kSaDfSet = 2;
inline constexpr uint8_t kSaDfCopy = 3;     // copy the inner header's DF
inline constexpr uint16_t kMinMtuV4 = 576;
inline constexpr uint16_t kMinMtuV6 = 1280;
struct SaOptionsExt {
  uint16_t len;                // 2 (64-bit words)
  uint16_t exttype;            // kExtSaOptions
  uint8_t df;                  // kSaDf*
  uint8_t reserved1;           // 0
  uint16_t mtu;                // outer path MTU in bytes, 0 = default
  uint16_t tfcPad;             // ESP tunnel: pad inner packets to this size, 0 = off
  uint16_t reserved2;          // 0
  uint32_t dummyIntervalMs;    // dummy packet interval on an idle SA, 0 = off
};
static_assert(sizeof(SaOptionsExt) == 16);
static_assert(offsetof(SaOptionsExt, df) == 4 && offsetof(SaOptionsExt, mtu) == 6 &&
              offsetof(SaOptionsExt, tfcPad) == 8 && offsetof(SaOptionsExt, dummyIntervalMs) == 12);
// The options of kExtSaOptions, host order, as the service and setkey use them.
struct SaOptions {
  uint8_t df = kSaDfInherit;
  uint16_t mtu = 0;
  uint16_t tfcPad = 0;
  uint32_t dummyIntervalMs = 0;
  bool any() const noexcept { return df != 0 || mtu != 0 || tfcPad != 0 || dummyIntervalMs != 0; }
  friend bool operator==(const SaOptions&, const SaOptions&) = default;
};

enum class Origin : uint8_t { kClient, kService };

class ParsedMessage;

struct ParseError {
  int errnum = 0;            // what sadb_msg_errno of the error reply should say
  const char* reason = "";   // static text for logs, e.g. "duplicate extension"
  uint16_t extType = 0;      // the offending extension type, 0 for the header
  size_t offset = 0;         // byte offset of the offending part
};

struct AddressExt {
  SockAddress addr;     // address and port (host order)
  uint8_t prefixlen = 0;
  uint8_t proto = 0;    // upper-layer protocol, IPSEC_ULPROTO_ANY (255) for any
};

struct KeyExt {
  uint16_t bits = 0;
  std::span<const uint8_t> bytes;  // ceil(bits / 8) bytes, padding excluded
};

struct IpsecRequest {
  uint16_t proto = 0;  // IPPROTO_ESP / IPPROTO_AH / IPPROTO_COMP
  uint8_t mode = 0;    // IPSEC_MODE_*
  uint8_t level = 0;   // IPSEC_LEVEL_*
  uint32_t reqid = 0;
  std::optional<SockAddress> tunnelSrc;  // present when the request carries addresses
  std::optional<SockAddress> tunnelDst;
};

struct PolicyExt {
  uint16_t type = 0;      // IPSEC_POLICY_*
  uint8_t dir = 0;        // IPSEC_DIR_*
  uint32_t id = 0;
  uint32_t priority = 0;
  std::array<IpsecRequest, kMaxIpsecRequests> requestStore{};
  size_t requestCount = 0;
  std::span<const IpsecRequest> requests() const noexcept {
    return {requestStore.data(), requestCount};
  }
};

struct SecCtxExt {
  uint8_t alg = 0;
  uint8_t doi = 0;
  std::span<const uint8_t> context;
};

class ParsedMessage {
 public:
  const sadb_msg& msg() const noexcept { return header_; }
  std::span<const uint8_t> bytes() const noexcept { return data_; }

  bool has(uint16_t extType) const noexcept {
    return extType <= kExtMax && offsets_[extType] != 0;
  }
  // The whole extension (header included), empty if absent.
  std::span<const uint8_t> extBytes(uint16_t extType) const noexcept;
  // A copy of a fixed-size extension struct (sadb_sa, sadb_x_sa2,
  // sadb_lifetime, ...). nullopt if absent or shorter than T.
  template <class T>
  std::optional<T> ext(uint16_t extType) const noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    auto b = extBytes(extType);
    if (b.size() < sizeof(T)) return std::nullopt;
    T out;
    std::memcpy(&out, b.data(), sizeof out);
    return out;
  }

  std::optional<AddressExt> address(uint16_t extType) const noexcept;
  std::optional<KeyExt> key(uint16_t extType) const noexcept;
  const std::optional<PolicyExt>& policy() const noexcept { return policy_; }
  std::optional<sadb_sa> sa() const noexcept { return ext<sadb_sa>(SADB_EXT_SA); }
  std::optional<sadb_x_sa2> sa2() const noexcept { return ext<sadb_x_sa2>(SADB_X_EXT_SA2); }
  std::optional<sadb_lifetime> lifetime(uint16_t extType) const noexcept {
    return ext<sadb_lifetime>(extType);
  }
  std::optional<sadb_spirange> spirange() const noexcept {
    return ext<sadb_spirange>(SADB_EXT_SPIRANGE);
  }
  std::optional<uint8_t> natTType() const noexcept;
  // NAT-T SPORT/DPORT in host order.
  std::optional<uint16_t> natTPort(uint16_t extType) const noexcept;
  std::optional<SecCtxExt> secCtx() const noexcept;
  // kExtSaReplay's window in packets.
  std::optional<uint32_t> saReplay() const noexcept;
  // kExtSaOptions (checked by parse()).
  std::optional<SaOptions> saOptions() const noexcept;
  // SUPPORTED_AUTH / SUPPORTED_ENCRYPT entries.
  size_t supportedCount(uint16_t extType) const noexcept;
  std::optional<sadb_alg> supportedAlg(uint16_t extType, size_t i) const noexcept;

 private:
  friend std::variant<ParsedMessage, ParseError> parse(std::span<const uint8_t>, Origin) noexcept;
  std::span<const uint8_t> data_;
  sadb_msg header_{};
  std::array<uint32_t, kExtMax + 1> offsets_{};  // 0 = absent (offset 0 is the header)
  std::optional<PolicyExt> policy_;
};

// Parses one datagram. See the file comment for what is checked.
// Who wrote the message: a client's request must have sadb_msg_reserved 0;
// in the kernel's (our service's) policy replies that field is the refcount.
std::variant<ParsedMessage, ParseError> parse(std::span<const uint8_t> datagram,
                                              Origin origin = Origin::kClient) noexcept;

// Names for logs and the setkey tool ("ADD", "ADDRESS_SRC"); "?" if unknown.
const char* messageTypeName(uint8_t type) noexcept;
const char* extTypeName(uint16_t type) noexcept;

}  // namespace ipsec::pfkey
