// A keyed MAC through its provider's dispatch table (see provider_mac.h).
// Runs only in ipsec-crypto.
#include "cryptodrv/provider_mac.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "cryptodrv/provider_cipher.h"

namespace ipsec::cryptodrv::detail {

struct ProviderMacFunctions {
  EVP_MAC* fetched = nullptr;  // kept (never freed): it keeps the provider, and these functions, loaded
  void* providerContext = nullptr;
  OSSL_FUNC_mac_newctx_fn* newContext = nullptr;
  OSSL_FUNC_mac_freectx_fn* freeContext = nullptr;
  OSSL_FUNC_mac_init_fn* init = nullptr;
  OSSL_FUNC_mac_update_fn* update = nullptr;
  OSSL_FUNC_mac_final_fn* final = nullptr;
  OSSL_FUNC_mac_get_ctx_params_fn* getParams = nullptr;
  OSSL_FUNC_mac_set_ctx_params_fn* setParams = nullptr;

  bool complete() const noexcept {
    return newContext && freeContext && init && update && final && getParams && setParams;
  }
};

namespace {

const ProviderMacFunctions* lookUp(const char* name) noexcept {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, name, nullptr);
  if (mac == nullptr) return nullptr;
  const OSSL_PROVIDER* provider = EVP_MAC_get0_provider(mac);
  const OSSL_DISPATCH* dispatch = implementationIn(provider, OSSL_OP_MAC, EVP_MAC_get0_name(mac));
  auto* f = dispatch != nullptr ? new (std::nothrow) ProviderMacFunctions : nullptr;
  if (f == nullptr) {
    EVP_MAC_free(mac);
    return nullptr;
  }
  // Fetched once and kept for the process's life, reachable from here (so
  // LeakSanitizer does not count it).
  f->fetched = mac;
  f->providerContext = OSSL_PROVIDER_get0_provider_ctx(provider);
  for (; dispatch->function_id != 0; ++dispatch) {
    switch (dispatch->function_id) {
      case OSSL_FUNC_MAC_NEWCTX: f->newContext = OSSL_FUNC_mac_newctx(dispatch); break;
      case OSSL_FUNC_MAC_FREECTX: f->freeContext = OSSL_FUNC_mac_freectx(dispatch); break;
      case OSSL_FUNC_MAC_INIT: f->init = OSSL_FUNC_mac_init(dispatch); break;
      case OSSL_FUNC_MAC_UPDATE: f->update = OSSL_FUNC_mac_update(dispatch); break;
      case OSSL_FUNC_MAC_FINAL: f->final = OSSL_FUNC_mac_final(dispatch); break;
      case OSSL_FUNC_MAC_GET_CTX_PARAMS: f->getParams = OSSL_FUNC_mac_get_ctx_params(dispatch); break;
      case OSSL_FUNC_MAC_SET_CTX_PARAMS: f->setParams = OSSL_FUNC_mac_set_ctx_params(dispatch); break;
      default: break;
    }
  }
  if (f->complete()) return f;
  EVP_MAC_free(mac);
  delete f;
  return nullptr;
}

// Once per MAC per process (function-local statics: set-up may run on
// several workers at once).
const ProviderMacFunctions* functionsFor(const char* name) noexcept {
  if (std::strcmp(name, "HMAC") == 0) {
    static const ProviderMacFunctions* const hmac = lookUp("HMAC");
    return hmac;
  }
  if (std::strcmp(name, "CMAC") == 0) {
    static const ProviderMacFunctions* const cmac = lookUp("CMAC");
    return cmac;
  }
  return nullptr;
}

}  // namespace

ProviderMac::ProviderMac(const char* mac, const OSSL_PARAM* setup, const uint8_t* key, size_t keyLength)
    : functions_(functionsFor(mac)) {
  if (functions_ == nullptr)
    throw std::runtime_error(std::string(mac) + ": the provider exposes no usable implementation");
  macContext_ = functions_->newContext(functions_->providerContext);
  if (macContext_ == nullptr) throw std::runtime_error(std::string(mac) + ": provider context allocation failed");
  OSSL_PARAM sizeQuery[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size_), OSSL_PARAM_construct_end()};
  if (functions_->setParams(macContext_, setup) != 1 || functions_->init(macContext_, key, keyLength, nullptr) != 1 ||
      functions_->getParams(macContext_, sizeQuery) != 1 || size_ == 0) {
    functions_->freeContext(macContext_);
    throw std::runtime_error(std::string(mac) + ": unknown algorithm or bad key");
  }
}

ProviderMac::~ProviderMac() {
  if (macContext_ != nullptr) functions_->freeContext(macContext_);  // cleansed by the provider
}

// A null key re-initialises the keyed context (OpenSSL's documented reuse).
bool ProviderMac::begin() noexcept { return functions_->init(macContext_, nullptr, 0, nullptr) == 1; }

bool ProviderMac::update(const uint8_t* data, size_t length) noexcept {
  return functions_->update(macContext_, data, length) == 1;
}

bool ProviderMac::finish(uint8_t* out) noexcept {
  size_t written = 0;
  return functions_->final(macContext_, out, &written, size_) == 1 && written == size_;
}

}  // namespace ipsec::cryptodrv::detail
