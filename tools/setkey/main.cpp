// setkey: manage the SAD and SPD of ipsecd with setkey(8) syntax. Runs as an
// unprivileged or root user process; talks only PF_KEY v2, to ipsec-policy's
// Unix socket (--socket, else $IPSEC_PFKEY_SOCKET, else /run/ipsecd/pfkey).
// Trusts the operator's script (but reports its mistakes with file:line:col)
// and checks every reply with pfkey::parse.
#include <sys/prctl.h>
#include <linux/pfkeyv2.h>
#include <arpa/inet.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "client.h"
#include "setkey/format.h"
#include "setkey/parser.h"

namespace {

using namespace ipsec;
using namespace ipsec::setkey;

constexpr const char* kDefaultSocket = "/run/ipsecd/pfkey";

constexpr const char* kHelp = R"(NAME
    setkey - manage ipsecd's IPsec SA and SP databases

SYNOPSIS
    setkey [--socket PATH] [-v] [-n] -f FILE
    setkey [--socket PATH] [-v] [-n] -c
    setkey [--socket PATH] [-v] -D [-a]
    setkey [--socket PATH] [-v] -DP
    setkey [--socket PATH] [-v] -F
    setkey [--socket PATH] [-v] -FP
    setkey [--socket PATH] -x
    setkey -h | --help

DESCRIPTION
    setkey adds, updates, dumps and flushes Security Association (SAD) and
    Security Policy (SPD) entries of ipsecd, the user-space Fast IPsec
    service. It speaks PF_KEY v2 (RFC 2367, Linux numbering) to the service's
    SOCK_SEQPACKET socket, one message per datagram, the way ipsec-tools'
    setkey speaks to a kernel.

OPTIONS
    --socket PATH  The PF_KEY socket. Default: $IPSEC_PFKEY_SOCKET, else
                   /run/ipsecd/pfkey.
    -f FILE        Run the statements in FILE ("-" for standard input).
    -c             Run the statements read from standard input.
    -D             Dump the SAD. With -a, dead SAs are shown too.
    -DP            Dump the SPD (also written -D -P).
    -F             Flush the SAD.
    -FP            Flush the SPD (also written -F -P).
    -x             Promiscuous mode: print every PF_KEY message the service
                   sends to any client, until interrupted, each after a
                   local time stamp (HH:MM:SS.uuuuuu).
    -xx            As -x, with unformatted time stamps (seconds.microseconds
                   since the epoch), as ipsec-tools' setkey.
    -v             Print every message sent and received.
    -n             Parse and check the statements only; send nothing.
    -h, --help     This text.

    With -f and -c, setkey first registers (SADB_REGISTER) and refuses any
    algorithm or key size the service does not list as supported. A script
    that does not parse sends nothing.

STATEMENTS
    Statements end with ';' and may span lines; '#' starts a comment.

    add [SRC DST PROTO SPI] [OPTIONS] ALGORITHMS ;
    update SRC DST PROTO SPI [OPTIONS] ALGORITHMS ;
        Add or update an SA. PROTO is esp, esp-udp [OA] (ESP in UDP, RFC 3948;
        ports as ADDR[PORT], default 4500; OA, as ipsec-tools writes it, is
        the peer's original address before NAT, sent as NAT_T_OA and shown
        by -D as nat-oa=), ah or ipcomp. SPI is decimal or
        0x hex (the CPI for ipcomp). OPTIONS:
          -m transport|tunnel|any   mode (default any)
          -r SIZE                   replay window in packets; above 255 it is
                                    sent in our SA_REPLAY extension (type 28)
          -esn                      64-bit sequence numbers (flag 0x400); needs
                                    a replay window (-r), as on Linux
          -u REQID                  request id binding the SA to a policy
          -f zero-pad|random-pad|seq-pad|nocyclic-seq|cyclic-seq
          -lh SECS / -ls SECS       hard / soft lifetime in seconds
          -bh BYTES / -bs BYTES     hard / soft lifetime in bytes
        Per-SA tunnel options (esp and ah; our SA_OPTIONS extension, type 29,
        sent only when one is given; -D shows the ones that are set):
          -df copy|set|clear|inherit   outer DF bit (default inherit:
                                    net.inet.ipsec.dfbit)
          -mtu N                    outer path MTU in bytes (576.. for IPv4,
                                    1280.. for IPv6; 0 = default)
          -tfc N                    pad inner packets to N bytes (ESP tunnel)
          -dummy MS                 a dummy packet every MS ms on an idle SA
        NAT-T as FreeBSD's setkey writes it (esp; the same request as
        "SRC[SPORT] DST[DPORT] esp-udp OAI"):
          -natt OAI [SPORT] OAR [DPORT]   ESP in UDP from SPORT to DPORT; OAI is
                                    the source's original address (NAT_T_OA),
                                    OAR must be the SA's destination
          -natt_mtu N               the NAT-T MTU, sent as -mtu N
        ALGORITHMS:
          -E EALGO KEY [-A AALGO KEY]   esp
          -A AALGO KEY                  ah
          -C CALGO [-R]                 ipcomp (-R: the SPI is a raw CPI)
        KEY is 0x-hex or a "double-quoted string".
    get SRC DST PROTO SPI ;          Show one SA.
    delete SRC DST PROTO SPI ;       Delete one SA.
    deleteall SRC DST PROTO ;        Delete every SA from SRC to DST.
    getspi SRC DST PROTO SPI [-m MODE] [-u REQID] ;   Reserve an SPI.
    flush [PROTO] ;                  Delete all SAs (of PROTO).
    dump [PROTO] ;                   Show all SAs (of PROTO).
    spdadd SRC[/PLEN][[PORT]] DST[/PLEN][[PORT]] UPPER -P DIR [prio P] POLICY ;
    spdupdate ... (as spdadd) ;
    spddelete SRC DST UPPER -P DIR [POLICY] ;
        Add, replace or delete a policy. UPPER: any, tcp, udp, icmp, icmp6,
        gre or a number. DIR: in, out, fwd (an "in" policy also installs
        its "fwd" twin, as setkey does on Linux). P: N, or low|def|high with
        an optional "+ N" (preferred) or "- N". POLICY: discard, none, or
          ipsec PROTO/MODE/[SRC-DST]/[LEVEL] ...
        PROTO esp|ah|ipcomp, MODE transport|tunnel (tunnel needs SRC-DST),
        LEVEL default|use|require|unique[:REQID].
    spdflush ;                       Delete all policies.
    spddump ;                        Show all policies.

ALGORITHMS
    Encryption: null, aes-cbc (rijndael-cbc; 128/192/256-bit key),
      aes-ctr (160/224/288 bits, including the 32-bit nonce),
      aes-gcm-8, aes-gcm-12, aes-gcm-16 (160/224/288 bits including the
      4-byte salt; no -A), aes-ccm-8, aes-ccm-12, aes-ccm-16 (152/216/280
      bits including the 3-byte salt; no -A), aes-gmac (null-aes-gmac;
      160/224/288 bits including the salt; authentication only, no -A),
      chacha20-poly1305 (288 bits including the salt; no -A);
      legacy, refused unless net.inet.ipsec.allow_legacy is set: 3des-cbc
      (192). camellia-cbc is known but ipsecd does not run it.
    Authentication: hmac-sha1 (160), hmac-sha256 (256), hmac-sha384 (384),
      hmac-sha512 (512), aes-xcbc-mac (128), aes-cmac (128), null; legacy:
      hmac-md5 (128).
    setkey asks the service (SADB_REGISTER) which of these it runs and
    refuses the others before sending anything.
    Compression: deflate.

EXAMPLES
    add 192.0.2.1 192.0.2.2 esp 0x1001 -m tunnel -u 7
        -E aes-gcm-16 0x000102030405060708090a0b0c0d0e0f10111213 ;
    spdadd 198.51.100.0/24 203.0.113.0/24 any -P out ipsec
        esp/tunnel/192.0.2.1-192.0.2.2/unique:7 ;

DIAGNOSTICS
    Syntax errors: FILE:LINE:COLUMN: message. A request the service refuses:
    "The result of line N: <error>." Exit status 0 if everything succeeded
    (an empty dump is a success), 1 otherwise, 2 for bad usage.
)";

struct Options {
  std::string socket;
  enum class Mode { kNone, kFile, kStdin, kDump, kSpdDump, kFlush, kSpdFlush, kPromisc, kHelp } mode =
      Mode::kNone;
  std::string file;
  bool all = false, verbose = false, dryRun = false, policyFlag = false;
  int timestampStyle = 0;  // -x: 1 (local time of day), -xx or -x -x: 2 (unix time)
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "setkey: " << why << "\nTry 'setkey --help'.\n";
  std::exit(2);
}

Options parseArgs(int argc, char** argv) {
  Options o;
  auto setMode = [&](Options::Mode m) {
    if (o.mode != Options::Mode::kNone && o.mode != m) usage("conflicting options");
    o.mode = m;
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--socket") {
      if (++i == argc) usage("--socket needs a path");
      o.socket = argv[i];
    } else if (a.rfind("--socket=", 0) == 0) {
      o.socket = a.substr(9);
    } else if (a == "-h" || a == "--help") {
      setMode(Options::Mode::kHelp);
    } else if (a == "-f") {
      if (++i == argc) usage("-f needs a file");
      setMode(Options::Mode::kFile);
      o.file = argv[i];
    } else if (a == "-c") {
      setMode(Options::Mode::kStdin);
    } else if (a == "-D") {
      setMode(Options::Mode::kDump);
    } else if (a == "-DP") {
      setMode(Options::Mode::kSpdDump);
    } else if (a == "-F") {
      setMode(Options::Mode::kFlush);
    } else if (a == "-FP") {
      setMode(Options::Mode::kSpdFlush);
    } else if (a == "-P") {
      o.policyFlag = true;
    } else if (a == "-a") {
      o.all = true;
    } else if (a == "-x" || a == "-xx") {
      setMode(Options::Mode::kPromisc);
      o.timestampStyle = std::min(2, o.timestampStyle + (a == "-xx" ? 2 : 1));
    } else if (a == "-v") {
      o.verbose = true;
    } else if (a == "-n") {
      o.dryRun = true;
    } else {
      usage("unknown option '" + a + "'");
    }
  }
  if (o.policyFlag) {
    if (o.mode == Options::Mode::kDump) o.mode = Options::Mode::kSpdDump;
    else if (o.mode == Options::Mode::kFlush) o.mode = Options::Mode::kSpdFlush;
    else usage("-P goes with -D or -F");
  }
  if (o.mode == Options::Mode::kNone) usage("nothing to do");
  if (o.socket.empty()) {
    const char* env = std::getenv("IPSEC_PFKEY_SOCKET");
    o.socket = env && *env ? env : kDefaultSocket;
  }
  return o;
}

void printResult(int line, int errnum) {
  std::cerr << "The result of line " << line << ": " << std::strerror(errnum) << ".\n";
}

// The SUPPORTED lists of the REGISTER reply.
struct Supported {
  std::vector<sadb_alg> auth, encrypt;
  const sadb_alg* find(AlgKind kind, uint8_t id) const {
    for (const auto& a : kind == AlgKind::kAuth ? auth : encrypt)
      if (a.sadb_alg_id == id) return &a;
    return nullptr;
  }
};

Supported registerClient(Client& client) {
  Supported s;
  client.send(pfkey::Builder(SADB_REGISTER, SADB_SATYPE_UNSPEC, 0, client.pid()).finish());
  bool got = client.awaitReplies(SADB_REGISTER, [&](const pfkey::ParsedMessage& m) {
    for (uint16_t t : {uint16_t{SADB_EXT_SUPPORTED_AUTH}, uint16_t{SADB_EXT_SUPPORTED_ENCRYPT}})
      for (size_t i = 0; i < m.supportedCount(t); ++i)
        (t == SADB_EXT_SUPPORTED_AUTH ? s.auth : s.encrypt).push_back(*m.supportedAlg(t, i));
  });
  if (!got) throw std::runtime_error("no reply to REGISTER from the PF_KEY service");
  return s;
}

// ipsec-tools refuses algorithms the service does not list; so do we.
bool checkSupported(const Command& c, const Supported& s) {
  auto check = [&](const Algorithm* a, size_t keyBytes) {
    if (!a) return true;
    const sadb_alg* alg = s.find(a->kind, a->id);
    uint32_t bits = static_cast<uint32_t>(keyBytes * 8);
    if (!alg) {
      std::cerr << c.where.file << ":" << c.where.line << ":" << c.where.column << ": algorithm "
                << a->name << " is not supported by the service\n";
      return false;
    }
    if (a->takesKey() && (bits < alg->sadb_alg_minbits || bits > alg->sadb_alg_maxbits)) {
      std::cerr << c.where.file << ":" << c.where.line << ":" << c.where.column << ": " << a->name
                << " key of " << bits << " bits is outside the service's " << alg->sadb_alg_minbits
                << "-" << alg->sadb_alg_maxbits << "\n";
      return false;
    }
    return true;
  };
  return check(c.sa.encrypt, c.sa.encryptKey.size()) && check(c.sa.auth, c.sa.authKey.size());
}

bool isDump(uint8_t type) { return type == SADB_DUMP || type == SADB_X_SPDDUMP; }

// Sends one request and handles its replies; false if the service refused it.
bool exchange(Client& client, const std::vector<uint8_t>& request, int line, bool showAll,
              std::vector<uint32_t>* collectSpis = nullptr, const Command* match = nullptr) {
  uint8_t type = request[1];
  client.send(request);
  bool ok = true;
  bool answered = client.awaitReplies(type, [&](const pfkey::ParsedMessage& m) {
    int err = m.msg().sadb_msg_errno;
    if (err == ENOENT && isDump(type)) {
      if (!collectSpis) std::cout << (type == SADB_DUMP ? "No SAD entries.\n" : "No SPD entries.\n");
      return;
    }
    if (err != 0) {
      printResult(line, err);
      ok = false;
      return;
    }
    std::time_t now = std::time(nullptr);
    if (collectSpis) {
      auto src = m.address(SADB_EXT_ADDRESS_SRC);
      auto dst = m.address(SADB_EXT_ADDRESS_DST);
      auto sa = m.sa();
      if (sa && src && dst && src->addr.sameAddress(match->sa.src) && dst->addr.sameAddress(match->sa.dst))
        collectSpis->push_back(ntohl(sa->sadb_sa_spi));
    } else if (type == SADB_DUMP || type == SADB_GET) {
      auto sa = m.sa();
      if (showAll || !sa || sa->sadb_sa_state != SADB_SASTATE_DEAD) std::cout << formatSa(m, now);
    } else if (type == SADB_X_SPDDUMP || type == SADB_X_SPDGET) {
      std::cout << formatPolicy(m, now);
    }
  });
  if (!answered) {
    std::cerr << "The result of line " << line << ": no reply from the PF_KEY service.\n";
    return false;
  }
  return ok;
}

int runScript(const Options& o) {
  std::string text, name;
  if (o.mode == Options::Mode::kStdin || o.file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), {});
    name = "<stdin>";
  } else {
    std::ifstream in(o.file, std::ios::binary);
    if (!in) {
      std::cerr << "setkey: cannot open " << o.file << ": " << std::strerror(errno) << "\n";
      return 1;
    }
    text.assign(std::istreambuf_iterator<char>(in), {});
    name = o.file;
  }
  auto parsed = parseScript(text, name);
  if (auto* e = std::get_if<SyntaxError>(&parsed)) {
    std::cerr << e->format() << "\n";
    return 1;
  }
  const auto& commands = std::get<std::vector<Command>>(parsed);
  if (o.dryRun) return 0;
  Client client(o.socket, o.verbose);
  Supported supported = registerClient(client);
  for (const auto& c : commands)
    if (!checkSupported(c, supported)) return 1;
  bool allOk = true;
  for (const auto& c : commands) {
    if (c.kind == CommandKind::kDeleteAll) {
      std::vector<uint32_t> spis;
      allOk &= exchange(client, c.requests(client.pid())[0], c.where.line, false, &spis, &c);
      for (uint32_t spi : spis) allOk &= exchange(client, c.deleteRequest(spi, client.pid()), c.where.line, false);
      continue;
    }
    for (const auto& req : c.requests(client.pid())) allOk &= exchange(client, req, c.where.line, true);
  }
  return allOk ? 0 : 1;
}

int runPromisc(const Options& o) {
  Client client(o.socket, false);
  // satype 1 switches promiscuous mode on (RFC 2367 §3.1.13's KAME meaning).
  client.send(pfkey::Builder(SADB_X_PROMISC, 1, 0, client.pid()).finish());
  const bool unixTime = o.timestampStyle >= 2;
  while (client.receiveAny([unixTime](const pfkey::ParsedMessage& m) {
    timeval tv{};
    gettimeofday(&tv, nullptr);
    char stamp[48];
    if (unixTime) {
      std::snprintf(stamp, sizeof stamp, "%lld.%06ld", static_cast<long long>(tv.tv_sec),
                    static_cast<long>(tv.tv_usec));
    } else {
      std::tm tm{};
      std::time_t secs = tv.tv_sec;
      localtime_r(&secs, &tm);
      char hms[16];
      std::strftime(hms, sizeof hms, "%H:%M:%S", &tm);
      std::snprintf(stamp, sizeof stamp, "%s.%06ld", hms, static_cast<long>(tv.tv_usec));
    }
    std::cout << stamp << " \n" << formatDebug(m) << std::endl;
  })) {
  }
  return 0;
}

int run(const Options& o) {
  using Mode = Options::Mode;
  switch (o.mode) {
    case Mode::kHelp: std::cout << kHelp; return 0;
    case Mode::kFile:
    case Mode::kStdin: return runScript(o);
    case Mode::kPromisc: return runPromisc(o);
    default: break;
  }
  if (o.dryRun) return 0;
  Client client(o.socket, o.verbose);
  auto header = [&](uint8_t type) { return pfkey::Builder(type, SADB_SATYPE_UNSPEC, 0, client.pid()).finish(); };
  bool ok = true;
  switch (o.mode) {
    case Mode::kDump: ok = exchange(client, header(SADB_DUMP), 0, o.all); break;
    case Mode::kSpdDump: ok = exchange(client, header(SADB_X_SPDDUMP), 0, o.all); break;
    case Mode::kFlush: ok = exchange(client, header(SADB_FLUSH), 0, o.all); break;
    case Mode::kSpdFlush: ok = exchange(client, header(SADB_X_SPDFLUSH), 0, o.all); break;
    default: break;
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Scripts carry keys: no core dump or same-uid ptrace may read them from us.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  Options o = parseArgs(argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::cerr << "setkey: " << e.what() << "\n";
    return 1;
  }
}
