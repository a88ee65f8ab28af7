// Builds PF_KEY v2 messages: a sadb_msg header and extensions, each padded to
// 8 bytes with its length field in 64-bit words; finish() patches
// sadb_msg_len. Used by ipsec-policy for replies and broadcasts and by the
// setkey tool for requests. Control plane only: it allocates (one vector).
//
// Byte order, as Linux: the SPI (sadb_sa_spi), sockaddr ports and NAT-T ports
// are network order on the wire, everything else host order. The helpers
// below take host-order values and convert where the wire wants network order.
#pragma once

#include <linux/pfkeyv2.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "pfkey/address.h"
#include "pfkey/message.h"

namespace ipsec::pfkey {

struct SaFields {
  uint32_t spi = 0;  // host order; the builder writes it in network order
  uint8_t replay = 0;
  uint8_t state = SADB_SASTATE_LARVAL;
  uint8_t auth = SADB_AALG_NONE;
  uint8_t encrypt = SADB_EALG_NONE;  // or the compression id for IPCOMP
  uint32_t flags = 0;
};

struct RequestFields {
  uint16_t proto = 0;  // IPPROTO_ESP / IPPROTO_AH / IPPROTO_COMP
  uint8_t mode = 0;    // IPSEC_MODE_*
  uint8_t level = 0;   // IPSEC_LEVEL_*
  uint32_t reqid = 0;
  std::optional<SockAddress> tunnelSrc;  // both or neither
  std::optional<SockAddress> tunnelDst;
};

struct PolicyFields {
  uint16_t type = 0;  // IPSEC_POLICY_*
  uint8_t dir = 0;    // IPSEC_DIR_*
  uint32_t id = 0;
  uint32_t priority = 0;
  std::vector<RequestFields> requests;
};

class Builder {
 public:
  Builder(uint8_t type, uint8_t satype, uint32_t seq, uint32_t pid, uint8_t errnum = 0);
  // Starts from an existing header (e.g. echoing a request); len is recomputed.
  explicit Builder(const sadb_msg& header);

  Builder& sa(const SaFields& f);
  Builder& sa2(uint8_t mode, uint32_t reqid, uint32_t sequence = 0);
  Builder& address(uint16_t extType, const SockAddress& a, uint8_t prefixlen, uint8_t proto);
  // `bytes` holds ceil(bits / 8) bytes of key; the extension is zero-padded.
  Builder& key(uint16_t extType, uint16_t bits, std::span<const uint8_t> bytes);
  Builder& lifetime(uint16_t extType, uint32_t allocations, uint64_t bytes, uint64_t addtime,
                    uint64_t usetime);
  Builder& spirange(uint32_t min, uint32_t max);  // host order, as Linux
  Builder& natTType(uint8_t type);
  Builder& natTPort(uint16_t extType, uint16_t port);  // host order in, network on the wire
  // Our kExtSaReplay (message.h): a replay window in packets, above 255.
  Builder& saReplay(uint32_t window);
  // Our kExtSaOptions (message.h): per-SA DF policy, path MTU, TFC pad, dummy interval.
  Builder& saOptions(const SaOptions& o);
  Builder& policy(const PolicyFields& p);
  Builder& supported(uint16_t extType, std::span<const sadb_alg> algs);
  Builder& secCtx(uint8_t alg, uint8_t doi, std::span<const uint8_t> context);
  // Any other extension: `body` follows the 4-byte sadb_ext header.
  Builder& raw(uint16_t extType, std::span<const uint8_t> body);

  size_t size() const noexcept { return buf_.size(); }
  // Patches sadb_msg_len and hands the bytes over; the builder is left empty.
  std::vector<uint8_t> finish();

  // The reply Linux sends for a failed request: the request's header alone,
  // len 2, with sadb_msg_errno set.
  static std::vector<uint8_t> errorReply(const sadb_msg& request, uint8_t errnum);

 private:
  // Appends `n` zero bytes padded to 8 and returns the offset of the start.
  size_t grow(size_t n);
  void putExtHeader(size_t at, size_t bytes, uint16_t extType);
  std::vector<uint8_t> buf_;
};

}  // namespace ipsec::pfkey
