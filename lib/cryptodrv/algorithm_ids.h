// PF_KEY algorithm ids that <linux/pfkeyv2.h> does not define, shared by the
// three places that must agree on them: the crypto drivers (ipsec-crypto),
// ipsec-policy's REGISTER table and the setkey tool. Header only, constants
// only: policy and setkey include it without linking any crypto code.
//
// Everything else uses the Linux constants directly (SADB_X_EALG_AES_CCM_ICV8
// = 14 ... SADB_X_EALG_NULL_AES_GMAC = 23, SADB_X_AALG_AES_XCBC_MAC = 9).
#pragma once

#include <cstdint>

namespace ipsec::cryptodrv {

// ChaCha20-Poly1305 (RFC 7634) has no Linux PF_KEY id. 28 is its IKEv2
// transform id (ENCR_CHACHA20_POLY1305), as Linux's AES-GCM ids 18-20 follow
// the IKEv2 ones; Linux's SADB encryption ids stop at 24 (SM4), so 28 does
// not collide with anything a Linux client sends.
inline constexpr uint8_t kSadbXEalgChacha20Poly1305 = 28;

// AES-CMAC-96 (RFC 4494) has no Linux PF_KEY id either. Its IKEv2 id (8) is
// Linux's SADB_X_AALG_RIPEMD160HMAC, so it cannot be reused; 250 sits just
// below KAME's private SADB_X_AALG_NULL (251) and under SADB_AALG_MAX, where
// neither Linux nor KAME/FreeBSD assign anything.
inline constexpr uint8_t kSadbXAalgAesCmac96 = 250;

}  // namespace ipsec::cryptodrv
