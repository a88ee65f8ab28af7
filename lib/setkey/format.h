// Text forms of PF_KEY replies for the setkey tool, in ipsec-tools' layout
// (the corpus .out files): SA entries for -D / get / dump, policies for -DP /
// spddump, and a field dump of any message for -x and -v. Client side; the
// input is a reply already checked by pfkey::parse.
#pragma once

#include <ctime>
#include <string>

#include "pfkey/message.h"

namespace ipsec::setkey {

// One SA (reply to GET or one DUMP message). `now` fills "current:"/"diff:".
std::string formatSa(const pfkey::ParsedMessage& m, std::time_t now);
// One policy (one SPDDUMP message or SPDGET reply).
std::string formatPolicy(const pfkey::ParsedMessage& m, std::time_t now);
// Every header field and extension, for debugging (-x, -v).
std::string formatDebug(const pfkey::ParsedMessage& m);
// "Nov 27 12:28:18 2026" in local time; 20 spaces for 0 (never).
std::string formatTime(uint64_t t);
// Priority as setkey writes it: "def", "def + 10", "high - 5", "low".
std::string formatPriority(uint32_t priority);

}  // namespace ipsec::setkey
