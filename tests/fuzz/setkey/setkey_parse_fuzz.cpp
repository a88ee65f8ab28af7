// Fuzzes setkey::parseScript (operator input, but a parser all the same) and
// checks that every command it accepts builds requests that pfkey::parse
// accepts: the tool must never send what the service would call malformed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "pfkey/message.h"
#include "setkey/parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ipsec;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = setkey::parseScript(text, "fuzz");
  auto* cmds = std::get_if<std::vector<setkey::Command>>(&r);
  if (!cmds) return 0;
  for (const auto& c : *cmds) {
    for (const auto& req : c.requests(1))
      if (std::holds_alternative<pfkey::ParseError>(pfkey::parse(req))) std::abort();
    if (c.kind == setkey::CommandKind::kDeleteAll &&
        std::holds_alternative<pfkey::ParseError>(pfkey::parse(c.deleteRequest(0x1234, 1))))
      std::abort();
  }
  return 0;
}
