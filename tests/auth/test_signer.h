#pragma once

// Test-only signing keys and JWS minting, for playing a (possibly hostile) identity provider.

#include <memory>
#include <string>

#include "nlohmann/json.hpp"

typedef struct evp_pkey_st EVP_PKEY;

namespace tidepool::auth::testing {

// A signing key pair: "RS256" (RSA 2048), "PS256" (RSA 2048), "ES256" (P-256) or "EdDSA".
class TestSigner {
 public:
  TestSigner(std::string alg, std::string kid);
  const std::string& alg() const { return alg_; }
  const std::string& kid() const { return kid_; }

  // The public key as a JWK object (with kid, alg and use "sig").
  nlohmann::json PublicJwk() const;
  // The raw public key bytes: DER SubjectPublicKeyInfo (for the "HS256 keyed with the
  // public key" confusion attack).
  std::string PublicKeyDer() const;

  // A compact JWS over `payload`: header {"alg": alg, "kid": kid} merged with `extra_header`.
  std::string Sign(const nlohmann::json& payload,
                   const nlohmann::json& extra_header = nlohmann::json::object()) const;

 private:
  std::string alg_;
  std::string kid_;
  std::shared_ptr<EVP_PKEY> key_;
};

// A JWKS document from public JWKs.
std::string JwksOf(std::initializer_list<nlohmann::json> keys);

// A compact JWS with a chosen header and HMAC-SHA256 signature under `key` (HS256).
std::string SignHs256(const nlohmann::json& header, const nlohmann::json& payload,
                      const std::string& key);

// A compact JWS with the given header and an empty signature (alg "none").
std::string Unsigned(const nlohmann::json& header, const nlohmann::json& payload);

}  // namespace tidepool::auth::testing
