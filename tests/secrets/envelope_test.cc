// Envelope encryption: every altered byte fails closed, a ciphertext moved to another user,
// provider, field, version or data-key generation does not open, nonces never repeat, and the
// keyed fingerprint matches a known answer.
#include "services/secrets/envelope.h"

#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::secrets {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

constexpr char kUserA[] = "u_aaaaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kUserB[] = "u_bbbbbbbbbbbbbbbbbbbbbbbbbb";
constexpr char kValue[] = "sk-ant-api03-envelope-test-value-0123456789";

std::string Key(char fill) { return std::string(kDataKeySize, fill); }

ValueBinding Binding() { return ValueBinding{kUserA, "anthropic", "api_key", 3, 1}; }

TEST(EnvelopeTest, ValuesRoundTripAndCarryTheFormatByte) {
  absl::StatusOr<std::string> sealed = SealValue(Key('d'), Binding(), kValue);
  ASSERT_THAT(sealed, IsOk());
  EXPECT_EQ(sealed->size(), 1 + 12 + std::string(kValue).size() + 16);
  EXPECT_EQ(static_cast<uint8_t>((*sealed)[0]), kValueFormatV1);
  EXPECT_EQ(sealed->find(kValue), std::string::npos);
  absl::StatusOr<SecretBytes> opened = OpenValue(Key('d'), Binding(), *sealed);
  ASSERT_THAT(opened, IsOk());
  EXPECT_EQ(opened->view(), kValue);
}

TEST(EnvelopeTest, FlippingAnyByteOfFormatNonceCiphertextOrTagFailsClosed) {
  const std::string sealed = *SealValue(Key('d'), Binding(), kValue);
  for (size_t i = 0; i < sealed.size(); ++i) {
    for (uint8_t bit : {0x01, 0x80}) {
      std::string altered = sealed;
      altered[i] = static_cast<char>(altered[i] ^ bit);
      EXPECT_THAT(OpenValue(Key('d'), Binding(), altered),
                  StatusIs(absl::StatusCode::kInternal, "a stored secret failed authentication"))
          << "byte " << i;
    }
  }
  EXPECT_THAT(OpenValue(Key('d'), Binding(), sealed.substr(0, sealed.size() - 1)),
              StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(OpenValue(Key('d'), Binding(), sealed + "x"), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(OpenValue(Key('d'), Binding(), ""), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(OpenValue(Key('e'), Binding(), sealed), StatusIs(absl::StatusCode::kInternal));
}

TEST(EnvelopeTest, ATransplantedValueDoesNotOpen) {
  const std::string sealed = *SealValue(Key('d'), Binding(), kValue);
  std::vector<ValueBinding> elsewhere(5, Binding());
  elsewhere[0].user_id = kUserB;
  elsewhere[1].provider_id = "openai";
  elsewhere[2].field_id = "token";
  elsewhere[3].version = 2;
  elsewhere[4].generation = 2;
  for (const ValueBinding& binding : elsewhere) {
    EXPECT_THAT(OpenValue(Key('d'), binding, sealed), StatusIs(absl::StatusCode::kInternal));
  }
}

TEST(EnvelopeTest, WrappedDataKeysAreBoundToUserTermAndGeneration) {
  const DataKeyBinding binding{kUserA, 2, 1};
  absl::StatusOr<std::string> wrapped = WrapDataKey(Key('k'), binding, Key('d'));
  ASSERT_THAT(wrapped, IsOk());
  EXPECT_EQ(wrapped->size(), 12u + 32u + 16u);
  ASSERT_EQ(UnwrapDataKey(Key('k'), binding, *wrapped)->view(), Key('d'));
  for (const DataKeyBinding& other : {DataKeyBinding{kUserB, 2, 1}, DataKeyBinding{kUserA, 1, 1},
                                      DataKeyBinding{kUserA, 3, 1}, DataKeyBinding{kUserA, 2, 2}}) {
    EXPECT_THAT(UnwrapDataKey(Key('k'), other, *wrapped),
                StatusIs(absl::StatusCode::kInternal, "a stored data key failed authentication"));
  }
  EXPECT_THAT(UnwrapDataKey(Key('K'), binding, *wrapped), StatusIs(absl::StatusCode::kInternal));
  for (size_t i = 0; i < wrapped->size(); ++i) {
    std::string altered = *wrapped;
    altered[i] = static_cast<char>(altered[i] ^ 0x01);
    EXPECT_THAT(UnwrapDataKey(Key('k'), binding, altered), StatusIs(absl::StatusCode::kInternal))
        << "byte " << i;
  }
  EXPECT_THAT(WrapDataKey(Key('k'), binding, "short"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(EnvelopeTest, AadLayoutsAreUnambiguous) {
  EXPECT_NE(ValueAad(ValueBinding{kUserA, "ab", "c", 1, 1}),
            ValueAad(ValueBinding{kUserA, "a", "bc", 1, 1}));
  EXPECT_NE(ValueAad(ValueBinding{kUserA, "a", "b", 1, 2}),
            ValueAad(ValueBinding{kUserA, "a", "b", 2, 1}));
  EXPECT_NE(DataKeyAad(DataKeyBinding{kUserA, 1, 2}), DataKeyAad(DataKeyBinding{kUserA, 2, 1}));
  // Values and data keys live in separate domains.
  EXPECT_EQ(ValueAad(Binding()).rfind("tidepool.secrets.value/v1", 0), 0u);
  EXPECT_EQ(DataKeyAad(DataKeyBinding{kUserA, 1, 1}).rfind("tidepool.secrets.dek/v1", 0), 0u);
}

TEST(EnvelopeTest, HundredThousandEncryptionsOfOneValueAreAllDistinct) {
  constexpr int kCount = 100000;
  std::set<std::string> ciphertexts;
  std::set<std::string> nonces;
  for (int i = 0; i < kCount; ++i) {
    absl::StatusOr<std::string> sealed = SealValue(Key('d'), Binding(), kValue);
    ASSERT_THAT(sealed, IsOk());
    nonces.insert(sealed->substr(1, 12));
    ciphertexts.insert(*std::move(sealed));
  }
  EXPECT_EQ(ciphertexts.size(), static_cast<size_t>(kCount));
  EXPECT_EQ(nonces.size(), static_cast<size_t>(kCount));
}

TEST(EnvelopeTest, DataKeysAreFreshAndRandom) {
  absl::StatusOr<SecretBytes> a = NewDataKey();
  absl::StatusOr<SecretBytes> b = NewDataKey();
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(a->size(), kDataKeySize);
  EXPECT_NE(a->view(), b->view());
}

TEST(EnvelopeTest, FingerprintMatchesAKnownAnswerAndDependsOnTheKey) {
  // RFC 4231-style check: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
  EXPECT_EQ(Fingerprint("key", "The quick brown fox jumps over the lazy dog"), "f7bc83f430538424");
  EXPECT_EQ(Fingerprint(Key('f'), kValue).size(), 16u);
  EXPECT_EQ(Fingerprint(Key('f'), kValue), Fingerprint(Key('f'), kValue));
  EXPECT_NE(Fingerprint(Key('f'), kValue), Fingerprint(Key('g'), kValue));
  EXPECT_NE(Fingerprint(Key('f'), kValue), crypto::HexEncode(crypto::Sha256(kValue)).substr(0, 16));
}

}  // namespace
}  // namespace tidepool::secrets
