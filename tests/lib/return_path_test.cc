// The open-redirect corpus for return paths (SECURITY-TESTS.md 2.1 #12, #26): every payload
// that could send a browser to another origin is refused, and ordinary paths are kept.
#include "lib/return_path.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tidepool {
namespace {

// Hosts written the ways browsers and URL parsers accept them.
const std::vector<std::string>& EvilHosts() {
  static const auto* const kHosts = new std::vector<std::string>{
      "evil.com", "evil.com/", "evil.com:443", "127.0.0.1", "2130706433", "0x7f000001",
      "0177.0.0.1", "0x7f.0.0.1", "[::1]", "evil\xE3\x80\x82" "com", "evil%E3%80%82com",
      "user@evil.com", "good.example@evil.com", "evil.com%2f@good.example", "evil.com#@good",
      "evil.com?@good", "%65vil.com", "EVIL.COM", "evil.com%00.good.example", "0"};
  return *kHosts;
}

// Prefixes that make a browser (or a server in front of it) leave the origin.
const std::vector<std::string>& EvilPrefixes() {
  static const auto* const kPrefixes = new std::vector<std::string>{
      "//", "///", "////", "/\\", "\\/", "\\\\", "/\t/", "/\n/", "/\r/", "/ /", "/%09/",
      "/%0a/", "/%0d/", "/%0D%0A/", "/%2f", "/%2F", "/%5c", "/%5C", "/%252f", "/%25252f",
      "/%2f%2f", "https://", "http://", "https:", "http:", "//https://", "https:/",
      "javascript://", "ftp://", "\x01//", " //", "/\x7f/", "%2f%2f"};
  return *kPrefixes;
}

TEST(ReturnPathTest, RefusesTheGeneratedOpenRedirectCorpus) {
  int refused = 0;
  for (const std::string& prefix : EvilPrefixes()) {
    for (const std::string& host : EvilHosts()) {
      const std::string payload = prefix + host;
      EXPECT_FALSE(IsSafeReturnPath(payload)) << payload;
      EXPECT_EQ(SafeReturnPathOrRoot(payload), "/") << payload;
      ++refused;
    }
  }
  EXPECT_GE(refused, 500);
}

TEST(ReturnPathTest, RefusesTheHandPickedPayloads) {
  const std::vector<std::string> payloads = {
      "", "evil.com", "javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,x",
      "vbscript:x", "https:evil.com", "http:evil.com", "//evil", "/\\evil", "/\t/evil",
      "/%0d/evil", "/%09/evil", "\\\\evil", "/\\/evil", "/%5c%5cevil", "/%2F%2Fevil",
      "/%252F%252Fevil", "/%25252F%25252Fevil", "/%25252525252fevil", "/\xE3\x80\x82" "evil",
      "/caf\xC3\xA9", "/%", "/%zz", "/%0", "/a%0", "/ok%0d%0aSet-Cookie:x=1", "/a\r\nb",
      std::string("/\0evil", 6), std::string(2049, '/'), "/" + std::string(2048, 'a'),
      "#//evil", "?//evil", ".//evil", "@evil.com", "~/evil", " /ok", "/ok ", "//"};
  for (const std::string& payload : payloads) {
    EXPECT_FALSE(IsSafeReturnPath(payload)) << payload;
  }
}

TEST(ReturnPathTest, KeepsOrdinarySameOriginPaths) {
  for (const std::string path :
       {"/", "/workspaces", "/workspaces/ws_123/files?path=%2Fhome%2Fdocs#top",
        "/files/caf%C3%A9.txt", "/search?q=a%2Bb&page=2", "/admin/users?query=%40example.com",
        "/a/b/c/", "/100%25", "/x?next=/y", "/x#frag//ment"}) {
    EXPECT_TRUE(IsSafeReturnPath(path)) << path;
    EXPECT_EQ(SafeReturnPathOrRoot(path), path);
  }
  EXPECT_EQ(SafeReturnPathOrRoot(""), "/");
}

}  // namespace
}  // namespace tidepool
