// The algorithms ipsec-policy advertises in REGISTER replies (SUPPORTED_AUTH,
// SUPPORTED_ENCRYPT) and checks SA adds against.
//
// Runs in ipsec-policy. This table MIRRORS lib/cryptodrv's OpenSSL driver
// (openssl_driver.cpp, its algorithm list): policy does not link crypto code
// on purpose (it parses client bytes and should not carry the drivers), so
// when the broker learns or loses an algorithm, change this table with it.
// setkey decides which algorithms and key sizes it accepts from this reply
// (PFKEY.md), so an entry here that the broker cannot run would only move the
// failure from the client to keydb's session set-up.
#pragma once

#include <linux/pfkeyv2.h>

#include <cstdint>
#include <span>

namespace ipsec::policy {

struct AlgorithmSpec {
  std::uint8_t id;
  std::uint8_t ivLength;  // as Linux reports it in sadb_alg_ivlen
  std::uint16_t minBits;  // key length including any salt
  std::uint16_t maxBits;
};

std::span<const AlgorithmSpec> supportedAuth() noexcept;
std::span<const AlgorithmSpec> supportedEncrypt() noexcept;

// nullptr if the broker does not run the algorithm.
const AlgorithmSpec* findAuth(std::uint8_t id) noexcept;
const AlgorithmSpec* findEncrypt(std::uint8_t id) noexcept;

}  // namespace ipsec::policy
