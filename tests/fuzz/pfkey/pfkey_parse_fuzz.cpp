// Fuzzes pfkey::parse, the first code ipsec-policy runs on a client's bytes.
// Beyond "no crash": every accessor of an accepted message must stay inside
// the datagram (ASan checks), and a re-parse must agree.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "pfkey/message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ipsec::pfkey;
  auto r = parse({data, size});
  auto* m = std::get_if<ParsedMessage>(&r);
  if (!m) return 0;
  size_t touched = 0;
  for (uint16_t t = 1; t <= SADB_EXT_MAX; ++t) {
    auto e = m->extBytes(t);
    for (uint8_t b : e) touched += b;
    if (auto a = m->address(t)) touched += a->prefixlen;
    if (auto k = m->key(t)) for (uint8_t b : k->bytes) touched += b;
    for (size_t i = 0; i < m->supportedCount(t); ++i) touched += m->supportedAlg(t, i)->sadb_alg_id;
  }
  if (const auto& p = m->policy())
    for (const auto& rq : p->requests()) touched += rq.reqid;
  if (auto c = m->secCtx()) for (uint8_t b : c->context) touched += b;
  if (m->sa2() && m->sa()) touched += m->sa()->sadb_sa_replay;
  auto again = parse({data, size});
  if (std::get_if<ParseError>(&again)) std::abort();
  return touched == 0xffffffff ? 1 : 0;
}
