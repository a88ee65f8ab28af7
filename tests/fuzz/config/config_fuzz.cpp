// libFuzzer target for ipsec::config::parseConfig (the supervisor's config
// parser). The contract under test: any text either parses or throws
// ConfigError; any other exception escapes and libFuzzer reports it.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto config = ipsec::config::parseConfig(text, "fuzz.conf");
    // Exercise the formatting of what was accepted, too.
    for (const auto& p : config.tunAddresses) (void)p.toString();
    for (const auto& p : config.tunRoutes) (void)p.toString();
  } catch (const ipsec::config::ConfigError&) {
  }
  return 0;
}
