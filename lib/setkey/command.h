// A parsed setkey(8) statement and the PF_KEY requests it turns into.
// Client side (the setkey tool); the service never sees these types, only
// the bytes requests() produces.
//
// Commands that need a dialogue are modelled for the tool to run:
//  - dump / spddump: requests() is the DUMP; the tool prints every reply.
//  - deleteall: requests() is DUMP(satype); for each SA in the replies whose
//    source and destination match, the tool sends deleteRequest(spi).
#pragma once

#include <linux/ipsec.h>
#include <linux/pfkeyv2.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pfkey/address.h"
#include "pfkey/builder.h"
#include "pfkey/message.h"
#include "setkey/algorithms.h"

namespace ipsec::setkey {

// KAME flag bits of sadb_sa_flags that setkey sends (not in Linux's header).
inline constexpr uint32_t kSaFlagCyclicSeq = 0x0040;  // SADB_X_EXT_CYCSEQ, setkey's default
inline constexpr uint32_t kSaFlagRawCpi = 0x0080;     // SADB_X_EXT_RAWCPI (-R)
inline constexpr uint32_t kSaFlagRandomPad = 0x0100;  // SADB_X_EXT_PRAND
inline constexpr uint32_t kSaFlagZeroPad = 0x0200;    // SADB_X_EXT_PZERO
inline constexpr uint32_t kSaFlagPadMask = 0x0300;
// setkey's policy priorities (KAME): a lower value is a higher priority.
inline constexpr uint32_t kPriorityHigh = 0x40000000u;
inline constexpr uint32_t kPriorityDefault = 0x80000000u;
inline constexpr uint32_t kPriorityLow = 0xC0000000u;
// UDP_ENCAP_ESPINUDP (RFC 3948), the NAT-T type of an esp-udp SA.
inline constexpr uint8_t kNatTEspInUdp = 2;

struct Location {
  std::string file;
  int line = 0;
  int column = 0;
};

enum class CommandKind {
  kAdd, kUpdate, kGet, kDelete, kDeleteAll, kGetSpi, kFlush, kDump,
  kSpdAdd, kSpdUpdate, kSpdDelete, kSpdFlush, kSpdDump,
};

struct SaSpec {
  bool natT = false;  // protocol esp-udp: ESP with NAT_T_TYPE/SPORT/DPORT
  // esp-udp ADDR (ipsec-tools' grammar): the peer's original address before
  // NAT, sent as NAT_T_OA (transport mode's checksum fix-up needs it).
  std::optional<pfkey::SockAddress> natOa;
  pfkey::SockAddress src, dst;
  uint32_t spi = 0;   // host order; the CPI for IPCOMP
  uint8_t mode = IPSEC_MODE_ANY;
  uint32_t reqid = 0;
  // Window in packets. Above 255 it travels in our SA_REPLAY extension
  // (lib/pfkey/message.h); the service refuses what the data path cannot keep.
  uint32_t replay = 0;
  uint32_t flags = kSaFlagCyclicSeq;  // -esn adds pfkey::kSaFlagEsn (FreeBSD setkey's -esn)
  const Algorithm* encrypt = nullptr;
  const Algorithm* auth = nullptr;
  const Algorithm* compress = nullptr;
  std::vector<uint8_t> encryptKey, authKey;
  uint64_t hardTime = 0, softTime = 0, hardBytes = 0, softBytes = 0;  // 0 = not set/infinite
  // -df/-mtu/-tfc/-dummy: our SA_OPTIONS extension (lib/pfkey/message.h),
  // sent only when one is set; ESP and AH only.
  pfkey::SaOptions options;
};

struct SpdSpec {
  pfkey::SockAddress src, dst;  // ports inside
  uint8_t srcPrefix = 0, dstPrefix = 0;
  uint8_t upperProto = IPSEC_ULPROTO_ANY;
  pfkey::PolicyFields policy;   // dir always set; type/requests only when given
  bool policyGiven = false;     // spddelete may name only the direction
};

struct Command {
  CommandKind kind{};
  Location where;
  uint8_t satype = SADB_SATYPE_UNSPEC;
  SaSpec sa;
  SpdSpec spd;

  // The requests to send, in order, with sadb_msg_pid = pid and seq 0.
  // An `in` policy also installs/removes the `fwd` twin, as ipsec-tools'
  // setkey does on Linux (forwarded traffic is checked against fwd).
  std::vector<std::vector<uint8_t>> requests(uint32_t pid) const;
  // deleteall: the DELETE for one SA found by the dump.
  std::vector<uint8_t> deleteRequest(uint32_t spi, uint32_t pid) const;
  // The algorithms this command asks the service for (to check against its
  // SUPPORTED lists); null entries for the ones not used.
  bool usesAlgorithms() const noexcept { return encrypt() || auth(); }
  const Algorithm* encrypt() const noexcept { return sa.encrypt; }
  const Algorithm* auth() const noexcept { return sa.auth; }
};

}  // namespace ipsec::setkey
