// The setkey(8) language (ipsec-tools / FreeBSD syntax, the subset below) →
// a list of commands. Client side: runs in the setkey tool on the operator's
// file; errors carry file:line:column and never abort.
//
// Statements end with ';' and may span lines; '#' starts a comment.
//   add|update SRC DST PROTO SPI [-m mode] [-r size] [-u reqid] [-f padopt]...
//       [-lh secs] [-ls secs] [-bh bytes] [-bs bytes]
//       [-natt OAI [SPORT] OAR [DPORT]] [-natt_mtu N]   (FreeBSD's NAT-T form)
//       (-E ealgo key [-A aalgo key] | -A aalgo key | -C calgo [-R]) ;
//   get|delete SRC DST PROTO SPI ;     getspi SRC DST PROTO SPI [-m mode] [-u reqid] ;
//   deleteall SRC DST PROTO ;          flush [PROTO] ;     dump [PROTO] ;
//   spdadd|spdupdate SRC[/plen][[port]] DST[/plen][[port]] UPPER -P DIR [prio P] POLICY ;
//   spddelete SRC DST UPPER -P DIR [POLICY] ;   spdflush ;   spddump ;
// PROTO: esp, esp-udp, ah, ipcomp. Keys: 0x-hex or "string".
// POLICY: discard | none | bypass | entrust | ipsec REQ... with
// REQ = proto/mode/[src-dst]/[level], level default|use|require|unique[:id].
// P: N (default - N), or low|def|high optionally followed by + N / - N.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "setkey/command.h"

namespace ipsec::setkey {

struct SyntaxError {
  Location where;
  std::string message;
  // "file:line:column: message"
  std::string format() const;
};

std::variant<std::vector<Command>, SyntaxError> parseScript(std::string_view text,
                                                            std::string_view fileName);

}  // namespace ipsec::setkey
