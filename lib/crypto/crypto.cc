#include "lib/crypto/crypto.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lib/status_macros.h"

namespace tidepool::crypto {

namespace internal {
void EvpPkeyDeleter::operator()(evp_pkey_st* pkey) const { EVP_PKEY_free(pkey); }
}  // namespace internal

namespace {

// ---------------------------------------------------------------------------------------------
// OpenSSL RAII

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free_all(bio); }
};

using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, internal::EvpPkeyDeleter>;

// Largest buffer handed to an OpenSSL call that takes an `int` length.
constexpr size_t kMaxChunk = size_t{1} << 30;

// GCM limit on plaintext per (key, nonce): 2^39 - 256 bits (NIST SP 800-38D).
constexpr size_t kGcmMaxPlaintextSize = (size_t{1} << 36) - 32;

const unsigned char* U8(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}
unsigned char* U8(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }

// Returns INTERNAL naming the failed OpenSSL call and OpenSSL's reason, then clears the
// thread's OpenSSL error queue. OpenSSL reasons never contain key material.
absl::Status OpenSslError(absl::string_view call) {
  const unsigned long err = ERR_peek_last_error();
  const char* reason = err != 0 ? ERR_reason_error_string(err) : nullptr;
  ERR_clear_error();
  return absl::InternalError(
      absl::StrCat(call, " failed", reason != nullptr ? absl::StrCat(": ", reason) : ""));
}

// Ends the process when OpenSSL fails an operation whose signature cannot report failure
// (Sha256, HmacSha256). That only happens on a broken OpenSSL installation.
[[noreturn]] void DieOpenSsl(const char* call) {
  (void)std::fprintf(stderr, "tidepool::crypto: %s failed; OpenSSL is unusable, aborting\n", call);
  std::abort();
}

// The one message for every AES-GCM open failure caused by the input, so that callers (and
// attackers) cannot tell truncation, tampering, wrong key and wrong AAD apart.
absl::Status DecryptionFailed() {
  ERR_clear_error();
  return absl::InvalidArgumentError("decryption failed");
}

// The one status for every Ed25519 signature that does not verify.
absl::Status VerificationFailed() {
  ERR_clear_error();
  return absl::UnauthenticatedError("signature verification failed");
}

// Feeds `in` through EVP_CipherUpdate in int-sized chunks. `out` is nullptr for AAD;
// otherwise it receives the output and `*out_len` its length.
bool CipherUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, absl::string_view in, size_t* out_len) {
  size_t total = 0;
  while (!in.empty()) {
    const size_t chunk = std::min(in.size(), kMaxChunk);
    int len = 0;
    if (EVP_CipherUpdate(ctx, out == nullptr ? nullptr : out + total, &len, U8(in),
                         static_cast<int>(chunk)) != 1) {
      return false;
    }
    if (out != nullptr) {
      total += static_cast<size_t>(len);
    }
    in.remove_prefix(chunk);
  }
  if (out_len != nullptr) {
    *out_len = total;
  }
  return true;
}

// Rejects PEM passphrase requests instead of prompting on the terminal.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) { return -1; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Randomness

absl::StatusOr<std::string> RandomBytes(size_t n) {
  std::string out(n, '\0');
  for (size_t offset = 0; offset < n;) {
    const size_t chunk = std::min(n - offset, kMaxChunk);
    if (RAND_bytes(U8(out) + offset, static_cast<int>(chunk)) != 1) {
      return OpenSslError("RAND_bytes");
    }
    offset += chunk;
  }
  return out;
}

absl::StatusOr<std::string> RandomToken(size_t n_bytes) {
  TP_ASSIGN_OR_RETURN(std::string bytes, RandomBytes(n_bytes));
  // absl's web-safe alphabet is RFC 4648 §5 ("-", "_"), and it writes no padding.
  std::string token = absl::WebSafeBase64Escape(bytes);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return token;
}

// ---------------------------------------------------------------------------------------------
// Hashing, MACs and comparison

std::string Sha256(absl::string_view data) {
  std::string digest(kSha256Size, '\0');
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), U8(digest), &len, EVP_sha256(), nullptr) != 1 ||
      len != kSha256Size) {
    DieOpenSsl("EVP_Digest(SHA-256)");
  }
  return digest;
}

std::string HmacSha256(absl::string_view key, absl::string_view data) {
  // HMAC() takes an int key length. HMAC replaces a key longer than the block size with its
  // hash (RFC 2104 §2), so hashing an over-long key here gives the same result.
  std::string hashed_key;
  if (key.size() > static_cast<size_t>(INT_MAX)) {
    hashed_key = Sha256(key);
    key = hashed_key;
  }
  // Never hand OpenSSL a null key pointer: an empty string_view may have data() == nullptr.
  static constexpr unsigned char kEmpty[1] = {0};
  const unsigned char* key_ptr = key.empty() ? kEmpty : U8(key);

  std::string mac(kSha256Size, '\0');
  unsigned int len = 0;
  const unsigned char* result = HMAC(EVP_sha256(), key_ptr, static_cast<int>(key.size()), U8(data),
                                     data.size(), U8(mac), &len);
  OPENSSL_cleanse(hashed_key.data(), hashed_key.size());
  if (result == nullptr || len != kSha256Size) {
    DieOpenSsl("HMAC(SHA-256)");
  }
  return mac;
}

std::string HexEncode(absl::string_view data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (const char c : data) {
    const auto byte = static_cast<unsigned char>(c);
    out.push_back(kDigits[byte >> 4]);
    out.push_back(kDigits[byte & 0x0f]);
  }
  return out;
}

namespace {
// Returns the value of hex digit `c`, or -1.
int HexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}
}  // namespace

absl::StatusOr<std::string> HexDecode(absl::string_view hex) {
  if (hex.size() % 2 != 0) {
    return absl::InvalidArgumentError("hex string has odd length");
  }
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = HexValue(hex[i]);
    const int lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) {
      OPENSSL_cleanse(out.data(), out.size());
      return absl::InvalidArgumentError("hex string contains a non-hex character");
    }
    out.push_back(static_cast<char>((hi << 4) | lo));
  }
  return out;
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) {
    // Do comparable work so that the time spent tracks the input length as it does for
    // equal lengths; the result is discarded.
    volatile int sink = CRYPTO_memcmp(a.data(), a.data(), a.size());
    (void)sink;
    return false;
  }
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// ---------------------------------------------------------------------------------------------
// AES-256-GCM

absl::StatusOr<std::string> AesGcmSeal(absl::string_view key, absl::string_view plaintext,
                                       absl::string_view aad) {
  // Validate the key before consuming randomness so the error is the caller's, not RAND's.
  if (key.size() != kAesKeySize) {
    return absl::InvalidArgumentError("AES-256-GCM key must be 32 bytes");
  }
  TP_ASSIGN_OR_RETURN(std::string nonce, RandomBytes(kGcmNonceSize));
  return AesGcmSealWithNonce(key, nonce, plaintext, aad);
}

absl::StatusOr<std::string> AesGcmSealWithNonce(absl::string_view key, absl::string_view nonce,
                                                absl::string_view plaintext,
                                                absl::string_view aad) {
  if (key.size() != kAesKeySize) {
    return absl::InvalidArgumentError("AES-256-GCM key must be 32 bytes");
  }
  if (nonce.size() != kGcmNonceSize) {
    return absl::InvalidArgumentError("AES-GCM nonce must be 12 bytes");
  }
  if (plaintext.size() > kGcmMaxPlaintextSize) {
    return absl::InvalidArgumentError("plaintext exceeds the AES-GCM size limit");
  }

  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr) {
    return OpenSslError("EVP_CIPHER_CTX_new");
  }
  // GCM's default IV length is 12 bytes, so no EVP_CTRL_GCM_SET_IVLEN is needed.
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U8(key), U8(nonce)) != 1) {
    return OpenSslError("EVP_EncryptInit_ex");
  }
  if (!CipherUpdate(ctx.get(), nullptr, aad, nullptr)) {
    return OpenSslError("EVP_EncryptUpdate(aad)");
  }

  std::string sealed(kGcmNonceSize + plaintext.size() + kGcmTagSize, '\0');
  sealed.replace(0, kGcmNonceSize, nonce.data(), nonce.size());
  unsigned char* const ciphertext = U8(sealed) + kGcmNonceSize;
  size_t written = 0;
  if (!CipherUpdate(ctx.get(), ciphertext, plaintext, &written)) {
    return OpenSslError("EVP_EncryptUpdate");
  }
  int final_len = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), ciphertext + written, &final_len) != 1) {
    return OpenSslError("EVP_EncryptFinal_ex");
  }
  if (written + static_cast<size_t>(final_len) != plaintext.size()) {
    return absl::InternalError("AES-GCM produced an unexpected ciphertext length");
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kGcmTagSize),
                          ciphertext + plaintext.size()) != 1) {
    return OpenSslError("EVP_CTRL_GCM_GET_TAG");
  }
  return sealed;
}

absl::StatusOr<std::string> AesGcmOpen(absl::string_view key, absl::string_view sealed,
                                       absl::string_view aad) {
  if (key.size() != kAesKeySize) {
    return absl::InvalidArgumentError("AES-256-GCM key must be 32 bytes");
  }
  if (sealed.size() < kGcmNonceSize + kGcmTagSize) {
    return DecryptionFailed();
  }
  const absl::string_view nonce = sealed.substr(0, kGcmNonceSize);
  const absl::string_view ciphertext =
      sealed.substr(kGcmNonceSize, sealed.size() - kGcmNonceSize - kGcmTagSize);
  const absl::string_view tag = sealed.substr(sealed.size() - kGcmTagSize);
  if (ciphertext.size() > kGcmMaxPlaintextSize) {
    return DecryptionFailed();
  }

  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr) {
    return OpenSslError("EVP_CIPHER_CTX_new");
  }
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U8(key), U8(nonce)) != 1) {
    return OpenSslError("EVP_DecryptInit_ex");
  }
  if (!CipherUpdate(ctx.get(), nullptr, aad, nullptr)) {
    return OpenSslError("EVP_DecryptUpdate(aad)");
  }
  std::string plaintext(ciphertext.size(), '\0');
  size_t written = 0;
  if (!CipherUpdate(ctx.get(), U8(plaintext), ciphertext, &written)) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return OpenSslError("EVP_DecryptUpdate");
  }
  // EVP_CTRL_GCM_SET_TAG only reads the tag; the API just lacks a const overload.
  std::string tag_copy(tag);
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kGcmTagSize),
                          tag_copy.data()) != 1) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return OpenSslError("EVP_CTRL_GCM_SET_TAG");
  }
  int final_len = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), U8(plaintext) + written, &final_len) != 1 ||
      written + static_cast<size_t>(final_len) != plaintext.size()) {
    // Tag mismatch: the unauthenticated plaintext must not escape.
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return DecryptionFailed();
  }
  return plaintext;
}

// ---------------------------------------------------------------------------------------------
// Ed25519

Ed25519PrivateKey::Ed25519PrivateKey(PkeyPtr pkey, std::string public_key)
    : pkey_(std::move(pkey)), public_key_(std::move(public_key)) {}

Ed25519PrivateKey::Ed25519PrivateKey(Ed25519PrivateKey&& other) noexcept
    : pkey_(std::move(other.pkey_)), public_key_(std::move(other.public_key_)) {
  other.public_key_.clear();
}

Ed25519PrivateKey& Ed25519PrivateKey::operator=(Ed25519PrivateKey&& other) noexcept {
  if (this != &other) {
    pkey_ = std::move(other.pkey_);
    public_key_ = std::move(other.public_key_);
    other.public_key_.clear();
  }
  return *this;
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::Wrap(PkeyPtr pkey) {
  std::string public_key(kEd25519PublicKeySize, '\0');
  size_t len = public_key.size();
  if (EVP_PKEY_get_raw_public_key(pkey.get(), U8(public_key), &len) != 1 ||
      len != kEd25519PublicKeySize) {
    return OpenSslError("EVP_PKEY_get_raw_public_key");
  }
  return Ed25519PrivateKey(std::move(pkey), std::move(public_key));
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::Generate() {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (pkey == nullptr) {
    return OpenSslError("EVP_PKEY_Q_keygen(ED25519)");
  }
  return Wrap(std::move(pkey));
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::FromSeed(absl::string_view seed) {
  if (seed.size() != kEd25519SeedSize) {
    return absl::InvalidArgumentError("Ed25519 seed must be 32 bytes");
  }
  PkeyPtr pkey(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, U8(seed), seed.size()));
  if (pkey == nullptr) {
    return OpenSslError("EVP_PKEY_new_raw_private_key(ED25519)");
  }
  return Wrap(std::move(pkey));
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::FromPem(absl::string_view pem) {
  if (pem.empty() || pem.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("malformed PEM private key");
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) {
    return OpenSslError("BIO_new_mem_buf");
  }
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (pkey == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError("malformed or encrypted PEM private key");
  }
  if (EVP_PKEY_get_id(pkey.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError("PEM private key is not an Ed25519 key");
  }
  return Wrap(std::move(pkey));
}

absl::StatusOr<std::string> Ed25519PrivateKey::ToPem() const {
  if (pkey_ == nullptr) {
    return absl::FailedPreconditionError("Ed25519 key is empty (moved from)");
  }
  // A secure-memory BIO: its buffer, which holds the encoded key, is cleansed when freed.
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (bio == nullptr) {
    return OpenSslError("BIO_new");
  }
  if (PEM_write_bio_PrivateKey(bio.get(), pkey_.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
      1) {
    return OpenSslError("PEM_write_bio_PrivateKey");
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (data == nullptr || len <= 0) {
    return absl::InternalError("PEM_write_bio_PrivateKey wrote nothing");
  }
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> Ed25519PrivateKey::Sign(absl::string_view message) const {
  if (pkey_ == nullptr) {
    return absl::FailedPreconditionError("Ed25519 key is empty (moved from)");
  }
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr) {
    return OpenSslError("EVP_MD_CTX_new");
  }
  // Pure Ed25519 hashes internally: the digest must be NULL.
  if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey_.get()) != 1) {
    return OpenSslError("EVP_DigestSignInit");
  }
  std::string signature(kEd25519SignatureSize, '\0');
  size_t len = signature.size();
  if (EVP_DigestSign(ctx.get(), U8(signature), &len, U8(message), message.size()) != 1) {
    return OpenSslError("EVP_DigestSign");
  }
  if (len != kEd25519SignatureSize) {
    return absl::InternalError("EVP_DigestSign returned an unexpected signature length");
  }
  return signature;
}

absl::Status Ed25519Verify(absl::string_view public_key_raw32, absl::string_view message,
                           absl::string_view signature) {
  if (public_key_raw32.size() != kEd25519PublicKeySize) {
    return absl::InvalidArgumentError("Ed25519 public key must be 32 bytes");
  }
  if (signature.size() != kEd25519SignatureSize) {
    return absl::InvalidArgumentError("Ed25519 signature must be 64 bytes");
  }
  PkeyPtr pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, U8(public_key_raw32),
                                           public_key_raw32.size()));
  if (pkey == nullptr) {
    // Fail closed: a key OpenSSL refuses cannot have produced a valid signature.
    return VerificationFailed();
  }
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr) {
    return OpenSslError("EVP_MD_CTX_new");
  }
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1) {
    return OpenSslError("EVP_DigestVerifyInit");
  }
  const int verified =
      EVP_DigestVerify(ctx.get(), U8(signature), signature.size(), U8(message), message.size());
  if (verified != 1) {
    return VerificationFailed();
  }
  return absl::OkStatus();
}

}  // namespace tidepool::crypto
