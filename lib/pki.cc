#include "lib/pki.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/file_util.h"
#include "lib/status_macros.h"

namespace tidepool {
namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;

constexpr absl::Duration kRenewBefore = absl::Hours(24 * 30);

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return absl::InternalError("cannot encode private key");
  }
  return BioToString(bio.get());
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return absl::InternalError("cannot encode certificate");
  }
  return BioToString(bio.get());
}

absl::StatusOr<PkeyPtr> KeyFromPem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return absl::InvalidArgumentError("malformed private key PEM");
  }
  return key;
}

absl::StatusOr<X509Ptr> CertFromPem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return absl::InvalidArgumentError("malformed certificate PEM");
  }
  return cert;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) {
    return absl::InternalError(absl::StrCat("cannot build certificate extension ", nid));
  }
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) {
    return absl::InternalError("cannot add certificate extension");
  }
  return absl::OkStatus();
}

absl::StatusOr<X509Ptr> NewCertificate(EVP_PKEY* key, const std::string& org,
                                       const std::string& common_name, absl::Duration validity) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) {
    return absl::InternalError("cannot create certificate");
  }
  BnPtr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return absl::InternalError("cannot set certificate serial");
  }
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), absl::ToInt64Seconds(validity));
  if (X509_set_pubkey(cert.get(), key) != 1) {
    return absl::InternalError("cannot set certificate key");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(org.c_str()), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                 -1, 0) != 1) {
    return absl::InvalidArgumentError("cannot set certificate subject");
  }
  return cert;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 63) {
    return false;
  }
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return false;
    }
  }
  return true;
}

bool ExpiresSoon(const std::string& cert_pem) {
  absl::StatusOr<X509Ptr> cert = CertFromPem(cert_pem);
  if (!cert.ok()) {
    return true;
  }
  const time_t limit = static_cast<time_t>(absl::ToUnixSeconds(absl::Now() + kRenewBefore));
  return X509_cmp_time(X509_get0_notAfter(cert->get()), const_cast<time_t*>(&limit)) <= 0;
}

// Holds an exclusive flock on a file for its lifetime.
class DirLock {
 public:
  explicit DirLock(const std::string& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (fd_ >= 0) {
      ::flock(fd_, LOCK_EX);
    }
  }
  ~DirLock() {
    if (fd_ >= 0) {
      ::flock(fd_, LOCK_UN);
      ::close(fd_);
    }
  }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<CertAuthority> CreateCertAuthority(const std::string& org) {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) {
    return absl::InternalError("cannot generate CA key");
  }
  TP_ASSIGN_OR_RETURN(X509Ptr cert,
                      NewCertificate(key.get(), org, org + " platform CA", absl::Hours(24 * 3650)));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1) {
    return absl::InternalError("cannot set CA issuer");
  }
  TP_RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  TP_RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  TP_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) {
    return absl::InternalError("cannot sign CA certificate");
  }
  CertAuthority ca;
  TP_ASSIGN_OR_RETURN(ca.cert_pem, CertToPem(cert.get()));
  TP_ASSIGN_OR_RETURN(ca.key_pem, KeyToPem(key.get()));
  return ca;
}

absl::StatusOr<TlsIdentity> IssueIdentity(const CertAuthority& ca, const std::string& name,
                                          absl::Duration validity) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("identity name must be 1-63 of [a-z0-9-], got \"", name, "\""));
  }
  TP_ASSIGN_OR_RETURN(X509Ptr ca_cert, CertFromPem(ca.cert_pem));
  TP_ASSIGN_OR_RETURN(PkeyPtr ca_key, KeyFromPem(ca.key_pem));
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) {
    return absl::InternalError("cannot generate key");
  }
  TP_ASSIGN_OR_RETURN(X509Ptr cert, NewCertificate(key.get(), "Tidepool", name, validity));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get())) != 1) {
    return absl::InternalError("cannot set issuer");
  }
  TP_RETURN_IF_ERROR(
      AddExtension(cert.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE"));
  TP_RETURN_IF_ERROR(AddExtension(cert.get(), ca_cert.get(), NID_key_usage,
                                  "critical,digitalSignature,keyEncipherment"));
  TP_RETURN_IF_ERROR(
      AddExtension(cert.get(), ca_cert.get(), NID_ext_key_usage, "serverAuth,clientAuth"));
  TP_RETURN_IF_ERROR(AddExtension(cert.get(), ca_cert.get(), NID_subject_alt_name,
                                  absl::StrCat("DNS:localhost,IP:127.0.0.1,IP:::1,DNS:", name,
                                               ",DNS:", name, ".tidepool.internal")));
  TP_RETURN_IF_ERROR(
      AddExtension(cert.get(), ca_cert.get(), NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) == 0) {
    return absl::InternalError("cannot sign certificate");
  }
  TlsIdentity identity;
  identity.name = name;
  identity.ca_pem = ca.cert_pem;
  TP_ASSIGN_OR_RETURN(identity.cert_pem, CertToPem(cert.get()));
  TP_ASSIGN_OR_RETURN(identity.key_pem, KeyToPem(key.get()));
  return identity;
}

absl::Status EnsurePlatformPki(const std::string& dir, const std::vector<std::string>& names) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  ::chmod(dir.c_str(), 0700);
  DirLock lock(dir + "/.lock");
  if (!lock.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot lock ", dir, "/.lock"));
  }
  const std::string ca_cert_path = dir + "/ca.pem";
  const std::string ca_key_path = dir + "/ca.key";
  CertAuthority ca;
  if (std::filesystem::exists(ca_cert_path) && std::filesystem::exists(ca_key_path)) {
    TP_RETURN_IF_ERROR(CheckOwnerOnly(ca_key_path));
    TP_ASSIGN_OR_RETURN(ca.cert_pem, ReadFileToString(ca_cert_path));
    TP_ASSIGN_OR_RETURN(ca.key_pem, ReadFileToString(ca_key_path));
  } else {
    TP_ASSIGN_OR_RETURN(ca, CreateCertAuthority("Tidepool"));
    TP_RETURN_IF_ERROR(WriteFileAtomically(ca_key_path, ca.key_pem, 0600));
    TP_RETURN_IF_ERROR(WriteFileAtomically(ca_cert_path, ca.cert_pem, 0644));
  }
  for (const std::string& name : names) {
    const std::string cert_path = absl::StrCat(dir, "/", name, ".pem");
    const std::string key_path = absl::StrCat(dir, "/", name, ".key");
    if (std::filesystem::exists(cert_path) && std::filesystem::exists(key_path)) {
      TP_RETURN_IF_ERROR(CheckOwnerOnly(key_path));
      TP_ASSIGN_OR_RETURN(std::string pem, ReadFileToString(cert_path));
      if (!ExpiresSoon(pem)) {
        continue;
      }
    }
    TP_ASSIGN_OR_RETURN(TlsIdentity identity, IssueIdentity(ca, name));
    TP_RETURN_IF_ERROR(WriteFileAtomically(key_path, identity.key_pem, 0600));
    TP_RETURN_IF_ERROR(WriteFileAtomically(cert_path, identity.cert_pem, 0644));
  }
  return absl::OkStatus();
}

absl::StatusOr<TlsIdentity> LoadTlsIdentity(const std::string& dir, const std::string& name) {
  const std::string key_path = absl::StrCat(dir, "/", name, ".key");
  TlsIdentity identity;
  identity.name = name;
  absl::StatusOr<std::string> ca = ReadFileToString(dir + "/ca.pem");
  absl::StatusOr<std::string> cert = ReadFileToString(absl::StrCat(dir, "/", name, ".pem"));
  absl::StatusOr<std::string> key = ReadFileToString(key_path);
  if (!ca.ok() || !cert.ok() || !key.ok()) {
    return absl::NotFoundError(absl::StrCat(
        "no platform certificate for '", name, "' in ", dir,
        " (start the platform once with tls.auto_generate, or point tls.dir at the certificates)"));
  }
  TP_RETURN_IF_ERROR(CheckOwnerOnly(key_path));
  identity.ca_pem = *std::move(ca);
  identity.cert_pem = *std::move(cert);
  identity.key_pem = *std::move(key);
  return identity;
}

}  // namespace tidepool
