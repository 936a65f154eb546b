#include "lib/crypto/crypto.h"

#include <cstddef>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::crypto {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::StartsWith;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

// Test vectors are decoded and printed with absl's hex helpers rather than the HexEncode /
// HexDecode under test, so a bug there cannot mask a bug elsewhere.
std::string Unhex(absl::string_view hex) { return absl::HexStringToBytes(hex); }
std::string Hex(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

// ---------------------------------------------------------------------------------------------
// SHA-256: FIPS 180-2 appendix B.

TEST(Sha256Test, MatchesFipsVectorForEmptyString) {
  EXPECT_EQ(Hex(Sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Test, MatchesFipsVectorForAbc) {
  EXPECT_EQ(Hex(Sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, MatchesFipsVectorForTwoBlockMessage) {
  EXPECT_EQ(Hex(Sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, HandlesEmbeddedNulBytes) {
  const std::string with_nul("a\0b", 3);
  EXPECT_THAT(Sha256(with_nul), SizeIs(kSha256Size));
  EXPECT_NE(Sha256(with_nul), Sha256("a"));
}

// ---------------------------------------------------------------------------------------------
// HMAC-SHA256: RFC 4231 section 4 (test case 5 is a truncated MAC and is not applicable).

TEST(HmacSha256Test, MatchesRfc4231TestCase1) {
  EXPECT_EQ(Hex(HmacSha256(std::string(20, '\x0b'), "Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

TEST(HmacSha256Test, MatchesRfc4231TestCase2) {
  EXPECT_EQ(Hex(HmacSha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(HmacSha256Test, MatchesRfc4231TestCase3) {
  EXPECT_EQ(Hex(HmacSha256(std::string(20, '\xaa'), std::string(50, '\xdd'))),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
}

TEST(HmacSha256Test, MatchesRfc4231TestCase4) {
  EXPECT_EQ(Hex(HmacSha256(Unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                           std::string(50, '\xcd'))),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
}

TEST(HmacSha256Test, MatchesRfc4231TestCase6) {
  EXPECT_EQ(Hex(HmacSha256(std::string(131, '\xaa'),
                           "Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(HmacSha256Test, MatchesRfc4231TestCase7) {
  EXPECT_EQ(Hex(HmacSha256(std::string(131, '\xaa'),
                           "This is a test using a larger than block-size key and a larger "
                           "than block-size data. The key needs to be hashed before being "
                           "used by the HMAC algorithm.")),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

TEST(HmacSha256Test, AcceptsEmptyKeyAndData) {
  // HMAC-SHA256("", ""), a widely published value.
  EXPECT_EQ(Hex(HmacSha256("", "")),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

// ---------------------------------------------------------------------------------------------
// Hex

TEST(HexTest, EncodesLowercase) {
  EXPECT_EQ(HexEncode(std::string("\x00\x01\x7f\x80\xab\xff", 6)), "00017f80abff");
  EXPECT_EQ(HexEncode(""), "");
}

TEST(HexTest, DecodesEitherCase) {
  EXPECT_THAT(HexDecode("00017f80abff"), IsOk());
  EXPECT_EQ(*HexDecode("00017f80abff"), std::string("\x00\x01\x7f\x80\xab\xff", 6));
  EXPECT_EQ(*HexDecode("ABcDeF"), "\xab\xcd\xef");
  EXPECT_EQ(*HexDecode(""), "");
}

TEST(HexTest, RoundTripsEveryByteValue) {
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) {
    all_bytes.push_back(static_cast<char>(i));
  }
  const absl::StatusOr<std::string> decoded = HexDecode(HexEncode(all_bytes));
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(*decoded, all_bytes);
}

TEST(HexTest, RejectsOddLength) {
  EXPECT_THAT(HexDecode("abc"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(HexDecode("0"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(HexTest, RejectsNonHexCharacters) {
  for (absl::string_view bad : {"zz", "0g", "g0", " 0", "0x12", "12\n", "+1", "\xff\xff"}) {
    EXPECT_THAT(HexDecode(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << Hex(bad);
  }
  EXPECT_THAT(HexDecode(absl::string_view("0\0", 2)), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(HexTest, ErrorDoesNotEchoInput) {
  const absl::StatusOr<std::string> decoded = HexDecode("deadbeefZZ");
  ASSERT_THAT(decoded, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(decoded.status().message()), ::testing::Not(HasSubstr("deadbeef")));
}

// ---------------------------------------------------------------------------------------------
// ConstantTimeEquals

TEST(ConstantTimeEqualsTest, EqualInputsCompareEqual) {
  EXPECT_TRUE(ConstantTimeEquals("secret-token", "secret-token"));
  EXPECT_TRUE(ConstantTimeEquals(std::string("a\0b", 3), std::string("a\0b", 3)));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals(absl::string_view(), ""));
}

TEST(ConstantTimeEqualsTest, DifferentInputsCompareUnequal) {
  EXPECT_FALSE(ConstantTimeEquals("secret-token", "secret-tokeN"));
  EXPECT_FALSE(ConstantTimeEquals("Secret-token", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\0b", 3), std::string("a\0c", 3)));
}

TEST(ConstantTimeEqualsTest, DifferentLengthsCompareUnequal) {
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals("secret-token", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
  EXPECT_FALSE(ConstantTimeEquals("x", ""));
  EXPECT_FALSE(ConstantTimeEquals("ab", std::string("ab\0", 3)));
}

// ---------------------------------------------------------------------------------------------
// Randomness

TEST(RandomTest, RandomBytesReturnsRequestedLength) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{12}, size_t{32}, size_t{4096}}) {
    const absl::StatusOr<std::string> bytes = RandomBytes(n);
    ASSERT_THAT(bytes, IsOk());
    EXPECT_THAT(*bytes, SizeIs(n));
  }
}

TEST(RandomTest, RandomBytesDifferBetweenCalls) {
  // A collision of two 32-byte draws has probability 2^-256.
  const absl::StatusOr<std::string> a = RandomBytes(32);
  const absl::StatusOr<std::string> b = RandomBytes(32);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_NE(*a, *b);
}

TEST(RandomTest, RandomTokenHasUnpaddedBase64UrlLength) {
  // ceil(4n / 3) characters and no '=' padding.
  const std::pair<size_t, size_t> cases[] = {{0, 0}, {1, 2},   {2, 3},   {3, 4},
                                             {4, 6}, {16, 22}, {32, 43}, {33, 44}};
  for (const auto& [n_bytes, expected_length] : cases) {
    const absl::StatusOr<std::string> token = RandomToken(n_bytes);
    ASSERT_THAT(token, IsOk());
    EXPECT_THAT(*token, SizeIs(expected_length)) << "n_bytes=" << n_bytes;
  }
}

TEST(RandomTest, RandomTokenUsesUrlSafeAlphabet) {
  const absl::StatusOr<std::string> token = RandomToken(size_t{3072});
  ASSERT_THAT(token, IsOk());
  for (const char c : *token) {
    const bool url_safe = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '_';
    EXPECT_TRUE(url_safe) << "unexpected character '" << c << "'";
  }
}

TEST(RandomTest, RandomTokenDecodesToRequestedBytes) {
  const absl::StatusOr<std::string> token = RandomToken(32);
  ASSERT_THAT(token, IsOk());
  std::string decoded;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(*token, &decoded));
  EXPECT_THAT(decoded, SizeIs(32));
}

// ---------------------------------------------------------------------------------------------
// AES-256-GCM: McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 13-16.

struct GcmVector {
  const char* name;
  const char* key;
  const char* nonce;
  const char* plaintext;
  const char* aad;
  const char* ciphertext;
  const char* tag;
};

constexpr char kGcmKeyZero[] = "0000000000000000000000000000000000000000000000000000000000000000";
constexpr char kGcmKeyFeff[] = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";

const GcmVector kGcmVectors[] = {
    {"TestCase13", kGcmKeyZero, "000000000000000000000000", "", "", "",
     "530f8afbc74536b9a963b4f1c4cb738b"},
    {"TestCase14", kGcmKeyZero, "000000000000000000000000", "00000000000000000000000000000000", "",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"TestCase15", kGcmKeyFeff, "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
     "",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {"TestCase16", kGcmKeyFeff, "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

TEST(AesGcmTest, SealWithNonceMatchesGcmSpecVectors) {
  for (const GcmVector& v : kGcmVectors) {
    SCOPED_TRACE(v.name);
    const absl::StatusOr<std::string> sealed =
        AesGcmSealWithNonce(Unhex(v.key), Unhex(v.nonce), Unhex(v.plaintext), Unhex(v.aad));
    ASSERT_THAT(sealed, IsOk());
    EXPECT_EQ(Hex(*sealed), std::string(v.nonce) + v.ciphertext + v.tag);
  }
}

TEST(AesGcmTest, OpenRecoversGcmSpecPlaintexts) {
  for (const GcmVector& v : kGcmVectors) {
    SCOPED_TRACE(v.name);
    const std::string sealed = Unhex(std::string(v.nonce) + v.ciphertext + v.tag);
    const absl::StatusOr<std::string> opened = AesGcmOpen(Unhex(v.key), sealed, Unhex(v.aad));
    ASSERT_THAT(opened, IsOk());
    EXPECT_EQ(Hex(*opened), v.plaintext);
  }
}

TEST(AesGcmTest, SealThenOpenRoundTrips) {
  const std::string key = Unhex(kGcmKeyFeff);
  for (const std::string& plaintext :
       {std::string(), std::string("x"), std::string("hello, tidepool"), std::string(1000, '\0'),
        std::string(100000, 'p')}) {
    const absl::StatusOr<std::string> sealed = AesGcmSeal(key, plaintext, "aad");
    ASSERT_THAT(sealed, IsOk());
    EXPECT_THAT(*sealed, SizeIs(kGcmNonceSize + plaintext.size() + kGcmTagSize));
    const absl::StatusOr<std::string> opened = AesGcmOpen(key, *sealed, "aad");
    ASSERT_THAT(opened, IsOk());
    EXPECT_EQ(*opened, plaintext);
  }
}

TEST(AesGcmTest, FlippingAnyByteFailsToOpen) {
  const std::string key = Unhex(kGcmKeyFeff);
  const absl::StatusOr<std::string> sealed = AesGcmSeal(key, "attack at dawn", "header");
  ASSERT_THAT(sealed, IsOk());
  for (size_t i = 0; i < sealed->size(); ++i) {
    for (const unsigned char mask : {0x01, 0x80, 0xff}) {
      std::string tampered = *sealed;
      tampered[i] = static_cast<char>(static_cast<unsigned char>(tampered[i]) ^ mask);
      EXPECT_THAT(AesGcmOpen(key, tampered, "header"),
                  StatusIs(absl::StatusCode::kInvalidArgument, "decryption failed"))
          << "byte " << i << " mask " << static_cast<int>(mask);
    }
  }
}

TEST(AesGcmTest, WrongAadFailsToOpen) {
  const std::string key = Unhex(kGcmKeyFeff);
  const absl::StatusOr<std::string> sealed = AesGcmSeal(key, "payload", "workspace=ws-1");
  ASSERT_THAT(sealed, IsOk());
  EXPECT_THAT(AesGcmOpen(key, *sealed, "workspace=ws-2"),
              StatusIs(absl::StatusCode::kInvalidArgument, "decryption failed"));
  EXPECT_THAT(AesGcmOpen(key, *sealed, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, "decryption failed"));
}

TEST(AesGcmTest, WrongKeyFailsToOpen) {
  const absl::StatusOr<std::string> sealed = AesGcmSeal(Unhex(kGcmKeyFeff), "payload", "");
  ASSERT_THAT(sealed, IsOk());
  EXPECT_THAT(AesGcmOpen(Unhex(kGcmKeyZero), *sealed, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, "decryption failed"));
}

TEST(AesGcmTest, RejectsKeysThatAreNot32Bytes) {
  for (const size_t size : {size_t{0}, size_t{16}, size_t{24}, size_t{31}, size_t{33}}) {
    const std::string key(size, 'k');
    EXPECT_THAT(AesGcmSeal(key, "payload", ""), StatusIs(absl::StatusCode::kInvalidArgument))
        << size;
    EXPECT_THAT(AesGcmSealWithNonce(key, std::string(kGcmNonceSize, 'n'), "payload", ""),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << size;
    EXPECT_THAT(AesGcmOpen(key, std::string(64, 's'), ""),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << size;
  }
}

TEST(AesGcmTest, RejectsNoncesThatAreNot12Bytes) {
  const std::string key = Unhex(kGcmKeyFeff);
  for (const size_t size : {size_t{0}, size_t{8}, size_t{11}, size_t{13}, size_t{16}}) {
    EXPECT_THAT(AesGcmSealWithNonce(key, std::string(size, 'n'), "payload", ""),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << size;
  }
}

TEST(AesGcmTest, TruncatedBlobFailsToOpen) {
  const std::string key = Unhex(kGcmKeyFeff);
  const absl::StatusOr<std::string> sealed = AesGcmSeal(key, "attack at dawn", "");
  ASSERT_THAT(sealed, IsOk());
  for (size_t len = 0; len < sealed->size(); ++len) {
    EXPECT_THAT(AesGcmOpen(key, sealed->substr(0, len), ""),
                StatusIs(absl::StatusCode::kInvalidArgument, "decryption failed"))
        << "prefix length " << len;
    EXPECT_THAT(AesGcmOpen(key, sealed->substr(sealed->size() - len), ""),
                StatusIs(absl::StatusCode::kInvalidArgument, "decryption failed"))
        << "suffix length " << len;
  }
}

TEST(AesGcmTest, AppendedBytesFailToOpen) {
  const std::string key = Unhex(kGcmKeyFeff);
  const absl::StatusOr<std::string> sealed = AesGcmSeal(key, "attack at dawn", "");
  ASSERT_THAT(sealed, IsOk());
  EXPECT_THAT(AesGcmOpen(key, *sealed + '\0', ""),
              StatusIs(absl::StatusCode::kInvalidArgument, "decryption failed"));
}

TEST(AesGcmTest, RepeatedSealsOfOnePlaintextAreDistinct) {
  const std::string key = Unhex(kGcmKeyFeff);
  constexpr int kSeals = 10000;
  std::unordered_set<std::string> outputs;
  std::unordered_set<std::string> nonces;
  for (int i = 0; i < kSeals; ++i) {
    absl::StatusOr<std::string> sealed = AesGcmSeal(key, "same plaintext", "same aad");
    ASSERT_THAT(sealed, IsOk());
    nonces.insert(sealed->substr(0, kGcmNonceSize));
    outputs.insert(*std::move(sealed));
  }
  EXPECT_THAT(outputs, SizeIs(kSeals));
  EXPECT_THAT(nonces, SizeIs(kSeals));
}

// ---------------------------------------------------------------------------------------------
// Ed25519: RFC 8032 section 7.1.

struct Ed25519Vector {
  const char* name;
  const char* secret_key;
  const char* public_key;
  const char* message;
  const char* signature;
};

const Ed25519Vector kEd25519Vectors[] = {
    {"Test1", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
    {"Test2", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"Test3", "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
};

// RFC 8032 TEST 1's secret key as PKCS#8 (RFC 8410): 302e020100300506032b657004220420 || seed.
constexpr char kTest1Pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
    "-----END PRIVATE KEY-----\n";

TEST(Ed25519Test, PublicKeyFromSeedMatchesRfc8032) {
  for (const Ed25519Vector& v : kEd25519Vectors) {
    SCOPED_TRACE(v.name);
    const absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::FromSeed(Unhex(v.secret_key));
    ASSERT_THAT(key, IsOk());
    EXPECT_EQ(Hex(key->PublicKey()), v.public_key);
  }
}

TEST(Ed25519Test, SignatureMatchesRfc8032) {
  for (const Ed25519Vector& v : kEd25519Vectors) {
    SCOPED_TRACE(v.name);
    const absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::FromSeed(Unhex(v.secret_key));
    ASSERT_THAT(key, IsOk());
    const absl::StatusOr<std::string> signature = key->Sign(Unhex(v.message));
    ASSERT_THAT(signature, IsOk());
    EXPECT_EQ(Hex(*signature), v.signature);
  }
}

TEST(Ed25519Test, VerifyAcceptsRfc8032Signatures) {
  for (const Ed25519Vector& v : kEd25519Vectors) {
    SCOPED_TRACE(v.name);
    EXPECT_THAT(Ed25519Verify(Unhex(v.public_key), Unhex(v.message), Unhex(v.signature)), IsOk());
  }
}

TEST(Ed25519Test, GeneratedKeySignsAndVerifies) {
  const absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
  ASSERT_THAT(key, IsOk());
  EXPECT_THAT(key->PublicKey(), SizeIs(kEd25519PublicKeySize));
  const absl::StatusOr<std::string> signature = key->Sign("release v1.2.3");
  ASSERT_THAT(signature, IsOk());
  EXPECT_THAT(*signature, SizeIs(kEd25519SignatureSize));
  EXPECT_THAT(Ed25519Verify(key->PublicKey(), "release v1.2.3", *signature), IsOk());
}

TEST(Ed25519Test, GeneratedKeysAreDistinct) {
  const absl::StatusOr<Ed25519PrivateKey> a = Ed25519PrivateKey::Generate();
  const absl::StatusOr<Ed25519PrivateKey> b = Ed25519PrivateKey::Generate();
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_NE(a->PublicKey(), b->PublicKey());
}

TEST(Ed25519Test, SignatureWithAnyBitFlippedFailsVerification) {
  const Ed25519Vector& v = kEd25519Vectors[2];
  const std::string public_key = Unhex(v.public_key);
  const std::string message = Unhex(v.message);
  const std::string signature = Unhex(v.signature);
  for (size_t bit = 0; bit < signature.size() * 8; ++bit) {
    std::string flipped = signature;
    flipped[bit / 8] = static_cast<char>(flipped[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_THAT(Ed25519Verify(public_key, message, flipped),
                StatusIs(absl::StatusCode::kUnauthenticated, "signature verification failed"))
        << "bit " << bit;
  }
}

TEST(Ed25519Test, AlteredMessageFailsVerification) {
  const Ed25519Vector& v = kEd25519Vectors[2];
  EXPECT_THAT(Ed25519Verify(Unhex(v.public_key), "\xaf\x83", Unhex(v.signature)),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(Ed25519Verify(Unhex(v.public_key), "", Unhex(v.signature)),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST(Ed25519Test, VerifyWithAnotherKeyFails) {
  // TEST 2's signature checked against TEST 1's and TEST 3's public keys.
  const Ed25519Vector& signed_by = kEd25519Vectors[1];
  for (const Ed25519Vector* other : {&kEd25519Vectors[0], &kEd25519Vectors[2]}) {
    EXPECT_THAT(Ed25519Verify(Unhex(other->public_key), Unhex(signed_by.message),
                              Unhex(signed_by.signature)),
                StatusIs(absl::StatusCode::kUnauthenticated, "signature verification failed"))
        << other->name;
  }
  const absl::StatusOr<Ed25519PrivateKey> fresh = Ed25519PrivateKey::Generate();
  ASSERT_THAT(fresh, IsOk());
  EXPECT_THAT(
      Ed25519Verify(fresh->PublicKey(), Unhex(signed_by.message), Unhex(signed_by.signature)),
      StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST(Ed25519Test, VerifyRejectsMalformedSizes) {
  const Ed25519Vector& v = kEd25519Vectors[0];
  const std::string public_key = Unhex(v.public_key);
  const std::string signature = Unhex(v.signature);
  EXPECT_THAT(Ed25519Verify(public_key.substr(0, 31), "", signature),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Ed25519Verify(public_key + '\0', "", signature),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Ed25519Verify("", "", signature), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Ed25519Verify(public_key, "", signature.substr(0, 63)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Ed25519Verify(public_key, "", signature + '\0'),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Ed25519Test, FromSeedRejectsWrongSize) {
  for (const size_t size : {size_t{0}, size_t{31}, size_t{33}, size_t{64}}) {
    EXPECT_THAT(Ed25519PrivateKey::FromSeed(std::string(size, 's')),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << size;
  }
}

TEST(Ed25519Test, ToPemWritesPkcs8) {
  const absl::StatusOr<Ed25519PrivateKey> key =
      Ed25519PrivateKey::FromSeed(Unhex(kEd25519Vectors[0].secret_key));
  ASSERT_THAT(key, IsOk());
  const absl::StatusOr<std::string> pem = key->ToPem();
  ASSERT_THAT(pem, IsOk());
  EXPECT_EQ(*pem, kTest1Pem);
}

TEST(Ed25519Test, FromPemReadsPkcs8) {
  const absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::FromPem(kTest1Pem);
  ASSERT_THAT(key, IsOk());
  EXPECT_EQ(Hex(key->PublicKey()), kEd25519Vectors[0].public_key);
  const absl::StatusOr<std::string> signature = key->Sign("");
  ASSERT_THAT(signature, IsOk());
  EXPECT_EQ(Hex(*signature), kEd25519Vectors[0].signature);
}

TEST(Ed25519Test, PemRoundTripPreservesKey) {
  const absl::StatusOr<Ed25519PrivateKey> original = Ed25519PrivateKey::Generate();
  ASSERT_THAT(original, IsOk());
  const absl::StatusOr<std::string> pem = original->ToPem();
  ASSERT_THAT(pem, IsOk());
  EXPECT_THAT(*pem, StartsWith("-----BEGIN PRIVATE KEY-----\n"));

  const absl::StatusOr<Ed25519PrivateKey> restored = Ed25519PrivateKey::FromPem(*pem);
  ASSERT_THAT(restored, IsOk());
  EXPECT_EQ(restored->PublicKey(), original->PublicKey());
  // Ed25519 is deterministic, so equal private keys give equal signatures.
  const absl::StatusOr<std::string> sig_original = original->Sign("message");
  const absl::StatusOr<std::string> sig_restored = restored->Sign("message");
  ASSERT_THAT(sig_original, IsOk());
  ASSERT_THAT(sig_restored, IsOk());
  EXPECT_EQ(*sig_original, *sig_restored);
  const absl::StatusOr<std::string> pem_again = restored->ToPem();
  ASSERT_THAT(pem_again, IsOk());
  EXPECT_EQ(*pem_again, *pem);
}

TEST(Ed25519Test, FromPemRejectsGarbage) {
  for (absl::string_view bad :
       {"", "not a pem", "-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v\n-----END PRIVATE KEY-----\n"}) {
    EXPECT_THAT(Ed25519PrivateKey::FromPem(bad), StatusIs(absl::StatusCode::kInvalidArgument))
        << bad;
  }
}

TEST(Ed25519Test, FromPemRejectsOtherKeyTypes) {
  constexpr char kX25519Pem[] =
      "-----BEGIN PRIVATE KEY-----\n"
      "MC4CAQAwBQYDK2VuBCIEIIiXOU0GbIluEn8699xbjIXJPEC54DSdCy7Udg1q2MRT\n"
      "-----END PRIVATE KEY-----\n";
  EXPECT_THAT(Ed25519PrivateKey::FromPem(kX25519Pem),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an Ed25519")));
}

TEST(Ed25519Test, FromPemRejectsPublicKey) {
  constexpr char kPublicPem[] =
      "-----BEGIN PUBLIC KEY-----\n"
      "MCowBQYDK2VwAyEAfLBXQlGkZADHveLIWPAA5nR/kKTFaynJeMgZHnE/Ez8=\n"
      "-----END PUBLIC KEY-----\n";
  EXPECT_THAT(Ed25519PrivateKey::FromPem(kPublicPem), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Ed25519Test, FromPemRejectsEncryptedKeyWithoutPrompting) {
  // `openssl pkcs8 -topk8 -v2 aes-256-cbc` of an Ed25519 key; no passphrase is supplied.
  constexpr char kEncryptedPem[] =
      "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
      "MIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAis9ttmqnTZQgICCAAw\n"
      "DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEIkqQdR53b0CnKL06G75l40EQCuD\n"
      "CngY51ZLKGM6x8hslLcEF+AdypG6izs3/zHGjmjhcKv/a90IwKj08mWoEXczH6Ku\n"
      "TOyPfEdgA0PTkAWy4Gw=\n"
      "-----END ENCRYPTED PRIVATE KEY-----\n";
  EXPECT_THAT(Ed25519PrivateKey::FromPem(kEncryptedPem),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Ed25519Test, IsMovableButNotCopyable) {
  static_assert(!std::is_copy_constructible_v<Ed25519PrivateKey>);
  static_assert(!std::is_copy_assignable_v<Ed25519PrivateKey>);
  static_assert(std::is_nothrow_move_constructible_v<Ed25519PrivateKey>);
  static_assert(std::is_nothrow_move_assignable_v<Ed25519PrivateKey>);

  absl::StatusOr<Ed25519PrivateKey> key =
      Ed25519PrivateKey::FromSeed(Unhex(kEd25519Vectors[0].secret_key));
  ASSERT_THAT(key, IsOk());
  Ed25519PrivateKey moved = *std::move(key);
  EXPECT_EQ(Hex(moved.PublicKey()), kEd25519Vectors[0].public_key);
  const absl::StatusOr<std::string> signature = moved.Sign("");
  ASSERT_THAT(signature, IsOk());
  EXPECT_EQ(Hex(*signature), kEd25519Vectors[0].signature);
}

TEST(Ed25519Test, MovedFromKeyIsEmpty) {
  absl::StatusOr<Ed25519PrivateKey> key = Ed25519PrivateKey::Generate();
  ASSERT_THAT(key, IsOk());
  Ed25519PrivateKey source = *std::move(key);
  Ed25519PrivateKey destination = std::move(source);
  // Use after move is the behaviour under test.
  EXPECT_THAT(source.PublicKey(), IsEmpty());  // NOLINT(bugprone-use-after-move)
  EXPECT_THAT(source.Sign("m"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(source.ToPem(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(destination.Sign("m"), IsOk());
}

}  // namespace
}  // namespace tidepool::crypto
