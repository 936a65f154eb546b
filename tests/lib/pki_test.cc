#include "lib/pki.h"

#include <sys/stat.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/authz.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::ReadFileOrEmpty;
using ::tidepool::testing::StatusIs;

int Mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return -1;
  }
  return static_cast<int>(st.st_mode & 0777);
}

TEST(PkiTest, CreatesCaAndPrivateKeysOnFirstStart) {
  tidepool::testing::ScopedTempDir tmp;
  const std::string dir = tmp.Join("pki");
  ASSERT_THAT(EnsurePlatformPki(dir, {"auth", "tidepoolctl"}), IsOk());
  EXPECT_EQ(Mode(dir), 0700);
  EXPECT_EQ(Mode(dir + "/ca.key"), 0600);
  EXPECT_EQ(Mode(dir + "/auth.key"), 0600);
  EXPECT_EQ(Mode(dir + "/tidepoolctl.key"), 0600);
  absl::StatusOr<TlsIdentity> auth = LoadTlsIdentity(dir, "auth");
  ASSERT_THAT(auth, IsOk());
  EXPECT_THAT(auth->cert_pem, HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_THAT(auth->key_pem, HasSubstr("PRIVATE KEY"));
  EXPECT_EQ(auth->ca_pem, ReadFileOrEmpty(dir + "/ca.pem"));
}

TEST(PkiTest, SecondRunKeepsExistingMaterial) {
  tidepool::testing::ScopedTempDir tmp;
  const std::string dir = tmp.Join("pki");
  ASSERT_THAT(EnsurePlatformPki(dir, {"auth"}), IsOk());
  const std::string ca = ReadFileOrEmpty(dir + "/ca.pem");
  const std::string cert = ReadFileOrEmpty(dir + "/auth.pem");
  ASSERT_THAT(EnsurePlatformPki(dir, {"auth", "scaler"}), IsOk());
  EXPECT_EQ(ReadFileOrEmpty(dir + "/ca.pem"), ca);
  EXPECT_EQ(ReadFileOrEmpty(dir + "/auth.pem"), cert);
  EXPECT_THAT(LoadTlsIdentity(dir, "scaler"), IsOk());
}

TEST(PkiTest, RefusesKeysReadableByOthers) {
  tidepool::testing::ScopedTempDir tmp;
  const std::string dir = tmp.Join("pki");
  ASSERT_THAT(EnsurePlatformPki(dir, {"auth"}), IsOk());
  ASSERT_EQ(::chmod((dir + "/auth.key").c_str(), 0644), 0);
  EXPECT_THAT(LoadTlsIdentity(dir, "auth"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("chmod 600")));
  ASSERT_EQ(::chmod((dir + "/ca.key").c_str(), 0640), 0);
  EXPECT_THAT(EnsurePlatformPki(dir, {"auth"}), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(PkiTest, MissingIdentityNamesTheFix) {
  tidepool::testing::ScopedTempDir tmp;
  EXPECT_THAT(LoadTlsIdentity(tmp.path(), "auth"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("tls.auto_generate")));
}

TEST(PkiTest, CertificateNamesTheServiceAndVerifiesAgainstTheCa) {
  tidepool::testing::ScopedTempDir tmp;
  absl::StatusOr<CertAuthority> ca = CreateCertAuthority("Tidepool");
  ASSERT_THAT(ca, IsOk());
  absl::StatusOr<TlsIdentity> id = IssueIdentity(*ca, "provisioner");
  ASSERT_THAT(id, IsOk());
  ASSERT_TRUE(tidepool::testing::WriteFile(tmp.Join("ca.pem"), ca->cert_pem));
  ASSERT_TRUE(tidepool::testing::WriteFile(tmp.Join("p.pem"), id->cert_pem));
  // Checked with the openssl command line tool, independently of our code.
  absl::StatusOr<tidepool::testing::CommandResult> verify = tidepool::testing::RunCommand(
      {"/usr/bin/openssl", "verify", "-CAfile", tmp.Join("ca.pem"), tmp.Join("p.pem")}, tmp.path());
  ASSERT_THAT(verify, IsOk());
  EXPECT_EQ(verify->exit_code, 0) << verify->out << verify->err;
  absl::StatusOr<tidepool::testing::CommandResult> text =
      tidepool::testing::RunCommand({"/usr/bin/openssl", "x509", "-in", tmp.Join("p.pem"), "-noout",
                                     "-subject", "-ext", "subjectAltName,extendedKeyUsage"},
                                    tmp.path());
  ASSERT_THAT(text, IsOk());
  EXPECT_THAT(text->out, HasSubstr("CN = provisioner"));
  EXPECT_THAT(text->out, HasSubstr("IP Address:127.0.0.1"));
  EXPECT_THAT(text->out, HasSubstr("TLS Web Client Authentication"));
  EXPECT_THAT(IssueIdentity(*ca, "Bad Name"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace tidepool
