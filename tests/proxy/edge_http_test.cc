#include "services/proxy/edge_http.h"

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "services/auth/jose.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::proxy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Optional;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::IsOkAndHolds;
using ::tidepool::testing::StatusIs;

// 26 characters of [a-z2-7]: a valid workspace id suffix.
constexpr absl::string_view kSuffix = "abcdefghijklmnopqrstuv2345";
constexpr absl::string_view kOtherSuffix = "zyxwvutsrqponmlkjihgfe7654";
constexpr absl::string_view kPreviewDomain = "preview.localhost";

std::string WorkspaceId(absl::string_view suffix = kSuffix) { return absl::StrCat("ws_", suffix); }

// ---------------------------------------------------------------------------------------
// Cookie names

TEST(EdgeHttpCookieNamesTest, SecureNamesCarryTheHostPrefix) {
  const CookieNames names = CookieNamesFor(true);
  EXPECT_EQ(names.session, "__Host-tidepool_session");
  EXPECT_EQ(names.refresh, "__Host-tidepool_refresh");
  EXPECT_EQ(names.csrf, "__Host-tidepool_csrf");
  EXPECT_EQ(names.signin, "__Host-tidepool_signin");
  EXPECT_EQ(names.preview, "__Host-tidepool_preview");
}

TEST(EdgeHttpCookieNamesTest, InsecureNamesHaveNoPrefix) {
  const CookieNames names = CookieNamesFor(false);
  EXPECT_EQ(names.session, "tidepool_session");
  EXPECT_EQ(names.refresh, "tidepool_refresh");
  EXPECT_EQ(names.csrf, "tidepool_csrf");
  EXPECT_EQ(names.signin, "tidepool_signin");
  EXPECT_EQ(names.preview, "tidepool_preview");
}

TEST(EdgeHttpCookieNamesTest, EveryNameTheEdgeSetsIsAPlatformCookie) {
  for (const bool secure : {true, false}) {
    const CookieNames names = CookieNamesFor(secure);
    for (const std::string& name :
         {names.session, names.refresh, names.csrf, names.signin, names.preview}) {
      EXPECT_TRUE(IsPlatformCookie(name)) << name;
    }
  }
}

TEST(EdgeHttpIsPlatformCookieTest, RecognizesBothFormsAndNothingElse) {
  EXPECT_TRUE(IsPlatformCookie("tidepool_session"));
  EXPECT_TRUE(IsPlatformCookie("__Host-tidepool_session"));
  EXPECT_TRUE(IsPlatformCookie("tidepool_whatever"));
  EXPECT_TRUE(IsPlatformCookie("__Host-tidepool_preview"));

  EXPECT_FALSE(IsPlatformCookie(""));
  EXPECT_FALSE(IsPlatformCookie("__Host-"));
  EXPECT_FALSE(IsPlatformCookie("session"));
  EXPECT_FALSE(IsPlatformCookie("__Host-session"));
  EXPECT_FALSE(IsPlatformCookie("my_tidepool_session"));
  EXPECT_FALSE(IsPlatformCookie("tidepool"));
  EXPECT_FALSE(IsPlatformCookie("xtidepool_session"));
}

// ---------------------------------------------------------------------------------------
// ParseCookies

TEST(EdgeHttpParseCookiesTest, ParsesNamesAndValues) {
  EXPECT_THAT(ParseCookies("a=1; b=2"), UnorderedElementsAre(Pair("a", "1"), Pair("b", "2")));
  EXPECT_THAT(ParseCookies("a=1;b=2"), UnorderedElementsAre(Pair("a", "1"), Pair("b", "2")));
  EXPECT_THAT(ParseCookies(""), IsEmpty());
  EXPECT_THAT(ParseCookies(";;; ;"), IsEmpty());
}

TEST(EdgeHttpParseCookiesTest, TrimsWhitespaceAroundNamesAndValues) {
  EXPECT_THAT(ParseCookies("  a = 1 ;\tb=2  ; c =3"),
              UnorderedElementsAre(Pair("a", "1"), Pair("b", "2"), Pair("c", "3")));
}

TEST(EdgeHttpParseCookiesTest, UnquotesQuotedValues) {
  EXPECT_THAT(ParseCookies("a=\"x y\""), ElementsAre(Pair("a", "x y")));
  EXPECT_THAT(ParseCookies("a=\"\""), ElementsAre(Pair("a", "")));
  // A lone quote is not a quoted value.
  EXPECT_THAT(ParseCookies("a=\""), ElementsAre(Pair("a", "\"")));
}

TEST(EdgeHttpParseCookiesTest, KeepsEmptyValuesAndEqualsSignsInValues) {
  EXPECT_THAT(ParseCookies("a=; b=x=y"), UnorderedElementsAre(Pair("a", ""), Pair("b", "x=y")));
}

TEST(EdgeHttpParseCookiesTest, SkipsPartsWithoutANameOrEqualsSign) {
  EXPECT_THAT(ParseCookies("flag; a=1; =nameless; tidepool_session"), ElementsAre(Pair("a", "1")));
}

TEST(EdgeHttpParseCookiesTest, DuplicatesAreDroppedSoATossedCookieNeverWins) {
  // The attacker's tossed cookie may come first or last; neither copy is used.
  EXPECT_THAT(ParseCookies("tidepool_session=attacker; tidepool_session=real"), IsEmpty());
  EXPECT_THAT(ParseCookies("tidepool_session=real; tidepool_session=attacker"), IsEmpty());
  EXPECT_THAT(ParseCookies("a=1; b=2; a=3"), ElementsAre(Pair("b", "2")));
  EXPECT_THAT(ParseCookies("a=1; a=2; a=3"), IsEmpty());
  // Same value twice is still a duplicate.
  EXPECT_THAT(ParseCookies("a=1; a=1"), IsEmpty());
  // Whitespace and quotes do not make a different name.
  EXPECT_THAT(ParseCookies("a=1; a =2"), IsEmpty());
  EXPECT_THAT(ParseCookies("a=1;  a=\"1\""), IsEmpty());
  // A duplicate whose value is empty still removes the name.
  EXPECT_THAT(ParseCookies("__Host-tidepool_csrf=x; __Host-tidepool_csrf="), IsEmpty());
}

TEST(EdgeHttpParseCookiesTest, NamesAreCaseSensitive) {
  EXPECT_THAT(ParseCookies("a=1; A=2"), UnorderedElementsAre(Pair("a", "1"), Pair("A", "2")));
}

// ---------------------------------------------------------------------------------------
// StripPlatformCookies

TEST(EdgeHttpStripPlatformCookiesTest, RemovesBothFormsAndKeepsOthersInOrder) {
  EXPECT_EQ(StripPlatformCookies("z=1; tidepool_session=s; b=2; __Host-tidepool_csrf=c; "
                                 "a=3; __Host-tidepool_preview=p; tidepool_refresh=r"),
            "z=1; b=2; a=3");
}

TEST(EdgeHttpStripPlatformCookiesTest, EmptyWhenOnlyPlatformCookies) {
  EXPECT_EQ(StripPlatformCookies("tidepool_session=s; __Host-tidepool_session=t"), "");
  EXPECT_EQ(StripPlatformCookies(""), "");
  EXPECT_EQ(StripPlatformCookies(" ; ;"), "");
}

TEST(EdgeHttpStripPlatformCookiesTest, RemovesPlatformCookiesDespiteWhitespaceAndDuplicates) {
  const std::string stripped = StripPlatformCookies(
      "  tidepool_session = s ;a=1;\t__Host-tidepool_session=x; __Host-tidepool_session=y ");
  EXPECT_EQ(stripped, "a=1");
}

TEST(EdgeHttpStripPlatformCookiesTest, NormalizesSeparatorsOfKeptCookies) {
  EXPECT_EQ(StripPlatformCookies("  a=1 ;b=2;;  c=\"q v\"  "), "a=1; b=2; c=\"q v\"");
}

TEST(EdgeHttpStripPlatformCookiesTest, KeepsLookalikes) {
  EXPECT_EQ(StripPlatformCookies("my_tidepool_session=1; __Host-session=2; tidepool=3"),
            "my_tidepool_session=1; __Host-session=2; tidepool=3");
}

TEST(EdgeHttpStripPlatformCookiesTest, NeverForwardsAPlatformNameWithoutEqualsSign) {
  const std::string stripped = StripPlatformCookies("tidepool_session; a=1; __Host-tidepool_csrf");
  EXPECT_THAT(stripped, Not(HasSubstr("tidepool_")));
  EXPECT_THAT(stripped, HasSubstr("a=1"));
}

TEST(EdgeHttpStripPlatformCookiesTest, KeepsDuplicatesOfNonPlatformCookies) {
  // The workspace decides for itself what to do with its own duplicates.
  EXPECT_EQ(StripPlatformCookies("a=1; a=2"), "a=1; a=2");
}

// ---------------------------------------------------------------------------------------
// SetCookieValue

TEST(EdgeHttpSetCookieValueTest, AllAttributes) {
  EXPECT_EQ(SetCookieValue("__Host-tidepool_session", "tok", absl::Hours(1), /*secure=*/true,
                           /*http_only=*/true, "Strict"),
            "__Host-tidepool_session=tok; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Strict");
}

TEST(EdgeHttpSetCookieValueTest, DefaultsToLaxAndOmitsUnsetFlags) {
  EXPECT_EQ(SetCookieValue("tidepool_csrf", "v", absl::Minutes(1), /*secure=*/false,
                           /*http_only=*/false),
            "tidepool_csrf=v; Path=/; Max-Age=60; SameSite=Lax");
}

TEST(EdgeHttpSetCookieValueTest, ZeroOrNegativeMaxAgeDeletes) {
  EXPECT_THAT(SetCookieValue("a", "", absl::ZeroDuration(), true, true), HasSubstr("; Max-Age=0;"));
  EXPECT_THAT(SetCookieValue("a", "", absl::Seconds(-5), true, true), HasSubstr("; Max-Age=0;"));
}

TEST(EdgeHttpSetCookieValueTest, HostPrefixedCookiesMeetTheBrowserRules) {
  // __Host- cookies are only stored when Secure, Path=/ and without Domain.
  const CookieNames names = CookieNamesFor(true);
  const std::string cookie =
      SetCookieValue(names.preview, "x", absl::Minutes(5), /*secure=*/true, /*http_only=*/true);
  EXPECT_THAT(cookie, HasSubstr("; Secure"));
  EXPECT_THAT(cookie, HasSubstr("; Path=/;"));
  EXPECT_THAT(cookie, HasSubstr("; HttpOnly"));
  EXPECT_THAT(cookie, Not(HasSubstr("Domain")));
}

// ---------------------------------------------------------------------------------------
// IsCanonicalPath

TEST(EdgeHttpIsCanonicalPathTest, AcceptsCanonicalPaths) {
  for (const absl::string_view path : {"/",
                                       "/a",
                                       "/a/",
                                       "/w/alice/",
                                       "/w/alice/files/readme.md",
                                       "/a.b",
                                       "/..a",
                                       "/a..",
                                       "/...",
                                       "/.well-known/x",
                                       "/a-b_c~d",
                                       "/a%20b",
                                       "/a%4a",
                                       "/a%4A",
                                       "/%41",
                                       "/a%41",
                                       "/a%3F",
                                       "/a%7E",
                                       "/api/v1/workspaces:list",
                                       "/a=b&c",
                                       "/a@b",
                                       "/a+b"}) {
    EXPECT_TRUE(IsCanonicalPath(path)) << path;
  }
}

TEST(EdgeHttpIsCanonicalPathTest, RefusesEmptyAndRelativePaths) {
  for (const absl::string_view path : {"", "a", "a/b", "*", "http://h/", "%2f", " /a"}) {
    EXPECT_FALSE(IsCanonicalPath(path)) << path;
  }
}

TEST(EdgeHttpIsCanonicalPathTest, RefusesDotSegments) {
  for (const absl::string_view path :
       {"/w/alice/../bob/", "/..", "/../", "/.", "/./", "/./a", "/a/./b", "/a/.", "/a/..", "/a/../",
        "/w/alice/..", "/w/alice/./"}) {
    EXPECT_FALSE(IsCanonicalPath(path)) << path;
  }
}

TEST(EdgeHttpIsCanonicalPathTest, RefusesEmptySegments) {
  for (const absl::string_view path : {"//", "//a", "/a//b", "/a//", "///", "//evil.example/x"}) {
    EXPECT_FALSE(IsCanonicalPath(path)) << path;
  }
}

TEST(EdgeHttpIsCanonicalPathTest, RefusesEncodedDotsSlashesAndBackslashes) {
  for (const absl::string_view path :
       {"/%2e%2e/x", "/%2E%2E/x", "/w/alice/%2e%2e/bob/", "/w/alice/.%2e/bob/",
        "/w/alice/%2e./bob/", "/a/%2e/b", "/a/%2E", "/a%2eb", "/a%2fb", "/a%2Fb",
        "/w/alice%2f..%2fbob/", "/a%5cb", "/a%5Cb", "/a%5c..%5cb"}) {
    EXPECT_FALSE(IsCanonicalPath(path)) << path;
  }
}

TEST(EdgeHttpIsCanonicalPathTest, RefusesDoubleEncoding) {
  // "%25" decodes to "%": whatever follows would be decoded a second time downstream.
  for (const absl::string_view path :
       {"/%252e%252e/x", "/a%252fb", "/a%255c", "/a%2500", "/a%25", "/%25%32%65"}) {
    EXPECT_FALSE(IsCanonicalPath(path)) << path;
  }
}

TEST(EdgeHttpIsCanonicalPathTest, RefusesParametersAndBackslashes) {
  for (const absl::string_view path :
       {"/a;param", "/w/alice;x=1/", "/a/..;/b", "/;", "/a\\b", "/w/alice\\..\\bob", "\\a"}) {
    EXPECT_FALSE(IsCanonicalPath(path)) << path;
  }
}

TEST(EdgeHttpIsCanonicalPathTest, RefusesNonAsciiAndOverlongUtf8) {
  for (const absl::string_view path :
       {"/%c0%ae%c0%ae/x", "/%C0%AE", "/%c0%af", "/%e0%80%ae", "/a%80", "/a%ff", "/a%FF",
        "/caf\xc3\xa9", "/a\x80", "/a\xff", "/\xc0\xae\xc0\xae/"}) {
    EXPECT_FALSE(IsCanonicalPath(path)) << path;
  }
}

TEST(EdgeHttpIsCanonicalPathTest, RefusesNulAndControlCharacters) {
  EXPECT_FALSE(IsCanonicalPath(std::string("/a\0b", 4)));
  EXPECT_FALSE(IsCanonicalPath(std::string("/\0", 2)));
  for (const absl::string_view path :
       {"/a%00", "/a%00b", "/a%0a", "/a%0A", "/a%0d", "/a%0D", "/a%09", "/a%1f", "/a%1F", "/a%7f",
        "/a%7F", "/a b", "/a\tb", "/a\r\nb", "/a\x7f", "/a\x01"}) {
    EXPECT_FALSE(IsCanonicalPath(path)) << path;
  }
}

TEST(EdgeHttpIsCanonicalPathTest, RefusesMalformedEscapes) {
  for (const absl::string_view path : {"/%", "/a%", "/a%4", "/a/%4", "/a%zz", "/a%g0", "/a%0g",
                                       "/a%%41", "/a%-1", "/a% 1", "/a%4%"}) {
    EXPECT_FALSE(IsCanonicalPath(path)) << path;
  }
  // Exactly at the end, a complete escape is fine.
  EXPECT_TRUE(IsCanonicalPath("/a%41"));
  EXPECT_TRUE(IsCanonicalPath("/%41"));
}

// ---------------------------------------------------------------------------------------
// SplitTarget

TEST(EdgeHttpSplitTargetTest, SplitsPathAndQuery) {
  EXPECT_THAT(SplitTarget("/a/b?x=1&y=2"), IsOkAndHolds(Pair("/a/b", "x=1&y=2")));
  EXPECT_THAT(SplitTarget("/a"), IsOkAndHolds(Pair("/a", "")));
  EXPECT_THAT(SplitTarget("/"), IsOkAndHolds(Pair("/", "")));
  EXPECT_THAT(SplitTarget("/a?"), IsOkAndHolds(Pair("/a", "")));
  EXPECT_THAT(SplitTarget("/?x"), IsOkAndHolds(Pair("/", "x")));
  // Only the first "?" separates.
  EXPECT_THAT(SplitTarget("/a?b?c=/d"), IsOkAndHolds(Pair("/a", "b?c=/d")));
}

TEST(EdgeHttpSplitTargetTest, RefusesAllButOriginForm) {
  for (const absl::string_view target :
       {"", "*", "http://evil.example/a", "https://platform.example/", "HTTP://h/",
        "platform.example:443", "a/b", "?x=1", " /a", "\\a"}) {
    EXPECT_THAT(SplitTarget(target), StatusIs(absl::StatusCode::kInvalidArgument)) << target;
  }
}

TEST(EdgeHttpSplitTargetTest, AProtocolRelativeTargetIsNotCanonical) {
  // "//host/path" is origin form by its first character, but never canonical.
  absl::StatusOr<std::pair<std::string, std::string>> split = SplitTarget("//evil.example/a?x");
  if (split.ok()) {
    EXPECT_FALSE(IsCanonicalPath(split->first));
  }
}

TEST(EdgeHttpSplitTargetTest, TricksInTheQueryDoNotLeakIntoThePath) {
  absl::StatusOr<std::pair<std::string, std::string>> split = SplitTarget("/w/alice/?x=/../bob");
  ASSERT_THAT(split, IsOk());
  EXPECT_EQ(split->first, "/w/alice/");
  EXPECT_TRUE(IsCanonicalPath(split->first));
  EXPECT_EQ(split->second, "x=/../bob");
}

// ---------------------------------------------------------------------------------------
// QueryParam

TEST(EdgeHttpQueryParamTest, FindsParameters) {
  EXPECT_THAT(QueryParam("a=1&b=2", "a"), Optional(std::string("1")));
  EXPECT_THAT(QueryParam("a=1&b=2", "b"), Optional(std::string("2")));
  EXPECT_EQ(QueryParam("a=1&b=2", "c"), std::nullopt);
  EXPECT_THAT(QueryParam("a=1&&b=2", "b"), Optional(std::string("2")));
  EXPECT_THAT(QueryParam("a=b=c", "a"), Optional(std::string("b=c")));
}

TEST(EdgeHttpQueryParamTest, AbsentIsNotEmpty) {
  EXPECT_EQ(QueryParam("", "a"), std::nullopt);
  EXPECT_EQ(QueryParam("b=1", "a"), std::nullopt);
  EXPECT_THAT(QueryParam("a=", "a"), Optional(std::string("")));
  EXPECT_THAT(QueryParam("a", "a"), Optional(std::string("")));
  EXPECT_THAT(QueryParam("b=1&a", "a"), Optional(std::string("")));
}

TEST(EdgeHttpQueryParamTest, NamesMatchExactly) {
  EXPECT_EQ(QueryParam("ab=1", "a"), std::nullopt);
  EXPECT_EQ(QueryParam("a=1", "ab"), std::nullopt);
  EXPECT_EQ(QueryParam("A=1", "a"), std::nullopt);
  EXPECT_EQ(QueryParam("xa=1&ax=2", "a"), std::nullopt);
}

TEST(EdgeHttpQueryParamTest, DuplicatesAreAbsent) {
  EXPECT_EQ(QueryParam("a=1&a=2", "a"), std::nullopt);
  EXPECT_EQ(QueryParam("a=1&a=1", "a"), std::nullopt);
  EXPECT_EQ(QueryParam("a=1&b=2&a=", "a"), std::nullopt);
  EXPECT_EQ(QueryParam("a&a=1", "a"), std::nullopt);
  EXPECT_EQ(QueryParam("a=1&a=2&a=3", "a"), std::nullopt);
  // The other parameters are unaffected.
  EXPECT_THAT(QueryParam("a=1&b=2&a=3", "b"), Optional(std::string("2")));
}

TEST(EdgeHttpQueryParamTest, DecodesPlusAndPercentEscapes) {
  EXPECT_THAT(QueryParam("a=x+y", "a"), Optional(std::string("x y")));
  EXPECT_THAT(QueryParam("a=x%2By", "a"), Optional(std::string("x+y")));
  EXPECT_THAT(QueryParam("a=x%2by", "a"), Optional(std::string("x+y")));
  EXPECT_THAT(QueryParam("a=%41%62", "a"), Optional(std::string("Ab")));
  EXPECT_THAT(QueryParam("a=%4a%4A", "a"), Optional(std::string("JJ")));
  EXPECT_THAT(QueryParam("a=%2Fw%2Falice%2F", "a"), Optional(std::string("/w/alice/")));
  EXPECT_THAT(QueryParam("a=%26b%3D1", "a"), Optional(std::string("&b=1")));
  EXPECT_EQ(QueryParam("a=%26b%3D1", "b"), std::nullopt);
  // A value ending in a complete escape.
  EXPECT_THAT(QueryParam("a=x%41", "a"), Optional(std::string("xA")));
  // Decoded once only.
  EXPECT_THAT(QueryParam("a=%2541", "a"), Optional(std::string("%41")));
}

TEST(EdgeHttpQueryParamTest, MalformedEscapesDoNotReadPastTheValue) {
  // Whatever these decode to, they must not consume the next parameter or crash.
  for (const absl::string_view query : {"a=%", "a=%4", "a=%&b=2", "a=%4&b=2", "a=%zz&b=2"}) {
    std::optional<std::string> a = QueryParam(query, "a");
    ASSERT_TRUE(a.has_value()) << query;
    EXPECT_THAT(*a, Not(HasSubstr("b"))) << query;
  }
  EXPECT_THAT(QueryParam("a=%4&b=2", "b"), Optional(std::string("2")));
  EXPECT_THAT(QueryParam("a=100%", "a"), Optional(std::string("100%")));
}

TEST(EdgeHttpQueryParamTest, RoundTripsWithUrlEncode) {
  for (const std::string& value :
       {std::string("plain"), std::string("a b+c&d=e/f?g#h%i"), std::string("%41%2e%2e"),
        std::string("\xc3\xa9\xff"), std::string("line\nbreak"), std::string("nul\0x", 5),
        std::string("/preview-auth?host=8000-x.preview.localhost&path=/a b"), std::string()}) {
    EXPECT_THAT(QueryParam(absl::StrCat("k=", UrlEncode(value), "&z=1"), "k"), Optional(value))
        << value;
  }
}

// ---------------------------------------------------------------------------------------
// UrlEncode

TEST(EdgeHttpUrlEncodeTest, KeepsUnreservedCharacters) {
  EXPECT_EQ(UrlEncode("AZaz09-_.~"), "AZaz09-_.~");
  EXPECT_EQ(UrlEncode(""), "");
}

TEST(EdgeHttpUrlEncodeTest, EncodesEverythingElseInUpperCaseHex) {
  EXPECT_EQ(UrlEncode(" "), "%20");
  EXPECT_EQ(UrlEncode("/?#[]@!$&'()*+,;=%"),
            "%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D%25");
  EXPECT_EQ(UrlEncode("\\\"<>"), "%5C%22%3C%3E");
  EXPECT_EQ(UrlEncode("\xc3\xa9"), "%C3%A9");
  EXPECT_EQ(UrlEncode("\xff"), "%FF");
  EXPECT_EQ(UrlEncode(std::string("\0\n\r", 3)), "%00%0A%0D");
  EXPECT_EQ(UrlEncode("/preview-auth?x=1"), "%2Fpreview-auth%3Fx%3D1");
}

// ---------------------------------------------------------------------------------------
// NormalizeHost

TEST(EdgeHttpNormalizeHostTest, LowerCasesPlausibleHosts) {
  EXPECT_THAT(NormalizeHost("Platform.Example"), Optional(std::string("platform.example")));
  EXPECT_THAT(NormalizeHost("EXAMPLE.COM:8443"), Optional(std::string("example.com:8443")));
  EXPECT_THAT(NormalizeHost("localhost"), Optional(std::string("localhost")));
  EXPECT_THAT(NormalizeHost("127.0.0.1:8080"), Optional(std::string("127.0.0.1:8080")));
  EXPECT_THAT(NormalizeHost("my_host-1.example"), Optional(std::string("my_host-1.example")));
  EXPECT_THAT(NormalizeHost("h:1"), Optional(std::string("h:1")));
  EXPECT_THAT(NormalizeHost("h:65535"), Optional(std::string("h:65535")));
  EXPECT_THAT(
      NormalizeHost(absl::StrCat("8000-", "ABCDEFGHIJKLMNOPQRSTUV2345", ".Preview.Localhost")),
      Optional(absl::StrCat("8000-", kSuffix, ".preview.localhost")));
}

TEST(EdgeHttpNormalizeHostTest, AcceptsBracketedIpv6Literals) {
  EXPECT_THAT(NormalizeHost("[::1]"), Optional(std::string("[::1]")));
  EXPECT_THAT(NormalizeHost("[::1]:8080"), Optional(std::string("[::1]:8080")));
  EXPECT_THAT(NormalizeHost("[2001:DB8::1]"), Optional(std::string("[2001:db8::1]")));
  EXPECT_THAT(NormalizeHost("[::ffff:127.0.0.1]:443"),
              Optional(std::string("[::ffff:127.0.0.1]:443")));
}

TEST(EdgeHttpNormalizeHostTest, RefusesMalformedIpv6Literals) {
  for (const absl::string_view host :
       {"[::1", "[::1]x", "[::1]]", "[::1]:", "[::1]:0", "[::1]:65536", "[zz::1]", "[::1%eth0]",
        "[fe80::1%25eth0]", "[::1/128]", "[::1]:80:80", "::1", "[[::1]]", "[::1] "}) {
    EXPECT_EQ(NormalizeHost(host), std::nullopt) << host;
  }
}

TEST(EdgeHttpNormalizeHostTest, RefusesBadCharacters) {
  for (const absl::string_view host :
       {"", "a b", "a/b", "a@b", "user@platform.example", "a\\b", "a?b", "a#b", "a%2eb", "a,b",
        "a\r\nb", "a\tb", "h\xc3\xa9.example", "platform.example/evil", "*.example", "a;b", "a\"b",
        "a<b"}) {
    EXPECT_EQ(NormalizeHost(host), std::nullopt) << host;
  }
  EXPECT_EQ(NormalizeHost(std::string("a\0b", 3)), std::nullopt);
}

TEST(EdgeHttpNormalizeHostTest, RefusesPortsOutOfRangeOrMalformed) {
  for (const absl::string_view host : {"h:0", "h:65536", "h:99999", "h:100000", "h:-1", "h:",
                                       "h:abc", "h:80:80", ":80", ":", "h:8o", "h:1e3", "h:0x50"}) {
    EXPECT_EQ(NormalizeHost(host), std::nullopt) << host;
  }
}

TEST(EdgeHttpNormalizeHostTest, RefusesPortsThatAreNotJustDigits) {
  // absl::SimpleAtoi alone would accept a sign and surrounding whitespace.
  for (const absl::string_view host : {"h:+80", "h: 80", "h:80 ", "h:\t80", "h:+8080"}) {
    EXPECT_EQ(NormalizeHost(host), std::nullopt) << "\"" << host << "\"";
  }
}

TEST(EdgeHttpNormalizeHostTest, RefusesOverlongHosts) {
  EXPECT_EQ(NormalizeHost(std::string(300, 'a')), std::nullopt);
}

// ---------------------------------------------------------------------------------------
// IsValidWorkspaceId

TEST(EdgeHttpIsValidWorkspaceIdTest, AcceptsWsAnd26Base32Characters) {
  EXPECT_TRUE(IsValidWorkspaceId(WorkspaceId()));
  EXPECT_TRUE(IsValidWorkspaceId(WorkspaceId(kOtherSuffix)));
  EXPECT_TRUE(IsValidWorkspaceId("ws_" + std::string(26, 'a')));
  EXPECT_TRUE(IsValidWorkspaceId("ws_" + std::string(26, '7')));
}

TEST(EdgeHttpIsValidWorkspaceIdTest, RefusesEverythingElse) {
  const std::string s(kSuffix);
  for (const std::string& id : {std::string(),
                                std::string("ws_"),
                                s,
                                "ws_" + s.substr(1),
                                "ws_" + s + "a",
                                "WS_" + s,
                                "ws-" + s,
                                "wsx" + s,
                                "u_" + s,
                                "ws_ws_" + s.substr(3),
                                "ws_" + std::string("ABCDEFGHIJKLMNOPQRSTUV2345"),
                                "ws_" + s.substr(1) + "0",
                                "ws_" + s.substr(1) + "1",
                                "ws_" + s.substr(1) + "8",
                                "ws_" + s.substr(1) + "9",
                                "ws_" + s.substr(1) + "_",
                                "ws_" + s.substr(1) + "-",
                                "ws_" + s.substr(1) + ".",
                                " ws_" + s,
                                "ws_" + s + "\n",
                                "ws_" + s.substr(1) + std::string(1, '\0')}) {
    EXPECT_FALSE(IsValidWorkspaceId(id)) << id;
  }
}

// ---------------------------------------------------------------------------------------
// ParsePreviewHost / PreviewHostFor

TEST(EdgeHttpPreviewHostTest, ParsesAPreviewHost) {
  std::optional<PreviewTarget> target =
      ParsePreviewHost(absl::StrCat("8000-", kSuffix, ".preview.localhost"), kPreviewDomain);
  ASSERT_TRUE(target.has_value());
  EXPECT_EQ(target->port, 8000);
  EXPECT_EQ(target->workspace_id, WorkspaceId());
}

TEST(EdgeHttpPreviewHostTest, AcceptsTheWholePortRange) {
  for (const int port : {1, 80, 1024, 8000, 65535}) {
    std::optional<PreviewTarget> target =
        ParsePreviewHost(absl::StrCat(port, "-", kSuffix, ".preview.localhost"), kPreviewDomain);
    ASSERT_TRUE(target.has_value()) << port;
    EXPECT_EQ(target->port, port);
  }
}

TEST(EdgeHttpPreviewHostTest, RefusesBadPorts) {
  for (const absl::string_view port :
       {"0", "65536", "99999", "123456", "08000", "00080", "0080", "x8000", "8000x", "+800",
        "-8000", " 800", "8o00", "", "1e3", "0x50"}) {
    const std::string host = absl::StrCat(port, "-", kSuffix, ".preview.localhost");
    EXPECT_EQ(ParsePreviewHost(host, kPreviewDomain), std::nullopt) << host;
  }
}

TEST(EdgeHttpPreviewHostTest, RefusesNearMissDomains) {
  const std::string label = absl::StrCat("8000-", kSuffix);
  for (const std::string& host :
       {label + ".preview.localhost.evil.example", label + ".evilpreview.localhost",
        label + "preview.localhost", label + ".preview.localhost.", label + ".preview.localhos",
        label + ".xpreview.localhost", label + ".preview-localhost", label + "..preview.localhost",
        label + ".localhost", "a." + label + ".preview.localhost",
        label + "." + label + ".preview.localhost", std::string("preview.localhost"),
        std::string(".preview.localhost"), label, std::string()}) {
    EXPECT_EQ(ParsePreviewHost(host, kPreviewDomain), std::nullopt) << host;
  }
}

TEST(EdgeHttpPreviewHostTest, RefusesBadWorkspaceLabels) {
  const std::string s(kSuffix);
  for (const std::string& label :
       {"8000-" + s + "x", "8000-" + s.substr(1), "8000-" + s + "a", "8000-ws_" + s,
        "8000-ws_" + s.substr(3), std::string("8000-"), "8000" + s, "8000_" + s,
        "8000--" + s.substr(1), "8000-" + s.substr(1) + "-", "8000-" + s.substr(1) + "0",
        "8000-" + s.substr(1) + "1", "8000-" + s.substr(1) + "8", "8000-" + s.substr(1) + "_",
        "-" + s, std::string("8000-ABCDEFGHIJKLMNOPQRSTUV2345"), "8000-" + s + "-8000"}) {
    const std::string host = label + ".preview.localhost";
    EXPECT_EQ(ParsePreviewHost(host, kPreviewDomain), std::nullopt) << host;
  }
}

TEST(EdgeHttpPreviewHostTest, UpperCaseIdParsesOnceNormalized) {
  const std::string raw = "8000-ABCDEFGHIJKLMNOPQRSTUV2345.PREVIEW.localhost";
  std::optional<std::string> normalized = NormalizeHost(raw);
  ASSERT_TRUE(normalized.has_value());
  std::optional<PreviewTarget> target = ParsePreviewHost(*normalized, kPreviewDomain);
  ASSERT_TRUE(target.has_value());
  EXPECT_EQ(target->port, 8000);
  EXPECT_EQ(target->workspace_id, WorkspaceId());
}

TEST(EdgeHttpPreviewHostTest, EmptyPreviewDomainMatchesNothing) {
  EXPECT_EQ(ParsePreviewHost(absl::StrCat("8000-", kSuffix), ""), std::nullopt);
  EXPECT_EQ(ParsePreviewHost(absl::StrCat("8000-", kSuffix, "."), ""), std::nullopt);
}

TEST(EdgeHttpPreviewHostTest, PreviewDomainWithPort) {
  const std::string domain = "preview.localhost:8443";
  std::optional<PreviewTarget> target =
      ParsePreviewHost(absl::StrCat("3000-", kSuffix, ".preview.localhost:8443"), domain);
  ASSERT_TRUE(target.has_value());
  EXPECT_EQ(target->port, 3000);
  EXPECT_EQ(target->workspace_id, WorkspaceId());

  for (const std::string& host : {absl::StrCat("3000-", kSuffix, ".preview.localhost"),
                                  absl::StrCat("3000-", kSuffix, ".preview.localhost:9443"),
                                  absl::StrCat("3000-", kSuffix, ".preview.localhost:84430"),
                                  absl::StrCat("3000-", kSuffix, ".evil.localhost:8443")}) {
    EXPECT_EQ(ParsePreviewHost(host, domain), std::nullopt) << host;
  }
}

TEST(EdgeHttpPreviewHostTest, PreviewHostForRoundTrips) {
  EXPECT_EQ(PreviewHostFor(8000, WorkspaceId(), kPreviewDomain),
            absl::StrCat("8000-", kSuffix, ".preview.localhost"));
  for (const int port : {1, 3000, 65535}) {
    for (const absl::string_view domain :
         {"preview.localhost", "preview.localhost:8443", "p.platform.example"}) {
      const std::string host = PreviewHostFor(port, WorkspaceId(kOtherSuffix), domain);
      EXPECT_THAT(NormalizeHost(host), Optional(host));
      std::optional<PreviewTarget> target = ParsePreviewHost(host, domain);
      ASSERT_TRUE(target.has_value()) << host;
      EXPECT_EQ(target->port, port);
      EXPECT_EQ(target->workspace_id, WorkspaceId(kOtherSuffix));
    }
  }
}

// ---------------------------------------------------------------------------------------
// SignEdgeValue / VerifyEdgeValue

class EdgeHttpSignedValueTest : public ::testing::Test {
 protected:
  const std::string key_ = std::string(32, 'k');
  const std::string other_key_ = std::string(32, 'K');
  const absl::Time now_ = absl::FromUnixSeconds(1900000000);
  const absl::Time expires_ = now_ + absl::Seconds(60);

  // A value whose payload (before base64url) is `payload`, correctly MACed under `key_`.
  std::string SignRaw(absl::string_view payload) const {
    return absl::StrCat(auth::jose::Base64UrlEncode(payload), ".",
                        auth::jose::Base64UrlEncode(crypto::HmacSha256(key_, payload)));
  }
};

TEST_F(EdgeHttpSignedValueTest, RoundTripsFieldsWithSpacesColonsAndEmpties) {
  const std::vector<std::string> fields = {
      "8000-x.preview.localhost:8443", "user one", "s:1:2", "", "a=b; c=d", "\xc3\xa9"};
  const std::string value = SignEdgeValue(key_, "ticket", fields, expires_);
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, fields.size(), now_), IsOkAndHolds(fields));
}

TEST_F(EdgeHttpSignedValueTest, ValueIsTwoBase64UrlPartsJoinedByADot) {
  const std::string value = SignEdgeValue(key_, "preview", {"a", "b"}, expires_);
  const std::vector<std::string> parts = absl::StrSplit(value, '.');
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_THAT(auth::jose::Base64UrlDecode(parts[0]),
              IsOkAndHolds(absl::StrCat("preview\na\nb\n", absl::ToUnixSeconds(expires_))));
  EXPECT_THAT(value, Not(HasSubstr("=")));
  EXPECT_THAT(value, Not(HasSubstr("+")));
  EXPECT_THAT(value, Not(HasSubstr("/")));
}

TEST_F(EdgeHttpSignedValueTest, OneFieldRoundTrips) {
  const std::string value = SignEdgeValue(key_, "preview", {"only"}, expires_);
  EXPECT_THAT(VerifyEdgeValue(key_, "preview", value, 1, now_), IsOkAndHolds(ElementsAre("only")));
}

TEST_F(EdgeHttpSignedValueTest, NoFieldsRoundTrips) {
  // A zero-field value and a one-empty-field value must be different values.
  const std::string value = SignEdgeValue(key_, "preview", {}, expires_);
  EXPECT_THAT(VerifyEdgeValue(key_, "preview", value, 0, now_), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(VerifyEdgeValue(key_, "preview", value, 1, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(EdgeHttpSignedValueTest, RefusesWrongKey) {
  const std::string value = SignEdgeValue(key_, "ticket", {"a", "b"}, expires_);
  EXPECT_THAT(VerifyEdgeValue(other_key_, "ticket", value, 2, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(VerifyEdgeValue("", "ticket", value, 2, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(EdgeHttpSignedValueTest, RefusesWrongPurpose) {
  const std::string ticket = SignEdgeValue(key_, "ticket", {"a", "b"}, expires_);
  EXPECT_THAT(VerifyEdgeValue(key_, "preview", ticket, 2, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(VerifyEdgeValue(key_, "Ticket", ticket, 2, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(VerifyEdgeValue(key_, "", ticket, 2, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
  // A purpose cannot be smuggled in through the fields either.
  const std::string shifted = SignEdgeValue(key_, "x", {"ticket", "a"}, expires_);
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", shifted, 1, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(EdgeHttpSignedValueTest, RefusesWrongFieldCount) {
  const std::string value = SignEdgeValue(key_, "ticket", {"a", "b", "c"}, expires_);
  for (const size_t count : {0u, 1u, 2u, 4u, 5u}) {
    EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, count, now_),
                StatusIs(absl::StatusCode::kUnauthenticated))
        << count;
  }
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, 3, now_), IsOk());
}

TEST_F(EdgeHttpSignedValueTest, RefusesAtAndAfterExpiry) {
  const std::string value = SignEdgeValue(key_, "ticket", {"a"}, expires_);
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, 1, expires_ - absl::Nanoseconds(1)), IsOk());
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, 1, expires_),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, 1, expires_ + absl::Seconds(1)),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, 1, absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(EdgeHttpSignedValueTest, NeverAcceptedPastASubSecondExpiry) {
  const absl::Time expires = now_ + absl::Milliseconds(1500);
  const std::string value = SignEdgeValue(key_, "ticket", {"a"}, expires);
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, 1, expires),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, 1, expires + absl::Milliseconds(200)),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(EdgeHttpSignedValueTest, RefusesAnAlreadyExpiredValue) {
  const std::string value = SignEdgeValue(key_, "ticket", {"a"}, now_ - absl::Seconds(1));
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value, 1, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(EdgeHttpSignedValueTest, RefusesATamperedPayload) {
  const std::string value = SignEdgeValue(key_, "ticket", {"alice", "s1"}, expires_);
  const size_t dot = value.find('.');
  ASSERT_NE(dot, std::string::npos);
  const std::string mac = value.substr(dot + 1);
  const std::string later = absl::StrCat(absl::ToUnixSeconds(expires_ + absl::Hours(24)));
  for (const std::string& payload :
       {absl::StrCat("ticket\nbob\ns1\n", absl::ToUnixSeconds(expires_)),
        absl::StrCat("ticket\nalice\ns1\n", later),
        absl::StrCat("preview\nalice\ns1\n", absl::ToUnixSeconds(expires_)),
        absl::StrCat("ticket\nalice\ns1\n", absl::ToUnixSeconds(expires_), "\n")}) {
    const std::string forged = absl::StrCat(auth::jose::Base64UrlEncode(payload), ".", mac);
    EXPECT_THAT(VerifyEdgeValue(key_, "ticket", forged, 2, now_),
                StatusIs(absl::StatusCode::kUnauthenticated))
        << payload;
  }
}

TEST_F(EdgeHttpSignedValueTest, RefusesATamperedMac) {
  const std::string value = SignEdgeValue(key_, "ticket", {"a"}, expires_);
  const size_t dot = value.find('.');
  ASSERT_NE(dot, std::string::npos);
  absl::StatusOr<std::string> mac = auth::jose::Base64UrlDecode(value.substr(dot + 1));
  ASSERT_THAT(mac, IsOk());
  for (size_t i = 0; i < mac->size(); i += 7) {
    std::string flipped = *mac;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x01);
    const std::string forged =
        absl::StrCat(value.substr(0, dot), ".", auth::jose::Base64UrlEncode(flipped));
    EXPECT_THAT(VerifyEdgeValue(key_, "ticket", forged, 1, now_),
                StatusIs(absl::StatusCode::kUnauthenticated))
        << i;
  }
  // A truncated or empty MAC.
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value.substr(0, value.size() - 4), 1, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", value.substr(0, dot + 1), 1, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
  // The MAC of another value.
  const std::string other = SignEdgeValue(key_, "ticket", {"b"}, expires_);
  EXPECT_THAT(
      VerifyEdgeValue(key_, "ticket",
                      absl::StrCat(value.substr(0, dot), other.substr(other.find('.'))), 1, now_),
      StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(EdgeHttpSignedValueTest, RefusesMalformedEncodings) {
  const std::string value = SignEdgeValue(key_, "ticket", {"a"}, expires_);
  const size_t dot = value.find('.');
  for (const std::string& bad :
       {std::string(), std::string("."), std::string(".."), value.substr(0, dot), value.substr(dot),
        absl::StrCat(value, "."), absl::StrCat(value, ".x"), absl::StrCat(value, "=="),
        absl::StrCat(value.substr(0, dot), "..", value.substr(dot + 1)), absl::StrCat(value, " "),
        absl::StrCat(" ", value), std::string("!!!.???"), std::string("not base64 at all"),
        absl::StrCat(value.substr(0, dot), "+/.", value), absl::StrCat(value, value)}) {
    EXPECT_THAT(VerifyEdgeValue(key_, "ticket", bad, 1, now_),
                StatusIs(absl::StatusCode::kUnauthenticated))
        << bad;
  }
}

TEST_F(EdgeHttpSignedValueTest, RefusesOversizedValues) {
  const std::string huge = absl::StrCat(std::string(100000, 'A'), ".", std::string(100000, 'A'));
  EXPECT_THAT(VerifyEdgeValue(key_, "ticket", huge, 1, now_),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(EdgeHttpSignedValueTest, RefusesCorrectlyMacedPayloadsWithoutAValidExpiry) {
  for (const absl::string_view payload :
       {"ticket\na", "ticket\na\n", "ticket\na\nnever", "ticket\na\n99999999999999999999999",
        "ticket\na\n1.5e9", "ticket"}) {
    EXPECT_THAT(VerifyEdgeValue(key_, "ticket", SignRaw(payload), 1, now_),
                StatusIs(absl::StatusCode::kUnauthenticated))
        << payload;
  }
  // The control: the same construction with a good expiry verifies.
  EXPECT_THAT(
      VerifyEdgeValue(key_, "ticket",
                      SignRaw(absl::StrCat("ticket\na\n", absl::ToUnixSeconds(expires_))), 1, now_),
      IsOkAndHolds(ElementsAre("a")));
}

TEST_F(EdgeHttpSignedValueTest, FailuresShareOneGenericMessage) {
  const std::string value = SignEdgeValue(key_, "ticket", {"a"}, expires_);
  const absl::Status wrong_key = VerifyEdgeValue(other_key_, "ticket", value, 1, now_).status();
  const absl::Status expired = VerifyEdgeValue(key_, "ticket", value, 1, expires_).status();
  const absl::Status wrong_count = VerifyEdgeValue(key_, "ticket", value, 2, now_).status();
  const absl::Status garbage = VerifyEdgeValue(key_, "ticket", "x", 1, now_).status();
  EXPECT_EQ(wrong_key.message(), expired.message());
  EXPECT_EQ(wrong_key.message(), wrong_count.message());
  EXPECT_EQ(wrong_key.message(), garbage.message());
}

// ---------------------------------------------------------------------------------------
// HtmlEscape

TEST(EdgeHttpHtmlEscapeTest, EscapesTheFiveSpecialCharacters) {
  EXPECT_EQ(HtmlEscape("<script>alert('x')&\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;");
  EXPECT_EQ(HtmlEscape("&amp;"), "&amp;amp;");
  EXPECT_EQ(HtmlEscape("plain text / 100%"), "plain text / 100%");
  EXPECT_EQ(HtmlEscape(""), "");
  EXPECT_EQ(HtmlEscape("\" onmouseover=\"x"), "&quot; onmouseover=&quot;x");
}

}  // namespace
}  // namespace tidepool::proxy

namespace tidepool::proxy {
namespace {

TEST(EdgeHttpParseHttpUrlTest, NamesTheOriginWithTheSchemesDefaultPort) {
  absl::StatusOr<UrlParts> url = ParseHttpUrl("HTTPS://Tidepool.Example.com/path?q=1");
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->scheme, "https");
  EXPECT_EQ(url->host, "tidepool.example.com");
  EXPECT_EQ(url->authority, "tidepool.example.com");
  EXPECT_EQ(url->port, 443);
  url = ParseHttpUrl("http://[::1]:8000/v1");
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->host, "[::1]");
  EXPECT_EQ(url->port, 8000);
  for (const char* bad : {"ftp://host", "//host", "http://", "http://user@host/", "http://h:99999"}) {
    EXPECT_FALSE(ParseHttpUrl(bad).ok()) << bad;
  }
  EXPECT_EQ(SplitHostPort("example.com:8080"), std::make_pair(std::string("example.com"), 8080));
  EXPECT_EQ(SplitHostPort("[::1]"), std::make_pair(std::string("[::1]"), 0));
}

}  // namespace
}  // namespace tidepool::proxy
