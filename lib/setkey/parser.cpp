// setkey(8) language parser (grammar in parser.h). Client side, operator
// input: a mistake is reported with its file:line:column and the parse stops
// there, as setkey does; nothing is sent for a script that does not parse.
// Internally a mistake throws Failure, caught once in parseScript.
#include "setkey/parser.h"

#include <linux/ipsec.h>
#include <netinet/in.h>

#include <charconv>
#include <cstdint>
#include <optional>

#include "pfkey/message.h"

namespace ipsec::setkey {
namespace {

struct Token {
  std::string text;
  int line = 0;
  int column = 0;
  bool quoted = false;
};

struct Failure {
  SyntaxError error;
};

class Lexer {
 public:
  Lexer(std::string_view text, std::string_view file) : text_(text), file_(file) {}

  // Next statement's tokens, without the ';'. nullopt at end of input.
  std::optional<std::vector<Token>> statement() {
    std::vector<Token> out;
    while (true) {
      skipSpaceAndComments();
      if (pos_ >= text_.size()) {
        if (out.empty()) return std::nullopt;
        throw Failure{{{std::string(file_), out.back().line, out.back().column}, "missing ';' at end of statement"}};
      }
      if (text_[pos_] == ';') {
        Token semi = here();
        advance();
        if (out.empty()) throw Failure{{{std::string(file_), semi.line, semi.column}, "empty statement"}};
        return out;
      }
      out.push_back(token());
    }
  }

  Location location(const Token& t) const { return {std::string(file_), t.line, t.column}; }

 private:
  Token here() const { return Token{{}, line_, column_, false}; }
  void advance() {
    if (text_[pos_] == '\n') {
      ++line_;
      column_ = 1;
    } else {
      ++column_;
    }
    ++pos_;
  }
  void skipSpaceAndComments() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') advance();
      } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        advance();
      } else {
        return;
      }
    }
  }
  Token token() {
    Token t = here();
    if (text_[pos_] == '"') {
      t.quoted = true;
      advance();
      while (pos_ < text_.size() && text_[pos_] != '"') {
        if (text_[pos_] == '\n') break;
        t.text += text_[pos_];
        advance();
      }
      if (pos_ >= text_.size() || text_[pos_] != '"')
        throw Failure{{{std::string(file_), t.line, t.column}, "unterminated string"}};
      advance();
      return t;
    }
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ';' || c == '#' || c == '"') break;
      t.text += c;
      advance();
    }
    return t;
  }

  std::string_view text_;
  std::string_view file_;
  size_t pos_ = 0;
  int line_ = 1;
  int column_ = 1;
};

// Walks the tokens of one statement.
class StatementParser {
 public:
  StatementParser(const Lexer& lexer, std::vector<Token> tokens)
      : lexer_(lexer), tokens_(std::move(tokens)) {}

  Command parse();

 private:
  [[noreturn]] void failAt(const Token& t, std::string message) const {
    throw Failure{{lexer_.location(t), std::move(message)}};
  }
  [[noreturn]] void failAtEnd(std::string message) const {
    const Token& last = tokens_.back();
    Token after = last;
    after.column += static_cast<int>(last.text.size());
    failAt(after, std::move(message));
  }
  bool atEnd() const { return next_ >= tokens_.size(); }
  const Token& peek() const { return tokens_[next_]; }
  const Token& take(const char* what) {
    if (atEnd()) failAtEnd(std::string("expected ") + what);
    return tokens_[next_++];
  }
  void expectEnd() const {
    if (!atEnd()) failAt(peek(), "unexpected '" + peek().text + "'");
  }

  uint64_t number(const Token& t, uint64_t max, const char* what) const;
  uint8_t protocol(const Token& t, Command& c) const;
  pfkey::SockAddress saAddress(const Token& t) const;
  void spdAddress(const Token& t, pfkey::SockAddress& addr, uint8_t& prefix) const;
  std::vector<uint8_t> keyBytes(const Token& t) const;
  void saOptions(Command& c);
  void freeBsdNatT(Command& c, const Token& opt);
  pfkey::SockAddress natTEnd(const char* what);
  void mtu(SaSpec& s, const Token& t);
  void checkSaAlgorithms(const Command& c, const Token& at) const;
  uint8_t upperProtocol(const Token& t) const;
  uint8_t direction(const Token& t) const;
  uint32_t priority();
  void policy(Command& c, bool required);
  pfkey::RequestFields request(const Token& t, sa_family_t family) const;

  const Lexer& lexer_;
  std::vector<Token> tokens_;
  size_t next_ = 0;
};

uint64_t StatementParser::number(const Token& t, uint64_t max, const char* what) const {
  std::string_view s = t.text;
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (t.quoted || s.empty() || ec != std::errc() || p != s.data() + s.size())
    failAt(t, std::string("invalid ") + what + " '" + t.text + "'");
  if (v > max) failAt(t, std::string(what) + " out of range: " + t.text);
  return v;
}

uint8_t StatementParser::protocol(const Token& t, Command& c) const {
  if (t.text == "esp") return SADB_SATYPE_ESP;
  if (t.text == "esp-udp") {
    c.sa.natT = true;
    return SADB_SATYPE_ESP;
  }
  if (t.text == "ah") return SADB_SATYPE_AH;
  if (t.text == "ipcomp") return SADB_X_SATYPE_IPCOMP;
  failAt(t, "unknown protocol '" + t.text + "' (esp, esp-udp, ah, ipcomp)");
}

// "addr" or "addr[port]"
pfkey::SockAddress StatementParser::saAddress(const Token& t) const {
  std::string_view s = t.text;
  uint16_t port = 0;
  if (auto open = s.find('['); open != std::string_view::npos) {
    if (s.back() != ']') failAt(t, "malformed port in '" + t.text + "'");
    Token p = t;
    p.text = std::string(s.substr(open + 1, s.size() - open - 2));
    p.column += static_cast<int>(open) + 1;
    port = p.text == "any" ? 0 : static_cast<uint16_t>(number(p, 65535, "port"));
    s = s.substr(0, open);
  }
  auto a = pfkey::SockAddress::fromString(s);
  if (!a || t.quoted) failAt(t, "invalid address '" + std::string(s) + "'");
  a->port = port;
  return *a;
}

// "addr[/plen][[port]]"
void StatementParser::spdAddress(const Token& t, pfkey::SockAddress& addr, uint8_t& prefix) const {
  std::string text = t.text;
  std::string portPart;
  if (auto open = text.find('['); open != std::string::npos) {
    portPart = text.substr(open);
    text.resize(open);
  }
  std::optional<Token> plen;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    plen = t;
    plen->text = text.substr(slash + 1);
    plen->column += static_cast<int>(slash) + 1;
    text.resize(slash);
  }
  Token base = t;
  base.text = text + portPart;
  addr = saAddress(base);
  prefix = plen ? static_cast<uint8_t>(number(*plen, addr.fullPrefix(), "prefix length"))
                : addr.fullPrefix();
}

std::vector<uint8_t> StatementParser::keyBytes(const Token& t) const {
  if (t.quoted) return std::vector<uint8_t>(t.text.begin(), t.text.end());
  std::string_view s = t.text;
  if (s.size() < 3 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
    failAt(t, "a key is 0x-hex or a \"string\", not '" + t.text + "'");
  s.remove_prefix(2);
  if (s.size() % 2) failAt(t, "hex key has an odd number of digits");
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    auto [p, ec] = std::from_chars(s.data() + 2 * i, s.data() + 2 * i + 2, out[i], 16);
    if (ec != std::errc() || p != s.data() + 2 * i + 2) failAt(t, "invalid hex digit in key");
  }
  return out;
}

void StatementParser::saOptions(Command& c) {
  SaSpec& s = c.sa;
  std::optional<Token> natTMtuAt;
  while (!atEnd()) {
    const Token& opt = take("option");
    auto algorithm = [&](AlgKind kind, const char* what) {
      const Token& name = take(what);
      const Algorithm* a = findAlgorithm(kind, name.text);
      if (!a) failAt(name, std::string("unknown ") + what + " '" + name.text + "'");
      return a;
    };
    auto keyFor = [&](const Algorithm* a) {
      if (!a->takesKey()) return std::vector<uint8_t>{};
      const Token& k = take("key");
      auto bytes = keyBytes(k);
      if (!a->acceptsKeyBits(static_cast<uint32_t>(bytes.size() * 8))) {
        std::string sizes;
        for (auto b : a->keyBits()) sizes += (sizes.empty() ? "" : "/") + std::to_string(b);
        failAt(k, std::string(a->name) + " takes a " + sizes + "-bit key, not " +
                      std::to_string(bytes.size() * 8));
      }
      return bytes;
    };
    if (opt.text == "-m") {
      const Token& m = take("mode");
      if (m.text == "transport") s.mode = IPSEC_MODE_TRANSPORT;
      else if (m.text == "tunnel") s.mode = IPSEC_MODE_TUNNEL;
      else if (m.text == "any") s.mode = IPSEC_MODE_ANY;
      else failAt(m, "unknown mode '" + m.text + "' (transport, tunnel, any)");
    } else if (opt.text == "-r") {
      // Above 255 (sadb_sa_replay is a u8) the window goes in our SA_REPLAY extension.
      s.replay = static_cast<uint32_t>(number(take("replay window size"), UINT32_MAX, "replay window size"));
    } else if (opt.text == "-esn") {
      // FreeBSD setkey's flag for 64-bit sequence numbers (ipsec-tools has none).
      s.flags |= pfkey::kSaFlagEsn;
    } else if (opt.text == "-u") {
      s.reqid = static_cast<uint32_t>(number(take("reqid"), UINT32_MAX, "reqid"));
    } else if (opt.text == "-f") {
      const Token& f = take("pad option");
      if (f.text == "zero-pad") s.flags = (s.flags & ~kSaFlagPadMask) | kSaFlagZeroPad;
      else if (f.text == "random-pad") s.flags = (s.flags & ~kSaFlagPadMask) | kSaFlagRandomPad;
      else if (f.text == "seq-pad") s.flags &= ~kSaFlagPadMask;
      else if (f.text == "nocyclic-seq") s.flags &= ~kSaFlagCyclicSeq;
      else if (f.text == "cyclic-seq") s.flags |= kSaFlagCyclicSeq;
      else failAt(f, "unknown -f option '" + f.text + "'");
    } else if (opt.text == "-lh" || opt.text == "-ls" || opt.text == "-bh" || opt.text == "-bs") {
      uint64_t v = number(take("lifetime"), UINT64_MAX, "lifetime");
      (opt.text == "-lh" ? s.hardTime : opt.text == "-ls" ? s.softTime
       : opt.text == "-bh" ? s.hardBytes : s.softBytes) = v;
    } else if (opt.text == "-E") {
      if (s.encrypt) failAt(opt, "-E given twice");
      s.encrypt = algorithm(AlgKind::kEncrypt, "encryption algorithm");
      s.encryptKey = keyFor(s.encrypt);
    } else if (opt.text == "-A") {
      if (s.auth) failAt(opt, "-A given twice");
      s.auth = algorithm(AlgKind::kAuth, "authentication algorithm");
      s.authKey = keyFor(s.auth);
    } else if (opt.text == "-C") {
      if (s.compress) failAt(opt, "-C given twice");
      s.compress = algorithm(AlgKind::kCompress, "compression algorithm");
      if (!atEnd() && peek().text == "-R") {
        take("-R");
        s.flags |= kSaFlagRawCpi;
      }
    } else if (opt.text == "-df") {
      // Our SA_OPTIONS extension: the outer header's DF bit.
      const Token& d = take("DF policy");
      if (d.text == "clear") s.options.df = pfkey::kSaDfClear;
      else if (d.text == "set") s.options.df = pfkey::kSaDfSet;
      else if (d.text == "copy") s.options.df = pfkey::kSaDfCopy;
      else if (d.text == "inherit") s.options.df = pfkey::kSaDfInherit;
      else failAt(d, "unknown -df policy '" + d.text + "' (copy, set, clear, inherit)");
    } else if (opt.text == "-mtu") {
      mtu(s, take("MTU"));
    } else if (opt.text == "-natt") {
      freeBsdNatT(c, opt);
    } else if (opt.text == "-natt_mtu") {
      // FreeBSD's NAT_T_FRAG (racoon's esp_frag): how large an ESP-in-UDP
      // packet may be before it is fragmented, which is our SA's outer path
      // MTU (-mtu), so it travels as that.
      natTMtuAt = opt;
      mtu(s, take("NAT-T MTU"));
    } else if (opt.text == "-tfc") {
      s.options.tfcPad = static_cast<uint16_t>(number(take("TFC pad size"), 65535, "TFC pad size"));
    } else if (opt.text == "-dummy") {
      s.options.dummyIntervalMs =
          static_cast<uint32_t>(number(take("dummy interval (ms)"), UINT32_MAX, "dummy interval (ms)"));
    } else if (opt.text == "-ctx") {
      failAt(opt, "security contexts (-ctx) are not supported");
    } else {
      failAt(opt, "unknown option '" + opt.text + "'");
    }
  }
  if (natTMtuAt && !s.natT) failAt(*natTMtuAt, "-natt_mtu needs NAT-T (-natt, or esp-udp)");
}

// The service refuses what no path carries: below 576 (IPv4) or 1280 (IPv6).
void StatementParser::mtu(SaSpec& s, const Token& t) {
  const uint64_t mtu = number(t, 65535, "MTU");
  const uint16_t floor = s.src.isV6() ? pfkey::kMinMtuV6 : pfkey::kMinMtuV4;
  if (mtu != 0 && mtu < floor)
    failAt(t, "MTU " + t.text + " is below " + std::to_string(floor) + " for this address family");
  if (s.options.mtu != 0 && s.options.mtu != mtu)
    failAt(t, "a second, different MTU (-mtu and -natt_mtu both set the outer path MTU)");
  s.options.mtu = static_cast<uint16_t>(mtu);
}

// "ADDR[PORT]", "ADDR [PORT]" or "ADDR [ PORT ]": FreeBSD's lexer makes the
// brackets tokens of their own, so any spacing around them is the same.
pfkey::SockAddress StatementParser::natTEnd(const char* what) {
  Token t = take(what);
  if (!t.quoted && !t.text.empty() && t.text[0] == '-')
    failAt(t, std::string("expected ") + what + ", not '" + t.text + "'");
  if (t.text.find('[') == std::string::npos && !atEnd() && !peek().text.empty() && peek().text[0] == '[') {
    while (t.text.back() != ']' && !atEnd()) t.text += take("]").text;
  }
  if (t.text.find('[') == std::string::npos)
    failAt(t, std::string(what) + " needs its port in brackets: -natt OAI [SPORT] OAR [DPORT]");
  pfkey::SockAddress a = saAddress(t);
  if (a.port == 0) failAt(t, "a NAT-T port is 1 to 65535");
  return a;
}

// FreeBSD's setkey(8): "-natt OAI [SPORT] OAR [DPORT]" on an esp SA is ESP in
// UDP from SPORT to DPORT (NAT_T_TYPE, SPORT, DPORT), OAI and OAR the
// original (pre-NAT) addresses of the SA's source and destination (FreeBSD
// sends them as NAT_T_OAI and NAT_T_OAR). The request is the one ipsec-tools'
// "SRC[SPORT] DST[DPORT] esp-udp OAI" gives: our PF_KEY has Linux's single
// NAT_T_OA (type 21, FreeBSD's OAI number), the source's original address
// that transport mode's checksum fix-up needs. OAR has no extension there,
// so it must be the SA's destination itself (nothing to fix up then).
void StatementParser::freeBsdNatT(Command& c, const Token& opt) {
  SaSpec& s = c.sa;
  if (c.kind != CommandKind::kAdd && c.kind != CommandKind::kUpdate) failAt(opt, "-natt is for add and update");
  if (c.satype != SADB_SATYPE_ESP) failAt(opt, "-natt is for esp");
  if (s.natT) failAt(opt, "NAT-T given twice (-natt, or esp-udp and -natt)");
  const pfkey::SockAddress oai = natTEnd("original initiator address");
  const size_t oarAt = next_;
  const pfkey::SockAddress oar = natTEnd("original responder address");
  if (oai.family != s.src.family || oar.family != s.src.family)
    failAt(opt, "-natt addresses of another family than the SA's");
  pfkey::SockAddress dstNoPort = s.dst, oarNoPort = oar;
  dstNoPort.port = oarNoPort.port = 0;
  if (!(oarNoPort == dstNoPort))
    failAt(tokens_[oarAt], "an original responder address other than the SA's destination cannot be sent: "
                  "our PF_KEY (Linux's) has one original address, NAT_T_OA, for the source");
  s.natT = true;
  s.src.port = oai.port;
  s.dst.port = oar.port;
  s.natOa = oai;
  s.natOa->port = 0;
}

void StatementParser::checkSaAlgorithms(const Command& c, const Token& at) const {
  const SaSpec& s = c.sa;
  switch (c.satype) {
    case SADB_SATYPE_ESP:
      if (!s.encrypt) failAt(at, "esp needs -E");
      if (s.compress) failAt(at, "-C is for ipcomp");
      if (s.encrypt->aead && s.auth) failAt(at, std::string(s.encrypt->name) + " includes integrity: no -A");
      break;
    case SADB_SATYPE_AH:
      if (!s.auth) failAt(at, "ah needs -A");
      if (s.encrypt || s.compress) failAt(at, "ah takes only -A");
      break;
    case SADB_X_SATYPE_IPCOMP:
      if (!s.compress) failAt(at, "ipcomp needs -C");
      if (s.encrypt || s.auth) failAt(at, "ipcomp takes only -C");
      if (s.options.any()) failAt(at, "-df, -mtu, -tfc and -dummy are for esp and ah");
      break;
  }
}

uint8_t StatementParser::upperProtocol(const Token& t) const {
  if (t.text == "any") return IPSEC_ULPROTO_ANY;
  if (t.text == "icmp") return IPPROTO_ICMP;
  if (t.text == "tcp") return IPPROTO_TCP;
  if (t.text == "udp") return IPPROTO_UDP;
  if (t.text == "icmp6" || t.text == "ipv6-icmp") return IPPROTO_ICMPV6;
  if (t.text == "gre") return IPPROTO_GRE;
  if (!t.text.empty() && t.text[0] >= '0' && t.text[0] <= '9')
    return static_cast<uint8_t>(number(t, 255, "upper-layer protocol"));
  failAt(t, "unknown upper-layer protocol '" + t.text + "'");
}

uint8_t StatementParser::direction(const Token& t) const {
  if (t.text == "in") return IPSEC_DIR_INBOUND;
  if (t.text == "out") return IPSEC_DIR_OUTBOUND;
  if (t.text == "fwd") return IPSEC_DIR_FWD;
  failAt(t, "unknown direction '" + t.text + "' (in, out, fwd)");
}

// After "prio": N | low|def|default|high [(+|-) N]. Lower value = preferred,
// so "+ N" lowers the value (setkey: "def + 10" is 0x7ffffff6).
uint32_t StatementParser::priority() {
  const Token& t = take("priority");
  int64_t base;
  if (t.text == "low") base = kPriorityLow;
  else if (t.text == "def" || t.text == "default") base = kPriorityDefault;
  else if (t.text == "high") base = kPriorityHigh;
  else {
    bool negative = !t.text.empty() && t.text[0] == '-';
    Token n = t;
    if (negative) n.text.erase(0, 1);
    int64_t v = static_cast<int64_t>(number(n, kPriorityDefault, "priority"));
    return static_cast<uint32_t>(kPriorityDefault + (negative ? v : -v));
  }
  if (!atEnd() && (peek().text == "+" || peek().text == "-")) {
    bool plus = take("+/-").text == "+";
    const Token& n = take("priority offset");
    int64_t off = static_cast<int64_t>(number(n, 0x40000000u, "priority offset"));
    int64_t v = plus ? base - off : base + off;
    if (v < 0 || v > UINT32_MAX) failAt(n, "priority out of range");
    return static_cast<uint32_t>(v);
  }
  return static_cast<uint32_t>(base);
}

// proto/mode/[src-dst]/[level[:id]]
pfkey::RequestFields StatementParser::request(const Token& t, sa_family_t family) const {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t slash = t.text.find('/', start);
    parts.push_back(t.text.substr(start, slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (parts.size() < 2 || parts.size() > 4)
    failAt(t, "a request is proto/mode/src-dst/level, not '" + t.text + "'");
  pfkey::RequestFields r;
  if (parts[0] == "esp") r.proto = IPPROTO_ESP;
  else if (parts[0] == "ah") r.proto = IPPROTO_AH;
  else if (parts[0] == "ipcomp") r.proto = IPPROTO_COMP;
  else failAt(t, "unknown request protocol '" + parts[0] + "'");
  if (parts[1] == "transport") r.mode = IPSEC_MODE_TRANSPORT;
  else if (parts[1] == "tunnel") r.mode = IPSEC_MODE_TUNNEL;
  else failAt(t, "unknown request mode '" + parts[1] + "'");
  if (parts.size() > 2 && !parts[2].empty()) {
    size_t dash = parts[2].find('-');
    auto src = pfkey::SockAddress::fromString(std::string_view(parts[2]).substr(0, dash));
    auto dst = dash == std::string::npos ? std::nullopt
                                         : pfkey::SockAddress::fromString(parts[2].substr(dash + 1));
    if (!src || !dst) failAt(t, "endpoints are src-dst addresses, not '" + parts[2] + "'");
    if (src->family != dst->family) failAt(t, "endpoints of different address families");
    r.tunnelSrc = src;
    r.tunnelDst = dst;
  } else if (r.mode == IPSEC_MODE_TUNNEL) {
    failAt(t, "tunnel mode needs src-dst endpoints");
  }
  (void)family;  // inner and outer families may differ (4-in-6, 6-in-4)
  std::string level = parts.size() > 3 ? parts[3] : "";
  if (level.empty() || level == "default") r.level = IPSEC_LEVEL_DEFAULT;
  else if (level == "use") r.level = IPSEC_LEVEL_USE;
  else if (level == "require") r.level = IPSEC_LEVEL_REQUIRE;
  else if (level.rfind("unique", 0) == 0) {
    r.level = IPSEC_LEVEL_UNIQUE;
    if (level.size() > 6) {
      if (level[6] != ':') failAt(t, "unknown level '" + level + "'");
      Token id = t;
      id.text = level.substr(7);
      r.reqid = static_cast<uint32_t>(number(id, IPSEC_MANUAL_REQID_MAX, "reqid"));
    }
  } else {
    failAt(t, "unknown level '" + level + "' (default, use, require, unique[:id])");
  }
  return r;
}

void StatementParser::policy(Command& c, bool required) {
  if (atEnd() && !required) return;
  const Token& p = take("-P");
  if (p.text == "-ctx") failAt(p, "security contexts (-ctx) are not supported");
  if (p.text != "-P") failAt(p, "expected -P, not '" + p.text + "'");
  auto& pol = c.spd.policy;
  pol.dir = direction(take("direction"));
  if (atEnd()) {
    if (required) failAtEnd("expected a policy (discard, none, ipsec ...)");
    return;
  }
  c.spd.policyGiven = true;
  pol.priority = kPriorityDefault;
  if (peek().text == "prio" || peek().text == "priority") {
    take("prio");
    pol.priority = priority();
  }
  const Token& type = take("policy");
  if (type.text == "discard") pol.type = IPSEC_POLICY_DISCARD;
  else if (type.text == "none") pol.type = IPSEC_POLICY_NONE;
  else if (type.text == "bypass") pol.type = IPSEC_POLICY_BYPASS;
  else if (type.text == "entrust") pol.type = IPSEC_POLICY_ENTRUST;
  else if (type.text == "ipsec") pol.type = IPSEC_POLICY_IPSEC;
  else failAt(type, "unknown policy '" + type.text + "' (discard, none, ipsec)");
  if (pol.type == IPSEC_POLICY_IPSEC) {
    if (atEnd()) failAtEnd("ipsec needs at least one request (e.g. esp/transport//require)");
    while (!atEnd()) pol.requests.push_back(request(take("request"), c.spd.src.family));
  }
  expectEnd();
}

Command StatementParser::parse() {
  Command c;
  const Token& verb = take("command");
  c.where = lexer_.location(verb);
  const std::string& v = verb.text;
  auto saHead = [&](bool withSpi) {
    c.sa.src = saAddress(take("source address"));
    c.sa.dst = saAddress(take("destination address"));
    if (c.sa.src.family != c.sa.dst.family) failAt(verb, "source and destination families differ");
    c.satype = protocol(take("protocol"), c);
    // ipsec-tools: "esp-udp ADDR" names the original address (NAT-OA). An
    // SPI never parses as an address (inet_pton wants dots or colons).
    if (c.sa.natT && !atEnd() && !peek().quoted && pfkey::SockAddress::fromString(peek().text)) {
      const Token& oa = take("original address");
      c.sa.natOa = saAddress(oa);
      if (c.sa.natOa->family != c.sa.src.family) failAt(oa, "original address of another family than the SA's");
      if (c.sa.natOa->port != 0) failAt(oa, "an original address takes no port");
    }
    if (withSpi) c.sa.spi = static_cast<uint32_t>(number(take("SPI"), UINT32_MAX, "SPI"));
    if (c.sa.natT) {
      // esp-udp without ports means the NAT-T port.
      if (!c.sa.src.port) c.sa.src.port = 4500;
      if (!c.sa.dst.port) c.sa.dst.port = 4500;
    }
  };
  if (v == "add" || v == "update") {
    c.kind = v == "add" ? CommandKind::kAdd : CommandKind::kUpdate;
    saHead(true);
    saOptions(c);
    checkSaAlgorithms(c, verb);
  } else if (v == "get" || v == "delete") {
    c.kind = v == "get" ? CommandKind::kGet : CommandKind::kDelete;
    saHead(true);
    expectEnd();
  } else if (v == "getspi") {
    c.kind = CommandKind::kGetSpi;
    saHead(true);
    saOptions(c);
    if (c.sa.encrypt || c.sa.auth || c.sa.compress) failAt(verb, "getspi takes no algorithms");
  } else if (v == "deleteall") {
    c.kind = CommandKind::kDeleteAll;
    saHead(false);
    expectEnd();
  } else if (v == "flush" || v == "dump") {
    c.kind = v == "flush" ? CommandKind::kFlush : CommandKind::kDump;
    if (!atEnd()) c.satype = protocol(take("protocol"), c);
    expectEnd();
  } else if (v == "spdadd" || v == "spdupdate" || v == "spddelete") {
    c.kind = v == "spdadd" ? CommandKind::kSpdAdd
             : v == "spdupdate" ? CommandKind::kSpdUpdate : CommandKind::kSpdDelete;
    spdAddress(take("source selector"), c.spd.src, c.spd.srcPrefix);
    spdAddress(take("destination selector"), c.spd.dst, c.spd.dstPrefix);
    if (c.spd.src.family != c.spd.dst.family) failAt(verb, "source and destination families differ");
    c.spd.upperProto = upperProtocol(take("upper-layer protocol"));
    policy(c, c.kind != CommandKind::kSpdDelete);
    if (c.kind == CommandKind::kSpdDelete && c.spd.policy.dir == IPSEC_DIR_ANY)
      failAtEnd("spddelete needs -P direction");
  } else if (v == "spdflush" || v == "spddump") {
    c.kind = v == "spdflush" ? CommandKind::kSpdFlush : CommandKind::kSpdDump;
    expectEnd();
  } else {
    failAt(verb, "unknown command '" + v + "'");
  }
  return c;
}

}  // namespace

std::string SyntaxError::format() const {
  return where.file + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) +
         ": " + message;
}

std::variant<std::vector<Command>, SyntaxError> parseScript(std::string_view text,
                                                            std::string_view fileName) {
  Lexer lexer(text, fileName);
  std::vector<Command> out;
  try {
    while (auto tokens = lexer.statement()) out.push_back(StatementParser(lexer, std::move(*tokens)).parse());
  } catch (const Failure& f) {
    return f.error;
  }
  return out;
}

}  // namespace ipsec::setkey
