#include "services/secrets/master_key.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "lib/crypto/crypto.h"
#include "lib/log.h"
#include "services/secrets/secret_file.h"

namespace tidepool::secrets {
namespace {

constexpr size_t kHexKeySize = 2 * kMasterKeySize;
// Anything longer is certainly not a key; refuse before reading it.
constexpr off_t kMaxKeyFileSize = 4096;
constexpr absl::string_view kHowToMake =
    "a master key is 32 random bytes, or 64 hexadecimal characters such as the output of "
    "`openssl rand -hex 32`";

bool IsHex(absl::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return absl::ascii_isxdigit(c); });
}

bool AllPrintable(absl::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

absl::Status KeyError(absl::string_view source_name, absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(source_name, " ", what, "; ", kHowToMake));
}

absl::StatusOr<SecretBytes> CheckKeyBytes(SecretBytes key, absl::string_view source_name) {
  const absl::string_view bytes = key.view();
  if (std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; })) {
    return KeyError(source_name, "holds an all-zero key");
  }
  return key;
}

}  // namespace

std::string MasterKeySource::Describe() const {
  if (!env_var.empty()) {
    return absl::StrCat("the environment variable ", env_var);
  }
  return absl::StrCat("the master key file ", file);
}

absl::StatusOr<SecretBytes> ParseMasterKey(absl::string_view material,
                                           absl::string_view source_name) {
  if (material.size() == kMasterKeySize) {
    if (AllPrintable(material)) {
      return KeyError(source_name,
                      "holds 32 printable characters, which looks like a password rather than "
                      "a random key");
    }
    return CheckKeyBytes(SecretBytes(std::string(material)), source_name);
  }
  absl::string_view text = material;
  if (!absl::ConsumeSuffix(&text, "\r\n")) {
    absl::ConsumeSuffix(&text, "\n");
  }
  if (text.size() == kHexKeySize && IsHex(text)) {
    absl::StatusOr<std::string> decoded = crypto::HexDecode(text);
    if (!decoded.ok()) {
      return KeyError(source_name, "holds malformed hexadecimal");
    }
    return CheckKeyBytes(SecretBytes(*std::move(decoded)), source_name);
  }
  if (material.empty()) {
    return KeyError(source_name, "is empty");
  }
  const bool hex_text = IsHex(text);
  const size_t expected = hex_text ? kHexKeySize : kMasterKeySize;
  const std::string unit = hex_text ? "hexadecimal characters" : "bytes";
  if (text.size() < expected) {
    return KeyError(source_name, absl::StrCat("is too short (", text.size(), " ", unit, ")"));
  }
  return KeyError(source_name, absl::StrCat("is too long (", text.size(), " ", unit, ")"));
}

absl::StatusOr<SecretBytes> ReadMasterKeyFile(const std::string& path) {
  const std::string name = absl::StrCat("the master key file ", path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(name, " is missing"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat(name, " cannot be opened: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int saved = errno;
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat(name, " cannot be examined: ", std::strerror(saved)));
  }
  absl::Status refused;
  if (!S_ISREG(st.st_mode)) {
    refused = absl::FailedPreconditionError(absl::StrCat(name, " is not a regular file"));
  } else if (st.st_uid != ::geteuid()) {
    refused = absl::FailedPreconditionError(absl::StrCat(name, " belongs to uid ", st.st_uid,
                                                         ", but the service runs as uid ",
                                                         ::geteuid(), "; run chown on it"));
  } else if ((st.st_mode & 077) != 0) {
    refused = absl::FailedPreconditionError(
        absl::StrCat(name, " is open to group or other users (mode ",
                     absl::StrFormat("%04o", st.st_mode & 07777), "); run chmod 600 on it"));
  } else if (st.st_size > kMaxKeyFileSize) {
    refused = KeyError(name, absl::StrCat("is too long (", st.st_size, " bytes)"));
  }
  if (!refused.ok()) {
    ::close(fd);
    return refused;
  }
  std::string content(static_cast<size_t>(kMaxKeyFileSize) + 1, '\0');
  size_t used = 0;
  while (used < content.size()) {
    const ssize_t n = ::read(fd, content.data() + used, content.size() - used);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      ::explicit_bzero(content.data(), content.size());
      return absl::FailedPreconditionError(
          absl::StrCat(name, " cannot be read: ", std::strerror(saved)));
    }
    if (n == 0) {
      break;
    }
    used += static_cast<size_t>(n);
  }
  ::close(fd);
  SecretBytes wiped_on_return(std::move(content));
  if (used > static_cast<size_t>(kMaxKeyFileSize)) {
    return KeyError(name, "is too long");
  }
  return ParseMasterKey(wiped_on_return.view().substr(0, used), name);
}

absl::StatusOr<SecretBytes> ReadMasterKeyEnv(const std::string& name) {
  const std::string source = absl::StrCat("the environment variable ", name);
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(source, " is not set"));
  }
  const absl::string_view text(value);
  if (text.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(source, " is empty"));
  }
  if (text.size() != kHexKeySize || !IsHex(text)) {
    return KeyError(
        source, absl::StrCat("must hold exactly 64 hexadecimal characters (it holds ", text.size(),
                             " characters", IsHex(text) ? "" : ", not all hexadecimal", ")"));
  }
  return ParseMasterKey(text, source);
}

absl::Status WriteMasterKeyFile(const std::string& path, absl::string_view key) {
  if (key.size() != kMasterKeySize) {
    return absl::InvalidArgumentError("a master key must be exactly 32 bytes");
  }
  SecretBytes text(crypto::HexEncode(key) + "\n");
  return WriteSecretFile(path, std::string(text.view()));
}

absl::StatusOr<LoadedMasterKey> LoadMasterKeyAtStart(const MasterKeySource& source,
                                                     bool first_start) {
  if (source.file.empty() == source.env_var.empty()) {
    return absl::InvalidArgumentError(
        "exactly one master key source (a file or an environment variable) must be configured");
  }
  LoadedMasterKey loaded;
  if (!source.env_var.empty()) {
    absl::StatusOr<SecretBytes> key = ReadMasterKeyEnv(source.env_var);
    if (!key.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("sealed: ", key.status().message()));
    }
    loaded.key = *std::move(key);
    return loaded;
  }
  absl::StatusOr<SecretBytes> key = ReadMasterKeyFile(source.file);
  if (key.ok()) {
    loaded.key = *std::move(key);
    return loaded;
  }
  if (key.status().code() != absl::StatusCode::kNotFound) {
    return absl::FailedPreconditionError(absl::StrCat("sealed: ", key.status().message()));
  }
  if (!first_start) {
    return absl::FailedPreconditionError(absl::StrCat(
        "sealed: ", key.status().message(),
        ", but secrets are already stored; restore the key file from your backup (a new key "
        "could not open what the old one sealed, so none is generated)"));
  }
  absl::StatusOr<std::string> fresh = crypto::RandomBytes(kMasterKeySize);
  if (!fresh.ok()) {
    return fresh.status();
  }
  loaded.key = SecretBytes(*std::move(fresh));
  absl::Status written = WriteMasterKeyFile(source.file, loaded.key.view());
  if (!written.ok()) {
    return written;
  }
  loaded.generated = true;
  return loaded;
}

}  // namespace tidepool::secrets
