#include "services/auth/password_hasher.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

constexpr char kPassword[] = "correct horse battery staple";

// Cheap parameters for tests: N = 2^10.
PasswordHasher::Options CheapOptions() {
  PasswordHasher::Options options;
  options.log2_n = 10;
  return options;
}

std::string HashOrDie(const PasswordHasher& hasher, const std::string& password) {
  absl::StatusOr<std::string> encoded = hasher.Hash(password);
  EXPECT_THAT(encoded, IsOk());
  return encoded.ok() ? *encoded : std::string();
}

// Substitutes `encoded`'s parameter section ("ln=10,r=8,p=1") with `params`.
std::string WithParams(const std::string& encoded, const std::string& params) {
  return absl::StrReplaceAll(encoded, {{"ln=10,r=8,p=1", params}});
}

TEST(PasswordHasherTest, HashesToPhcStringAndVerifies) {
  PasswordHasher hasher(CheapOptions());
  const std::string encoded = HashOrDie(hasher, kPassword);
  EXPECT_THAT(encoded, MatchesRegex("\\$scrypt\\$ln=10,r=8,p=1\\$[A-Za-z0-9+/]{22}\\$"
                                    "[A-Za-z0-9+/]{43}"));
  EXPECT_TRUE(hasher.Verify(kPassword, encoded));
  EXPECT_THAT(encoded, Not(HasSubstr(kPassword)));
}

TEST(PasswordHasherTest, DefaultOptionsRoundTrip) {
  PasswordHasher hasher;
  EXPECT_THAT(PasswordHasher::ValidateOptions(hasher.options()), IsOk());
  const std::string encoded = HashOrDie(hasher, kPassword);
  EXPECT_THAT(encoded, MatchesRegex("\\$scrypt\\$ln=15,r=8,p=1\\$.*"));
  EXPECT_TRUE(hasher.Verify(kPassword, encoded));
  EXPECT_FALSE(hasher.NeedsRehash(encoded));
}

TEST(PasswordHasherTest, RejectsWrongPassword) {
  PasswordHasher hasher(CheapOptions());
  const std::string encoded = HashOrDie(hasher, kPassword);
  EXPECT_FALSE(hasher.Verify("correct horse battery stapler", encoded));
  EXPECT_FALSE(hasher.Verify("Correct horse battery staple", encoded));
  EXPECT_FALSE(hasher.Verify("", encoded));
  // HMAC pads short keys with zeros, so scrypt alone would accept this one.
  EXPECT_FALSE(hasher.Verify(std::string(kPassword) + '\0', encoded));
  EXPECT_FALSE(hasher.Verify(std::string(kPassword) + std::string(3, '\0'), encoded));
  EXPECT_THAT(hasher.Hash(std::string(kPassword) + '\0'),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(PasswordHasherTest, SaltsDifferForSamePassword) {
  PasswordHasher hasher(CheapOptions());
  const std::string a = HashOrDie(hasher, kPassword);
  const std::string b = HashOrDie(hasher, kPassword);
  EXPECT_NE(a, b);
  // The salt field (fourth '$'-separated field) differs, not just the hash.
  EXPECT_NE(a.substr(0, a.rfind('$')), b.substr(0, b.rfind('$')));
  EXPECT_TRUE(hasher.Verify(kPassword, a));
  EXPECT_TRUE(hasher.Verify(kPassword, b));
}

TEST(PasswordHasherTest, EveryAlteredCharacterFailsToVerify) {
  PasswordHasher hasher(CheapOptions());
  const std::string encoded = HashOrDie(hasher, kPassword);
  ASSERT_TRUE(hasher.Verify(kPassword, encoded));
  for (size_t i = 0; i < encoded.size(); ++i) {
    for (char replacement : {'A', 'B', '0', '9', '/', '$', ',', '=', '\0'}) {
      if (encoded[i] == replacement) {
        continue;
      }
      std::string altered = encoded;
      altered[i] = replacement;
      EXPECT_FALSE(hasher.Verify(kPassword, altered))
          << "position " << i << " replaced by " << static_cast<int>(replacement);
    }
  }
}

TEST(PasswordHasherTest, TruncatedOrExtendedEncodingsFailToVerify) {
  PasswordHasher hasher(CheapOptions());
  const std::string encoded = HashOrDie(hasher, kPassword);
  for (size_t n = 0; n < encoded.size(); ++n) {
    EXPECT_FALSE(hasher.Verify(kPassword, encoded.substr(0, n))) << "prefix of length " << n;
  }
  for (const char* suffix : {"A", "=", "==", "$", "$A", ",", "\n", " "}) {
    EXPECT_FALSE(hasher.Verify(kPassword, encoded + suffix)) << "suffix " << suffix;
  }
  EXPECT_FALSE(hasher.Verify(kPassword, " " + encoded));
  EXPECT_FALSE(hasher.Verify(kPassword, std::string(100000, '$')));
}

TEST(PasswordHasherTest, AbsurdOrMalformedParametersFailToVerify) {
  PasswordHasher hasher(CheapOptions());
  const std::string encoded = HashOrDie(hasher, kPassword);
  const std::vector<std::string> params = {
      "ln=21,r=8,p=1",          // N above 2^20
      "ln=64,r=8,p=1",          // would overflow a shift
      "ln=4294967295,r=8,p=1",  // 32-bit max
      "ln=99999999999999999999,r=8,p=1",
      "ln=0,r=8,p=1",
      "ln=10,r=0,p=1",
      "ln=10,r=33,p=1",
      "ln=10,r=1000000,p=1",
      "ln=10,r=8,p=0",
      "ln=10,r=8,p=17",
      "ln=10,r=8,p=4294967295",
      "ln=10,r=32,p=16",  // r * p = 512
      "ln=20,r=8,p=1",    // 1 GiB of memory
      "ln=20,r=1,p=16",   // work N * r * p = 2^24
      "ln=-1,r=8,p=1",
      "ln=+10,r=8,p=1",
      "ln=010,r=8,p=1",
      "ln= 10,r=8,p=1",
      "ln=0xA,r=8,p=1",
      "ln=10,r=8",
      "ln=10,r=8,p=1,x=1",
      "r=8,ln=10,p=1",
      "ln=10;r=8;p=1",
      "LN=10,R=8,P=1",
      "",
  };
  for (const std::string& p : params) {
    EXPECT_FALSE(hasher.Verify(kPassword, WithParams(encoded, p))) << p;
    EXPECT_TRUE(hasher.NeedsRehash(WithParams(encoded, p))) << p;
  }
}

TEST(PasswordHasherTest, MalformedFieldsFailToVerify) {
  PasswordHasher hasher(CheapOptions());
  const std::string encoded = HashOrDie(hasher, kPassword);
  const size_t salt_start = encoded.find('$', 1 + encoded.find('$', 1)) + 1;
  const size_t hash_start = encoded.rfind('$') + 1;
  const std::string head = encoded.substr(0, salt_start);  // "$scrypt$ln=10,r=8,p=1$"
  const std::string salt = encoded.substr(salt_start, hash_start - salt_start - 1);
  const std::string hash = encoded.substr(hash_start);
  ASSERT_EQ(head + salt + "$" + hash, encoded);

  const std::vector<std::string> bad = {
      "",
      "$",
      "$$$$",
      "scrypt$ln=10,r=8,p=1$" + salt + "$" + hash,  // no leading '$'
      "$scrypt2$ln=10,r=8,p=1$" + salt + "$" + hash,
      "$SCRYPT$ln=10,r=8,p=1$" + salt + "$" + hash,
      "$argon2id$ln=10,r=8,p=1$" + salt + "$" + hash,
      head + "$" + hash,                          // empty salt
      head + salt + "$",                          // empty hash
      head + salt,                                // missing hash
      head + salt + "==" + "$" + hash,            // padding
      head + salt + "$" + hash + "=",             // padding
      head + "_" + salt.substr(1) + "$" + hash,   // base64url alphabet
      head + "-" + salt.substr(1) + "$" + hash,   // base64url alphabet
      head + salt + "$" + "." + hash.substr(1),   // not base64
      head + "AAAA" + "$" + hash,                 // salt too short (3 bytes)
      head + std::string(100, 'A') + "$" + hash,  // salt too long (75 bytes)
      head + salt + "$" + std::string(20, 'A'),   // key too short (15 bytes)
      head + salt + "$" + std::string(120, 'A'),  // key too long
      head + salt + "$" + hash + "$" + hash,      // extra field
      head + salt + "$" + hash.substr(0, hash.size() - 1) + "\xff",
  };
  for (const std::string& b : bad) {
    EXPECT_FALSE(hasher.Verify(kPassword, b)) << b;
    EXPECT_TRUE(hasher.NeedsRehash(b)) << b;
  }
}

TEST(PasswordHasherTest, RejectsOverlongPasswordsWithoutWork) {
  PasswordHasher hasher(CheapOptions());
  const std::string longest(kMaxPasswordBytes, 'x');
  const std::string encoded = HashOrDie(hasher, longest);
  EXPECT_TRUE(hasher.Verify(longest, encoded));
  EXPECT_FALSE(hasher.Verify(longest + "x", encoded));
  EXPECT_THAT(hasher.Hash(longest + "x"), StatusIs(absl::StatusCode::kInvalidArgument));
  hasher.VerifyDummy(longest + "x");  // returns without work; must not crash
}

TEST(PasswordHasherTest, NeedsRehashWhenParametersAreBelowOptions) {
  PasswordHasher cheap(CheapOptions());
  const std::string cheap_hash = HashOrDie(cheap, kPassword);
  EXPECT_FALSE(cheap.NeedsRehash(cheap_hash));

  PasswordHasher::Options stronger_n = CheapOptions();
  stronger_n.log2_n = 11;
  EXPECT_TRUE(PasswordHasher(stronger_n).NeedsRehash(cheap_hash));

  PasswordHasher::Options stronger_p = CheapOptions();
  stronger_p.p = 2;
  EXPECT_TRUE(PasswordHasher(stronger_p).NeedsRehash(cheap_hash));

  PasswordHasher::Options longer_key = CheapOptions();
  longer_key.key_bytes = 64;
  EXPECT_TRUE(PasswordHasher(longer_key).NeedsRehash(cheap_hash));
  // A key shorter than configured cannot be told from a truncated one: it never verifies.
  EXPECT_FALSE(PasswordHasher(longer_key).Verify(kPassword, cheap_hash));
  PasswordHasher::Options shorter_key = CheapOptions();
  shorter_key.key_bytes = 16;
  EXPECT_TRUE(PasswordHasher(shorter_key).Verify(kPassword, cheap_hash));

  PasswordHasher::Options longer_salt = CheapOptions();
  longer_salt.salt_bytes = 32;
  EXPECT_TRUE(PasswordHasher(longer_salt).NeedsRehash(cheap_hash));

  // A hash stronger than the options is kept.
  PasswordHasher::Options weaker_r = CheapOptions();
  weaker_r.r = 4;
  EXPECT_FALSE(PasswordHasher(weaker_r).NeedsRehash(cheap_hash));
  // ... and still verifies, because the parameters travel with it.
  EXPECT_TRUE(PasswordHasher(weaker_r).Verify(kPassword, cheap_hash));
}

TEST(PasswordHasherTest, ValidatesOptions) {
  EXPECT_THAT(PasswordHasher::ValidateOptions(PasswordHasher::Options()), IsOk());
  EXPECT_THAT(PasswordHasher::ValidateOptions(CheapOptions()), IsOk());
  PasswordHasher::Options bad = CheapOptions();
  bad.log2_n = 21;
  EXPECT_THAT(PasswordHasher::ValidateOptions(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PasswordHasher(bad).Hash(kPassword), StatusIs(absl::StatusCode::kFailedPrecondition));
  bad = CheapOptions();
  bad.salt_bytes = 8;
  EXPECT_THAT(PasswordHasher::ValidateOptions(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = CheapOptions();
  bad.r = 0;
  EXPECT_THAT(PasswordHasher::ValidateOptions(bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(PasswordHasherTest, VerifyDummyRunsWithoutResult) {
  PasswordHasher hasher(CheapOptions());
  hasher.VerifyDummy(kPassword);
  hasher.VerifyDummy("");
}

// RFC 7914 §12 test vectors.
TEST(PasswordHasherTest, ScryptMatchesRfc7914Vectors) {
  absl::StatusOr<std::string> key = ScryptForTest("password", "NaCl", 1024, 8, 16, 64);
  ASSERT_THAT(key, IsOk());
  EXPECT_EQ(crypto::HexEncode(*key),
            "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
            "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640");

  key = ScryptForTest("", "", 16, 1, 1, 64);
  ASSERT_THAT(key, IsOk());
  EXPECT_EQ(crypto::HexEncode(*key),
            "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
            "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906");
}

TEST(PasswordHasherTest, ScryptRejectsInvalidParameters) {
  EXPECT_THAT(ScryptForTest("p", "s", 1000, 8, 1, 32),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ScryptForTest("p", "s", 1, 8, 1, 32), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ScryptForTest("p", "s", 1024, 0, 1, 32),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ScryptForTest("p", "s", uint64_t{1} << 40, 8, 1, 32),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ScryptForTest("p", "s", 1024, 8, uint64_t{1} << 40, 32),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(PasswordHasherTest, PolicyAcceptsReasonablePasswords) {
  EXPECT_THAT(CheckPasswordPolicy("correct horse battery staple"), IsOk());
  EXPECT_THAT(CheckPasswordPolicy("aaaaaaaaaaab"), IsOk());
  // 12 code points of Cyrillic: 24 bytes.
  EXPECT_THAT(CheckPasswordPolicy("\xd0\xbf\xd0\xb0\xd1\x80\xd0\xbe\xd0\xbb\xd1\x8c"
                                  "\xd0\xbf\xd0\xb0\xd1\x80\xd0\xbe\xd0\xbb\xd1\x8c"),
              IsOk());
  EXPECT_THAT(CheckPasswordPolicy(std::string(kMaxPasswordBytes - 1, 'a') + "b"), IsOk());
}

TEST(PasswordHasherTest, PolicyRejectsShortPasswords) {
  EXPECT_THAT(CheckPasswordPolicy(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least 12 characters")));
  EXPECT_THAT(CheckPasswordPolicy("abcdefghijk"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least 12 characters")));
  // 11 code points but 22 bytes: characters, not bytes, are counted.
  const std::string eleven_two_byte =
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa8";
  EXPECT_THAT(CheckPasswordPolicy(eleven_two_byte),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least 12 characters")));
}

TEST(PasswordHasherTest, PolicyRejectsLongPasswords) {
  const std::string too_long = std::string(kMaxPasswordBytes, 'a') + "b";
  EXPECT_THAT(CheckPasswordPolicy(too_long),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 1024 bytes")));
}

TEST(PasswordHasherTest, PolicyRejectsInvalidUtf8) {
  for (const std::string& bad : {std::string("abcdefghijkl\xff"),
                                 std::string("abcdefghijkl\xc0\xaf"),          // overlong '/'
                                 std::string("abcdefghijkl\xed\xa0\x80"),      // surrogate
                                 std::string("abcdefghijkl\xf4\x90\x80\x80"),  // > U+10FFFF
                                 std::string("abcdefghijkl\xe2\x82"),          // truncated
                                 std::string("abcdefghijkl\x80")}) {
    EXPECT_THAT(CheckPasswordPolicy(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("valid UTF-8")));
  }
}

TEST(PasswordHasherTest, PolicyRejectsNul) {
  EXPECT_THAT(CheckPasswordPolicy(std::string("abcdefghijkl\0mnop", 17)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL")));
}

TEST(PasswordHasherTest, PolicyRejectsSingleRepeatedCharacter) {
  EXPECT_THAT(CheckPasswordPolicy(std::string(20, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("repeated")));
  std::string repeated_e_acute;
  for (int i = 0; i < 12; ++i) {
    repeated_e_acute += "\xc3\xa9";
  }
  EXPECT_THAT(CheckPasswordPolicy(repeated_e_acute),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("repeated")));
}

TEST(PasswordHasherTest, PolicyMessagesNeverEchoThePassword) {
  for (const std::string& password :
       {std::string("hunter2"), std::string(30, 'q'), std::string(2000, 'z') + "secretword",
        std::string("secretsecret\xff")}) {
    const absl::Status status = CheckPasswordPolicy(password);
    ASSERT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr("hunter2")));
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr("qqq")));
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr("secret")));
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr("zzz")));
  }
}

}  // namespace
}  // namespace tidepool::auth
