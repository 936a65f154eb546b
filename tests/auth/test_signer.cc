#include "tests/auth/test_signer.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <stdexcept>

#include "lib/crypto/crypto.h"
#include "services/auth/jose.h"

namespace tidepool::auth::testing {
namespace {

std::string BnParam(EVP_PKEY* key, const char* name, int pad_to = 0) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &bn) != 1) throw std::runtime_error("bn param");
  std::string out(pad_to > 0 ? pad_to : BN_num_bytes(bn), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  BN_free(bn);
  return out;
}

}  // namespace

TestSigner::TestSigner(std::string alg, std::string kid) : alg_(std::move(alg)), kid_(std::move(kid)) {
  EVP_PKEY* key = nullptr;
  if (alg_ == "RS256" || alg_ == "PS256") {
    key = EVP_RSA_gen(2048);
  } else if (alg_ == "ES256") {
    key = EVP_EC_gen("P-256");
  } else {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  }
  if (key == nullptr) throw std::runtime_error("keygen");
  key_.reset(key, EVP_PKEY_free);
}

nlohmann::json TestSigner::PublicJwk() const {
  nlohmann::json jwk = {{"kid", kid_}, {"alg", alg_}, {"use", "sig"}};
  if (alg_ == "RS256" || alg_ == "PS256") {
    jwk["kty"] = "RSA";
    jwk["n"] = jose::Base64UrlEncode(BnParam(key_.get(), OSSL_PKEY_PARAM_RSA_N));
    jwk["e"] = jose::Base64UrlEncode(BnParam(key_.get(), OSSL_PKEY_PARAM_RSA_E));
  } else if (alg_ == "ES256") {
    jwk["kty"] = "EC";
    jwk["crv"] = "P-256";
    jwk["x"] = jose::Base64UrlEncode(BnParam(key_.get(), OSSL_PKEY_PARAM_EC_PUB_X, 32));
    jwk["y"] = jose::Base64UrlEncode(BnParam(key_.get(), OSSL_PKEY_PARAM_EC_PUB_Y, 32));
  } else {
    jwk["kty"] = "OKP";
    jwk["crv"] = "Ed25519";
    std::string raw(32, '\0');
    size_t length = raw.size();
    EVP_PKEY_get_raw_public_key(key_.get(), reinterpret_cast<unsigned char*>(raw.data()), &length);
    jwk["x"] = jose::Base64UrlEncode(raw);
  }
  return jwk;
}

std::string TestSigner::PublicKeyDer() const {
  unsigned char* der = nullptr;
  const int length = i2d_PUBKEY(key_.get(), &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(length));
  OPENSSL_free(der);
  return out;
}

std::string TestSigner::Sign(const nlohmann::json& payload,
                             const nlohmann::json& extra_header) const {
  nlohmann::json header = {{"alg", alg_}, {"kid", kid_}, {"typ", "JWT"}};
  for (auto it = extra_header.begin(); it != extra_header.end(); ++it) {
    if (it.value().is_null()) {
      header.erase(it.key());
    } else {
      header[it.key()] = it.value();
    }
  }
  const std::string input = jose::Base64UrlEncode(header.dump()) + "." +
                            jose::Base64UrlEncode(payload.dump());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  const EVP_MD* md = alg_ == "EdDSA" ? nullptr : EVP_sha256();
  EVP_DigestSignInit(ctx, &pctx, md, nullptr, key_.get());
  if (alg_ == "PS256") {
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
  }
  size_t length = 0;
  EVP_DigestSign(ctx, nullptr, &length, reinterpret_cast<const unsigned char*>(input.data()),
                 input.size());
  std::string signature(length, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(signature.data()), &length,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  signature.resize(length);
  EVP_MD_CTX_free(ctx);
  if (alg_ == "ES256") {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(signature.data());
    ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(signature.size()));
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(sig), reinterpret_cast<unsigned char*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(sig), reinterpret_cast<unsigned char*>(raw.data() + 32), 32);
    ECDSA_SIG_free(sig);
    signature = raw;
  }
  return input + "." + jose::Base64UrlEncode(signature);
}

std::string JwksOf(std::initializer_list<nlohmann::json> keys) {
  nlohmann::json doc = {{"keys", nlohmann::json::array()}};
  for (const nlohmann::json& key : keys) doc["keys"].push_back(key);
  return doc.dump();
}

std::string SignHs256(const nlohmann::json& header, const nlohmann::json& payload,
                      const std::string& key) {
  const std::string input = jose::Base64UrlEncode(header.dump()) + "." +
                            jose::Base64UrlEncode(payload.dump());
  return input + "." + jose::Base64UrlEncode(crypto::HmacSha256(key, input));
}

std::string Unsigned(const nlohmann::json& header, const nlohmann::json& payload) {
  return jose::Base64UrlEncode(header.dump()) + "." + jose::Base64UrlEncode(payload.dump()) + ".";
}

}  // namespace tidepool::auth::testing
