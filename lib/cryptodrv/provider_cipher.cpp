// A cipher direction through its provider's dispatch table (see
// provider_cipher.h). Runs only in ipsec-crypto.
#include "cryptodrv/provider_cipher.h"

#include <openssl/core_dispatch.h>
#include <openssl/provider.h>
#include <strings.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cryptodrv/esp_common.h"

namespace ipsec::cryptodrv::detail {

struct ProviderCipherFunctions {
  void* providerContext = nullptr;
  OSSL_FUNC_cipher_newctx_fn* newContext = nullptr;
  OSSL_FUNC_cipher_freectx_fn* freeContext = nullptr;
  OSSL_FUNC_cipher_encrypt_init_fn* encryptInit = nullptr;
  OSSL_FUNC_cipher_decrypt_init_fn* decryptInit = nullptr;
  OSSL_FUNC_cipher_update_fn* update = nullptr;
  OSSL_FUNC_cipher_final_fn* final = nullptr;
  OSSL_FUNC_cipher_get_ctx_params_fn* getParams = nullptr;
  OSSL_FUNC_cipher_set_ctx_params_fn* setParams = nullptr;

  bool complete() const noexcept {
    return newContext && freeContext && encryptInit && decryptInit && update && final && getParams && setParams;
  }
};

namespace {

// True if `name` is one of the colon-separated `names` ("AES-128-GCM:id-
// aes128-GCM:2.16.840.1.101.3.4.1.6"); provider names are case-insensitive.
bool namedIn(const char* names, std::string_view name) noexcept {
  std::string_view rest(names);
  while (!rest.empty()) {
    const size_t colon = rest.find(':');
    const std::string_view one = rest.substr(0, colon);
    if (one.size() == name.size() && strncasecmp(one.data(), name.data(), one.size()) == 0) return true;
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  return false;
}

ProviderCipherFunctions functionsOf(const OSSL_DISPATCH* dispatch, void* providerContext) noexcept {
  ProviderCipherFunctions f;
  f.providerContext = providerContext;
  for (; dispatch->function_id != 0; ++dispatch) {
    switch (dispatch->function_id) {
      case OSSL_FUNC_CIPHER_NEWCTX: f.newContext = OSSL_FUNC_cipher_newctx(dispatch); break;
      case OSSL_FUNC_CIPHER_FREECTX: f.freeContext = OSSL_FUNC_cipher_freectx(dispatch); break;
      case OSSL_FUNC_CIPHER_ENCRYPT_INIT: f.encryptInit = OSSL_FUNC_cipher_encrypt_init(dispatch); break;
      case OSSL_FUNC_CIPHER_DECRYPT_INIT: f.decryptInit = OSSL_FUNC_cipher_decrypt_init(dispatch); break;
      case OSSL_FUNC_CIPHER_UPDATE: f.update = OSSL_FUNC_cipher_update(dispatch); break;
      case OSSL_FUNC_CIPHER_FINAL: f.final = OSSL_FUNC_cipher_final(dispatch); break;
      case OSSL_FUNC_CIPHER_GET_CTX_PARAMS: f.getParams = OSSL_FUNC_cipher_get_ctx_params(dispatch); break;
      case OSSL_FUNC_CIPHER_SET_CTX_PARAMS: f.setParams = OSSL_FUNC_cipher_set_ctx_params(dispatch); break;
      default: break;
    }
  }
  return f;
}

}  // namespace

const OSSL_DISPATCH* implementationIn(const OSSL_PROVIDER* provider, int operation, const char* name) noexcept {
  if (provider == nullptr || name == nullptr) return nullptr;
  int noCache = 0;
  const OSSL_ALGORITHM* algorithms = OSSL_PROVIDER_query_operation(provider, operation, &noCache);
  if (algorithms == nullptr) return nullptr;
  const OSSL_DISPATCH* found = nullptr;
  for (const OSSL_ALGORITHM* a = algorithms; a->algorithm_names != nullptr; ++a) {
    if (namedIn(a->algorithm_names, name)) {
      found = a->implementation;  // static in the provider: valid while it is loaded
      break;
    }
  }
  OSSL_PROVIDER_unquery_operation(provider, operation, algorithms);
  return found;
}

namespace {

// The implementation EVP_CIPHER_fetch picked, looked up by name in the same
// provider; nullptr if that provider does not show it.
const ProviderCipherFunctions* lookUp(const EVP_CIPHER* fetched) {
  const OSSL_PROVIDER* provider = EVP_CIPHER_get0_provider(fetched);
  const OSSL_DISPATCH* dispatch = implementationIn(provider, OSSL_OP_CIPHER, EVP_CIPHER_get0_name(fetched));
  if (dispatch == nullptr) return nullptr;
  const ProviderCipherFunctions f = functionsOf(dispatch, OSSL_PROVIDER_get0_provider_ctx(provider));
  // Kept for the process's life, as fetchedCipher() keeps the cipher (and so
  // the provider) loaded.
  return f.complete() ? new ProviderCipherFunctions(f) : nullptr;
}

// Looked up once per algorithm per process (a handful), under a lock: set-up
// may run on several workers.
const ProviderCipherFunctions* functionsFor(const EVP_CIPHER* cipher) noexcept {
  const EVP_CIPHER* fetched = fetchedCipher(cipher);
  if (fetched == nullptr) return nullptr;
  static std::mutex mutex;
  static auto* const cache = new std::vector<std::pair<const EVP_CIPHER*, const ProviderCipherFunctions*>>();
  std::lock_guard lock(mutex);
  for (const auto& [c, f] : *cache)
    if (c == fetched) return f;
  try {
    const ProviderCipherFunctions* f = lookUp(fetched);
    cache->emplace_back(fetched, f);
    return f;
  } catch (...) {
    return nullptr;
  }
}

}  // namespace

bool providerCipherAvailable(const EVP_CIPHER* cipher) noexcept { return functionsFor(cipher) != nullptr; }

ProviderCipher::ProviderCipher(const EVP_CIPHER* cipher, const uint8_t* key, size_t keyLength, bool encrypt,
                               const OSSL_PARAM* setup)
    : functions_(functionsFor(cipher)), encrypt_(encrypt) {
  if (functions_ == nullptr) throw std::runtime_error("cipher: the provider exposes no usable implementation");
  algorithmContext_ = functions_->newContext(functions_->providerContext);
  if (algorithmContext_ == nullptr) throw std::runtime_error("cipher: provider context allocation failed");
  const auto init = encrypt ? functions_->encryptInit : functions_->decryptInit;
  // The set-up parameters first (CCM's lengths must precede its key), then
  // the key, which stays in the provider's context for the SA's life.
  if ((setup != nullptr && functions_->setParams(algorithmContext_, setup) != 1) ||
      init(algorithmContext_, key, keyLength, nullptr, 0, nullptr) != 1) {
    functions_->freeContext(algorithmContext_);
    throw std::runtime_error("cipher: provider key set-up failed");
  }
}

ProviderCipher::~ProviderCipher() {
  if (algorithmContext_ != nullptr) functions_->freeContext(algorithmContext_);  // cleansed by the provider
}

bool ProviderCipher::start(const uint8_t* iv, size_t ivLength, const OSSL_PARAM* params) noexcept {
  const auto init = encrypt_ ? functions_->encryptInit : functions_->decryptInit;
  return init(algorithmContext_, nullptr, 0, iv, ivLength, params) == 1;
}

bool ProviderCipher::update(uint8_t* out, const uint8_t* in, size_t n) noexcept {
  size_t written = 0;
  if (functions_->update(algorithmContext_, out, &written, n, in, n) != 1) return false;
  // AAD and CCM's length announcement report 0; data must come out whole.
  return out == nullptr || written == n;
}

bool ProviderCipher::finish(uint8_t* out, size_t outSize) noexcept {
  size_t written = 0;
  return functions_->final(algorithmContext_, out, &written, outSize) == 1 && written == 0;
}

bool ProviderCipher::get(OSSL_PARAM* params) noexcept { return functions_->getParams(algorithmContext_, params) == 1; }

bool ProviderCipher::set(const OSSL_PARAM* params) noexcept {
  return functions_->setParams(algorithmContext_, params) == 1;
}

}  // namespace ipsec::cryptodrv::detail
