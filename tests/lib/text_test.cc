#include "lib/text.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace tidepool {
namespace {

using ::testing::MatchesRegex;
using ::tidepool::testing::IsOk;

TEST(TextTest, Base32MatchesRfc4648VectorsInLowerCaseWithoutPadding) {
  EXPECT_EQ(Base32Lower(""), "");
  EXPECT_EQ(Base32Lower("f"), "my");
  EXPECT_EQ(Base32Lower("fo"), "mzxq");
  EXPECT_EQ(Base32Lower("foo"), "mzxw6");
  EXPECT_EQ(Base32Lower("foob"), "mzxw6yq");
  EXPECT_EQ(Base32Lower("fooba"), "mzxw6ytb");
  EXPECT_EQ(Base32Lower("foobar"), "mzxw6ytboi");
  EXPECT_TRUE(IsBase32Lower("mzxw6ytboi"));
  EXPECT_FALSE(IsBase32Lower("MZXW"));
  EXPECT_FALSE(IsBase32Lower("abc1"));
  EXPECT_FALSE(IsBase32Lower("ab-c"));
}

TEST(TextTest, RandomIdsHaveThePrefixAndLength) {
  absl::StatusOr<std::string> a = NewRandomId("u_");
  absl::StatusOr<std::string> b = NewRandomId("u_");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_THAT(*a, MatchesRegex("u_[a-z2-7]{26}"));
  EXPECT_NE(*a, *b);
  EXPECT_THAT(*NewRandomId("tpr_", 32), MatchesRegex("tpr_[a-z2-7]{52}"));
}

TEST(TextTest, Utf8IsStrictAndCleanMeansNoControlCharacters) {
  std::vector<char32_t> cps;
  ASSERT_TRUE(DecodeUtf8("aé🌊", &cps));
  EXPECT_EQ(cps, (std::vector<char32_t>{U'a', U'é', U'🌊'}));
  for (const char* bad : {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\xff"}) {
    EXPECT_FALSE(DecodeUtf8(bad, &cps)) << bad;
    EXPECT_FALSE(IsCleanUtf8(bad));
  }
  EXPECT_TRUE(IsCleanUtf8("Zoë 🌊"));
  for (const char* dirty : {"a\nb", "\x1b[31m", "del\x7f", "c1\xc2\x85"}) {
    EXPECT_FALSE(IsCleanUtf8(dirty)) << dirty;
  }
}

}  // namespace
}  // namespace tidepool
