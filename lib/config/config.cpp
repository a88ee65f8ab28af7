// Parser of the ipsecd config file; run by the supervisor at start only.
// Structure: the text is cut into lines, each line into key and value, and a
// table (kKeys) maps each key to the function that checks and stores its
// value. Checks that involve several keys (distinct service uids) run after
// the last line. Every error carries the line it comes from.
#include "config/config.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

namespace ipsec::config {

namespace {

constexpr std::string_view kWhitespace = " \t\r\v\f";

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(kWhitespace);
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(kWhitespace);
  return s.substr(first, last - first + 1);
}

std::string quoted(std::string_view s) {
  std::string out = "\"";
  out.append(s);
  out += '"';
  return out;
}

// Where the parser is: the key being set and its line, for error messages.
struct Place {
  std::string_view fileName;
  unsigned line;
  std::string_view key;

  [[noreturn]] void fail(std::string_view message) const {
    std::string text(key);
    text += ": ";
    text.append(message);
    throw ConfigError(fileName, line, text);
  }
};

std::uint64_t parseNumber(const Place& at, std::string_view value, std::uint64_t min,
                          std::uint64_t max) {
  std::uint64_t n = 0;
  const bool digitsOnly =
      !value.empty() && std::all_of(value.begin(), value.end(),
                                    [](char c) { return c >= '0' && c <= '9'; });
  if (!digitsOnly) at.fail(quoted(value) + " is not a number");
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec == std::errc::result_out_of_range || end != value.data() + value.size() || n < min ||
      n > max) {
    at.fail(std::string(value) + " is out of range " + std::to_string(min) + ".." +
            std::to_string(max));
  }
  return n;
}

// Decimal, or hexadecimal with a 0x prefix (marks are usually written so).
std::uint64_t parseNumberOrHex(const Place& at, std::string_view value, std::uint64_t min,
                               std::uint64_t max) {
  if (value.size() < 2 || value[0] != '0' || (value[1] != 'x' && value[1] != 'X')) {
    return parseNumber(at, value, min, max);
  }
  const auto digits = value.substr(2);
  std::uint64_t n = 0;
  const bool hexOnly = !digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) != 0;
  });
  if (!hexOnly) at.fail(quoted(value) + " is not a number");
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n, 16);
  if (ec == std::errc::result_out_of_range || end != digits.data() + digits.size() || n < min ||
      n > max) {
    at.fail(std::string(value) + " is out of range " + std::to_string(min) + ".." +
            std::to_string(max));
  }
  return n;
}

bool parseBool(const Place& at, std::string_view value) {
  std::string lower(value);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "yes" || lower == "true" || lower == "1") return true;
  if (lower == "no" || lower == "false" || lower == "0") return false;
  at.fail(quoted(value) + " is not a boolean (yes/no/true/false/1/0)");
}

std::vector<std::string_view> splitList(const Place& at, std::string_view value) {
  std::vector<std::string_view> items;
  std::size_t start = 0;
  while (true) {
    const auto comma = value.find(',', start);
    const auto item = trim(value.substr(start, comma == std::string_view::npos
                                                   ? std::string_view::npos
                                                   : comma - start));
    if (item.empty()) at.fail("empty item in list");
    items.push_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

enum class PrefixForm { kRequired, kForbidden, kNetwork };

// kRequired: "addr/len" (an interface address; host bits may be set).
// kNetwork: "addr/len" with host bits zero (a route).
// kForbidden: a plain address, stored with the full length.
IpPrefix parsePrefix(const Place& at, std::string_view item, PrefixForm form) {
  const auto slash = item.find('/');
  if (form == PrefixForm::kForbidden && slash != std::string_view::npos) {
    at.fail(quoted(item) + " must be an address without a prefix length");
  }
  if (form != PrefixForm::kForbidden && slash == std::string_view::npos) {
    at.fail(quoted(item) + " is not an address/prefix");
  }
  const std::string address(item.substr(0, slash));
  IpPrefix p;
  if (address.find(':') != std::string::npos) {
    p.family = AF_INET6;
  } else {
    p.family = AF_INET;
  }
  // inet_pton wants a NUL-terminated string; an embedded NUL makes it stop
  // early, so reject those first rather than accept a truncated address.
  if (address.find('\0') != std::string::npos ||
      inet_pton(p.family, address.c_str(), p.bytes.data()) != 1) {
    at.fail(quoted(item) + (form == PrefixForm::kForbidden ? " is not an IPv4 or IPv6 address"
                                                           : " is not an address/prefix"));
  }
  const unsigned maxLength = p.family == AF_INET ? 32 : 128;
  if (slash == std::string_view::npos) {
    p.prefixLength = static_cast<std::uint8_t>(maxLength);
    return p;
  }
  const auto lengthText = item.substr(slash + 1);
  unsigned length = 0;
  const auto [end, ec] =
      std::from_chars(lengthText.data(), lengthText.data() + lengthText.size(), length);
  if (lengthText.empty() || ec != std::errc() || end != lengthText.data() + lengthText.size() ||
      !std::isdigit(static_cast<unsigned char>(lengthText.front()))) {
    at.fail(quoted(item) + " is not an address/prefix");
  }
  if (length > maxLength) {
    at.fail("prefix length " + std::string(lengthText) + " is out of range 0.." +
            std::to_string(maxLength) + " in " + quoted(item));
  }
  p.prefixLength = static_cast<std::uint8_t>(length);
  if (form == PrefixForm::kNetwork) {
    for (unsigned bit = length; bit < maxLength; ++bit) {
      if (p.bytes[bit / 8] & (0x80u >> (bit % 8))) {
        at.fail(quoted(item) + " has host bits set beyond the prefix length");
      }
    }
  }
  return p;
}

std::vector<IpPrefix> parsePrefixList(const Place& at, std::string_view value, PrefixForm form) {
  std::vector<IpPrefix> out;
  for (const auto item : splitList(at, value)) out.push_back(parsePrefix(at, item, form));
  return out;
}

std::string parseInterfaceName(const Place& at, std::string_view value) {
  const bool ok = value.size() < IFNAMSIZ && value != "." && value != ".." &&
                  std::none_of(value.begin(), value.end(), [](char c) {
                    return c == '/' || c == ':' || c == ',' ||
                           std::isspace(static_cast<unsigned char>(c)) ||
                           !std::isprint(static_cast<unsigned char>(c));
                  });
  if (!ok) {
    at.fail(quoted(value) + " is not a valid interface name (1.." +
            std::to_string(IFNAMSIZ - 1) + " printable characters, no '/', ':', ',' or space)");
  }
  return std::string(value);
}

std::string parsePath(const Place& at, std::string_view value, bool absolute) {
  if (value.find('\0') != std::string_view::npos) at.fail("a path cannot contain a NUL byte");
  if (absolute && value.front() != '/') at.fail(quoted(value) + " is not an absolute path");
  return std::string(value);
}

// Ids 0 (root) and 4294967295 ((uid_t)-1, "no change" to setresuid) are
// refused: a child must never run as root, and -1 would silently keep root.
constexpr std::uint64_t kMaxId = 4294967294u;

using Setter = void (*)(Config&, const Place&, std::string_view);

unsigned toUnsigned(std::uint64_t n) { return static_cast<unsigned>(n); }

const std::map<std::string_view, Setter>& keyTable() {
  static const std::map<std::string_view, Setter> kKeys = {
      {"tun_name", [](Config& c, const Place& at, std::string_view v) {
         c.tunName = parseInterfaceName(at, v);
       }},
      {"tun_mtu", [](Config& c, const Place& at, std::string_view v) {
         c.tunMtu = toUnsigned(parseNumber(at, v, 576, 65535));
       }},
      {"tun_offload", [](Config& c, const Place& at, std::string_view v) {
         c.tunOffload = parseBool(at, v);
       }},
      {"esp_ring", [](Config& c, const Place& at, std::string_view v) {
         c.espRing = parseBool(at, v);
       }},
      {"esp_send", [](Config& c, const Place& at, std::string_view v) {
         if (v == "raw") {
           c.espSend = Config::EspSend::kRaw;
         } else if (v == "packet") {
           c.espSend = Config::EspSend::kPacket;
         } else {
           at.fail(quoted(v) + " is neither raw nor packet");
         }
       }},
      {"tun_addresses", [](Config& c, const Place& at, std::string_view v) {
         c.tunAddresses = parsePrefixList(at, v, PrefixForm::kRequired);
       }},
      {"tun_routes", [](Config& c, const Place& at, std::string_view v) {
         c.tunRoutes = parsePrefixList(at, v, PrefixForm::kNetwork);
       }},
      {"local_addresses", [](Config& c, const Place& at, std::string_view v) {
         c.localAddresses = parsePrefixList(at, v, PrefixForm::kForbidden);
       }},
      {"runtime_dir", [](Config& c, const Place& at, std::string_view v) {
         c.runtimeDir = parsePath(at, v, true);
       }},
      {"setkey_file", [](Config& c, const Place& at, std::string_view v) {
         c.setkeyFile = parsePath(at, v, false);
       }},
      {"crypto_workers", [](Config& c, const Place& at, std::string_view v) {
         c.cryptoWorkers = toUnsigned(parseNumber(at, v, 1, 16));
       }},
      {"forwarder_threads", [](Config& c, const Place& at, std::string_view v) {
         c.forwarderThreads = toUnsigned(parseNumber(at, v, 1, 16));
       }},
      {"natt_port", [](Config& c, const Place& at, std::string_view v) {
         c.nattPort = toUnsigned(parseNumber(at, v, 1, 65535));
       }},
      {"transport_peers", [](Config& c, const Place& at, std::string_view v) {
         c.transportPeers = parsePrefixList(at, v, PrefixForm::kForbidden);
       }},
      {"fwmark", [](Config& c, const Place& at, std::string_view v) {
         // 0 would mark nothing: every packet, ESP included, would follow the rule.
         c.fwmark = static_cast<std::uint32_t>(parseNumberOrHex(at, v, 1, 0xffffffffu));
       }},
      {"route_table", [](Config& c, const Place& at, std::string_view v) {
         const auto t = parseNumberOrHex(at, v, 1, 0xffffffffu);
         if (t == 253 || t == 254 || t == 255) {
           at.fail(std::string(v) + " is a table the kernel uses (253 default, 254 main, 255 local)");
         }
         c.routeTable = static_cast<std::uint32_t>(t);
       }},
      {"keydb_uid", [](Config& c, const Place& at, std::string_view v) {
         c.keydb.uid = static_cast<uid_t>(parseNumber(at, v, 1, kMaxId));
       }},
      {"keydb_gid", [](Config& c, const Place& at, std::string_view v) {
         c.keydb.gid = static_cast<gid_t>(parseNumber(at, v, 1, kMaxId));
       }},
      {"policy_uid", [](Config& c, const Place& at, std::string_view v) {
         c.policy.uid = static_cast<uid_t>(parseNumber(at, v, 1, kMaxId));
       }},
      {"policy_gid", [](Config& c, const Place& at, std::string_view v) {
         c.policy.gid = static_cast<gid_t>(parseNumber(at, v, 1, kMaxId));
       }},
      {"crypto_uid", [](Config& c, const Place& at, std::string_view v) {
         c.crypto.uid = static_cast<uid_t>(parseNumber(at, v, 1, kMaxId));
       }},
      {"crypto_gid", [](Config& c, const Place& at, std::string_view v) {
         c.crypto.gid = static_cast<gid_t>(parseNumber(at, v, 1, kMaxId));
       }},
      {"forwarder_uid", [](Config& c, const Place& at, std::string_view v) {
         c.forwarder.uid = static_cast<uid_t>(parseNumber(at, v, 1, kMaxId));
       }},
      {"forwarder_gid", [](Config& c, const Place& at, std::string_view v) {
         c.forwarder.gid = static_cast<gid_t>(parseNumber(at, v, 1, kMaxId));
       }},
      {"pfkey_group", [](Config& c, const Place& at, std::string_view v) {
         c.pfkeyGroup = static_cast<gid_t>(parseNumber(at, v, 0, kMaxId));
       }},
      {"replay_window", [](Config& c, const Place& at, std::string_view v) {
         c.replayWindow = toUnsigned(parseNumber(at, v, 0, 4096));
       }},
      {"restart_limit", [](Config& c, const Place& at, std::string_view v) {
         c.restartLimit = toUnsigned(parseNumber(at, v, 0, 1000));
       }},
      {"restart_window_s", [](Config& c, const Place& at, std::string_view v) {
         c.restartWindowSeconds = toUnsigned(parseNumber(at, v, 1, 86400));
       }},
      {"debug", [](Config& c, const Place& at, std::string_view v) {
         c.debug = parseBool(at, v);
       }},
  };
  return kKeys;
}

// Two services sharing a uid could signal each other and share anything
// owned by that uid, which undoes the separation; so each needs its own.
void checkDistinctUids(const Config& c, std::string_view fileName,
                       const std::map<std::string_view, unsigned>& lineOf) {
  struct Service {
    std::string_view key;
    uid_t uid;
  };
  const Service services[] = {{"keydb_uid", c.keydb.uid},
                              {"policy_uid", c.policy.uid},
                              {"crypto_uid", c.crypto.uid},
                              {"forwarder_uid", c.forwarder.uid}};
  auto line = [&](std::string_view key) {
    const auto it = lineOf.find(key);
    return it == lineOf.end() ? 0u : it->second;
  };
  for (std::size_t i = 0; i < std::size(services); ++i) {
    for (std::size_t j = i + 1; j < std::size(services); ++j) {
      if (services[i].uid != services[j].uid) continue;
      // Blame the later of the two lines that set them (one must be set).
      const bool laterIsJ = line(services[j].key) >= line(services[i].key);
      const auto& blamed = laterIsJ ? services[j] : services[i];
      const auto& other = laterIsJ ? services[i] : services[j];
      Place{fileName, line(blamed.key), blamed.key}.fail(
          std::to_string(blamed.uid) + " is also " + std::string(other.key) +
          "; each service needs its own uid");
    }
  }
}

// Each forwarder thread drives crypto workers of its own (i % threads): a
// thread without one would have no ring to seal on.
void checkForwarderThreads(const Config& c, std::string_view fileName,
                           const std::map<std::string_view, unsigned>& lineOf) {
  if (c.cryptoWorkers >= c.forwarderThreads) return;
  const auto it = lineOf.find("forwarder_threads");
  Place{fileName, it == lineOf.end() ? 0u : it->second, "forwarder_threads"}.fail(
      std::to_string(c.forwarderThreads) + " threads need crypto_workers of at least as many (it is " +
      std::to_string(c.cryptoWorkers) + "): each thread drives workers of its own");
}

}  // namespace

ConfigError::ConfigError(std::string_view fileName, unsigned line, std::string_view message)
    : std::runtime_error(std::string(fileName) +
                         (line ? ":" + std::to_string(line) : std::string()) + ": " +
                         std::string(message)),
      fileName_(fileName),
      line_(line),
      message_(message) {}

std::size_t IpPrefix::addressLength() const noexcept { return family == AF_INET6 ? 16 : 4; }

std::string IpPrefix::addressString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(family, bytes.data(), buf, sizeof buf) == nullptr) return "?";
  return buf;
}

std::string IpPrefix::toString() const {
  return addressString() + "/" + std::to_string(prefixLength);
}

Config parseConfig(std::string_view text, std::string_view fileName) {
  Config config;
  std::map<std::string_view, unsigned> lineOf;  // key -> line that set it
  const auto& keys = keyTable();
  unsigned lineNumber = 0;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto newline = text.find('\n', start);
    auto line = text.substr(start, newline == std::string_view::npos ? std::string_view::npos
                                                                     : newline - start);
    start = newline == std::string_view::npos ? text.size() + 1 : newline + 1;
    ++lineNumber;

    // '#' starts a comment anywhere on a line: no value needs the character.
    if (const auto hash = line.find('#'); hash != std::string_view::npos) {
      line = line.substr(0, hash);
    }
    line = trim(line);
    if (line.empty()) continue;

    const auto equals = line.find('=');
    if (equals == std::string_view::npos) {
      throw ConfigError(fileName, lineNumber, "expected \"key = value\"");
    }
    const auto key = trim(line.substr(0, equals));
    const auto value = trim(line.substr(equals + 1));
    if (key.empty()) throw ConfigError(fileName, lineNumber, "missing key before '='");
    const auto it = keys.find(key);
    if (it == keys.end()) {
      throw ConfigError(fileName, lineNumber, "unknown key " + quoted(key));
    }
    const Place at{fileName, lineNumber, it->first};
    if (const auto seen = lineOf.find(it->first); seen != lineOf.end()) {
      at.fail("duplicate key (first set on line " + std::to_string(seen->second) + ")");
    }
    if (value.empty()) at.fail("empty value");
    it->second(config, at, value);
    lineOf.emplace(it->first, lineNumber);
  }
  checkDistinctUids(config, fileName, lineOf);
  checkForwarderThreads(config, fileName, lineOf);
  return config;
}

Config loadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path, 0, std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError(path, 0, "read error");
  return parseConfig(text.str(), path);
}

}  // namespace ipsec::config
