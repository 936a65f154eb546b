#include "services/supervisor/file_service.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/supervisor/safe_path.h"
#include "services/supervisor/upload_manager.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::supervisor {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A snapshot of a tree (relative path -> type + content/target) to prove nothing changed.
std::map<std::string, std::string> Snapshot(const std::string& root) {
  std::map<std::string, std::string> out;
  if (!fs::exists(root)) {
    return out;
  }
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    std::string rel = fs::relative(it->path(), root).string();
    if (it->is_symlink()) {
      out[rel] = "L:" + fs::read_symlink(it->path()).string();
    } else if (it->is_directory()) {
      out[rel] = "D";
    } else {
      out[rel] = "F:" + ReadAll(it->path().string());
    }
  }
  return out;
}

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (char& c : s) {
    c = static_cast<char>(gen() & 0xff);
  }
  return s;
}

struct Entry {
  std::string name = "";
  mode_t type = AE_IFREG;
  std::string data = "";
  std::string link = "";      // symlink target
  std::string hardlink = "";  // hardlink target
  int64_t zeros = 0;          // if > 0, data is this many zero bytes, streamed
};

// Writes an archive with libarchive: format "zip", "tar", "tar.gz", "tar.bz2".
void WriteArchive(const std::string& path, const std::string& format,
                  const std::vector<Entry>& entries) {
  struct archive* a = archive_write_new();
  if (format == "zip") {
    archive_write_set_format_zip(a);
  } else {
    archive_write_set_format_pax_restricted(a);
    if (format == "tar.gz") {
      archive_write_add_filter_gzip(a);
    } else if (format == "tar.bz2") {
      archive_write_add_filter_bzip2(a);
    }
  }
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK) << archive_error_string(a);
  for (const Entry& en : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, en.name.c_str());
    archive_entry_set_perm(e, en.type == AE_IFDIR ? 0755 : 0644);
    if (!en.hardlink.empty()) {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_hardlink(e, en.hardlink.c_str());
      archive_entry_set_size(e, 0);
    } else {
      archive_entry_set_filetype(e, en.type);
      if (en.type == AE_IFLNK) {
        archive_entry_set_symlink(e, en.link.c_str());
      }
      archive_entry_set_size(
          e, en.type == AE_IFREG ? (en.zeros > 0 ? en.zeros : static_cast<int64_t>(en.data.size()))
                                 : 0);
    }
    ASSERT_GE(archive_write_header(a, e), ARCHIVE_WARN) << archive_error_string(a);
    if (en.type == AE_IFREG && en.hardlink.empty()) {
      if (en.zeros > 0) {
        std::string zero(1 << 20, '\0');
        for (int64_t left = en.zeros; left > 0; left -= static_cast<int64_t>(zero.size())) {
          archive_write_data(a, zero.data(),
                             static_cast<size_t>(std::min<int64_t>(left, zero.size())));
        }
      } else if (!en.data.empty()) {
        archive_write_data(a, en.data.data(), en.data.size());
      }
    }
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

// Reads an archive held in memory back into path -> "F:data" / "D" / "L:target".
std::map<std::string, std::string> ReadArchive(const std::string& bytes) {
  std::map<std::string, std::string> out;
  struct archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_all(a);
  EXPECT_EQ(archive_read_open_memory(a, bytes.data(), bytes.size()), ARCHIVE_OK);
  struct archive_entry* e = nullptr;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    std::string name = archive_entry_pathname(e);
    if (!name.empty() && name.back() == '/') {
      name.pop_back();
    }
    if (archive_entry_filetype(e) == AE_IFDIR) {
      out[name] = "D";
    } else if (archive_entry_filetype(e) == AE_IFLNK) {
      out[name] = std::string("L:") + archive_entry_symlink(e);
    } else {
      std::string data;
      char buf[8192];
      la_ssize_t n;
      while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) {
        data.append(buf, static_cast<size_t>(n));
      }
      out[name] = "F:" + data;
    }
  }
  archive_read_free(a);
  return out;
}

class FileServiceTest : public ::testing::Test {
 protected:
  FileServiceTest() {
    fs::create_directories(vol_);
    fs::create_directories(outside_);
    testing::WriteFile(outside_ + "/secret", "top secret");
  }

  std::string V(const std::string& rel) const { return vol_ + "/" + rel; }
  void Put(const std::string& rel, const std::string& data) {
    fs::create_directories(fs::path(V(rel)).parent_path());
    ASSERT_TRUE(testing::WriteFile(V(rel), data));
  }
  void ExpectOutsideUntouched() {
    EXPECT_EQ(Snapshot(outside_), (std::map<std::string, std::string>{{"secret", "F:top secret"}}));
  }

  testing::ScopedTempDir tmp_;
  std::string vol_ = tmp_.Join("vol");
  std::string outside_ = tmp_.Join("outside");
};

// ---------------------------------------------------------------------------------------
// Paths

TEST(SafePathTest, NormalizeAndValidate) {
  EXPECT_EQ(*NormalizePath(""), "");
  EXPECT_EQ(*NormalizePath("/"), "");
  EXPECT_EQ(*NormalizePath("/a//b/./c/"), "a/b/c");
  EXPECT_THAT(NormalizePath("a/../b"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NormalizePath(".."), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NormalizePath(std::string("a\0b", 3)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NormalizePath(std::string(256, 'x')), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NormalizePath(std::string(255, 'x')), IsOk());
  std::string long_path;
  while (long_path.size() <= 4096) {
    long_path += "abcdefghi/";
  }
  EXPECT_THAT(NormalizePath(long_path), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(FileServiceTest, SafeRootUsesOpenat2AndFallbackRefusesEscapes) {
  fs::create_symlink(outside_, V("out"));
  fs::create_symlink("/etc", V("etc"));
  fs::create_directories(V("d"));
  fs::create_symlink("d", V("in"));
  absl::StatusOr<SafeRoot> root = SafeRoot::Open(vol_);
  ASSERT_THAT(root, IsOk());
  EXPECT_TRUE(root->uses_openat2());
  for (bool fallback : {false, true}) {
    if (fallback) {
      root->ForceWalkFallbackForTesting();
    }
    EXPECT_THAT(root->OpenBeneath("out/secret", O_RDONLY),
                StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(root->OpenBeneath("etc/passwd", O_RDONLY),
                StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(root->OpenBeneath("d", O_PATH | O_DIRECTORY), IsOk());
  }
  // openat2 follows links that stay inside; the fallback refuses every link.
  SafeRoot fresh = *SafeRoot::Open(vol_);
  EXPECT_THAT(fresh.OpenBeneath("in", O_PATH | O_DIRECTORY), IsOk());
  EXPECT_THAT(root->OpenBeneath("in", O_PATH | O_DIRECTORY),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(FileServiceTest, TraversalCorpusRefusedAndNothingOutsideTouched) {
  FileService files(vol_, 0);
  fs::create_symlink(outside_, V("out"));  // symlinked parent dir, absolute
  fs::create_symlink("/etc", V("etc"));    // symlink to /etc
  fs::create_symlink("l2", V("l1"));       // chain: l1 -> l2 -> ../outside
  fs::create_symlink("../outside", V("l2"));
  fs::create_symlink("../../outside/secret", V("up"));  // relative escape
  const std::vector<std::string> bad = {
      "../outside/secret",
      "a/../../outside/secret",
      "out/secret",
      "out/new",
      "etc/passwd",
      "etc/newfile",
      "l1/secret",
      "l1/new",
      "up/x",
      "l2/x/y",
      std::string("a\0b", 3),
      std::string(256, 'n'),
  };
  testing::FakeClock clock(absl::Now());
  UploadManager uploads(files, clock);
  for (const std::string& p : bad) {
    SCOPED_TRACE(p);
    v1::ListFilesRequest list;
    list.set_path(p);
    EXPECT_THAT(files.ListFiles(list), StatusIs(absl::StatusCode::kInvalidArgument));
    v1::MakeDirectoryRequest mk;
    mk.set_path(p);
    mk.set_parents(true);
    EXPECT_THAT(files.MakeDirectory(mk), StatusIs(absl::StatusCode::kInvalidArgument));
    v1::CopyPathRequest cp;
    cp.set_source_path(p);
    cp.set_destination_path("copy");
    EXPECT_FALSE(files.CopyPath(cp).ok());
    v1::CopyPathRequest cp2;
    Put("src.txt", "x");
    cp2.set_source_path("src.txt");
    cp2.set_destination_path(p);
    cp2.set_overwrite(true);
    EXPECT_FALSE(files.CopyPath(cp2).ok());
    v1::MovePathRequest mv;
    mv.set_source_path("src.txt");
    mv.set_destination_path(p);
    mv.set_overwrite(true);
    EXPECT_FALSE(files.MovePath(mv).ok());
    std::string sink;
    {
      v1::StatFileRequest st;
      st.set_path(p);
      EXPECT_THAT(files.StatFile(st), StatusIs(absl::StatusCode::kInvalidArgument));
      v1::DeletePathRequest del;
      del.set_path(p);
      del.set_recursive(true);
      EXPECT_THAT(files.DeletePath(del), StatusIs(absl::StatusCode::kInvalidArgument));
    }
    EXPECT_THAT(files.StreamDownload(p, "",
                                     [&](absl::string_view b) {
                                       sink.append(b.data(), b.size());
                                       return true;
                                     }),
                StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_EQ(sink, "");
    size_t done = 0;
    EXPECT_FALSE(uploads
                     .PutChunk("up1", p, 0, 1, true,
                               [&](char* b, size_t) -> ssize_t {
                                 if (done++ > 0) return 0;
                                 b[0] = 'x';
                                 return 1;
                               })
                     .ok());
    uploads.Abandon("up1").IgnoreError();
  }
  // A final link that points out is refused when opened (download), described by stat.
  EXPECT_THAT(files.StreamDownload("up", "", [](absl::string_view) { return true; }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(files.OpenFileForRead("up"), StatusIs(absl::StatusCode::kInvalidArgument));
  v1::StatFileRequest up_stat;
  up_stat.set_path("up");
  EXPECT_EQ(files.StatFile(up_stat)->file().type(), v1::FILE_TYPE_SYMLINK);
  // An absolute contract path is relative to the volume root, never the real /.
  v1::StatFileRequest abs;
  abs.set_path("/etc/passwd");
  EXPECT_THAT(files.StatFile(abs), StatusIs(absl::StatusCode::kInvalidArgument));
  abs.set_path("/nope/passwd");
  EXPECT_THAT(files.StatFile(abs), StatusIs(absl::StatusCode::kNotFound));
  // Links themselves are described, not followed.
  v1::StatFileRequest link;
  link.set_path("etc");
  absl::StatusOr<v1::StatFileResponse> st = files.StatFile(link);
  ASSERT_THAT(st, IsOk());
  EXPECT_EQ(st->file().type(), v1::FILE_TYPE_SYMLINK);
  EXPECT_EQ(st->file().symlink_target(), "/etc");
  // Deleting the link removes the link only.
  v1::DeletePathRequest del;
  del.set_path("out");
  EXPECT_THAT(files.DeletePath(del), IsOk());
  ExpectOutsideUntouched();
  EXPECT_TRUE(fs::exists("/etc/passwd"));
}

// ---------------------------------------------------------------------------------------
// RPCs

TEST_F(FileServiceTest, ListFilesOrderHiddenAndPaging) {
  FileService files(vol_, 0);
  Put("b.txt", "bb");
  Put("a.txt", "a");
  Put(".hidden", "h");
  Put("zdir/x", "x");
  fs::create_directories(V("Adir"));
  fs::create_symlink("a.txt", V("link"));
  v1::ListFilesRequest req;
  absl::StatusOr<v1::ListFilesResponse> resp = files.ListFiles(req);
  ASSERT_THAT(resp, IsOk());
  std::vector<std::string> names;
  for (const auto& e : resp->entries()) {
    names.push_back(e.name());
  }
  EXPECT_THAT(names, ElementsAre("Adir", "zdir", "a.txt", "b.txt", "link"));
  EXPECT_EQ(resp->entries(4).type(), v1::FILE_TYPE_SYMLINK);
  EXPECT_EQ(resp->entries(4).symlink_target(), "a.txt");
  EXPECT_EQ(resp->entries(3).size_bytes(), 2);
  EXPECT_EQ(resp->entries(1).path(), "zdir");
  EXPECT_EQ(resp->page().total_size(), 5);
  EXPECT_EQ(resp->page().next_page_token(), "");

  req.set_include_hidden(true);
  req.mutable_page()->set_page_size(2);
  std::vector<std::string> paged;
  std::string token;
  int pages = 0;
  do {
    req.mutable_page()->set_page_token(token);
    resp = files.ListFiles(req);
    ASSERT_THAT(resp, IsOk());
    for (const auto& e : resp->entries()) {
      paged.push_back(e.name());
    }
    token = resp->page().next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_THAT(paged, ElementsAre("Adir", "zdir", ".hidden", "a.txt", "b.txt", "link"));
  EXPECT_EQ(pages, 3);

  // A token is bound to its filters; forged ones are refused.
  req.mutable_page()->set_page_token("");
  req.mutable_page()->set_page_token(files.ListFiles(req)->page().next_page_token());
  v1::ListFilesRequest other = req;
  other.set_include_hidden(false);
  EXPECT_THAT(files.ListFiles(other), StatusIs(absl::StatusCode::kInvalidArgument));
  other.mutable_page()->set_page_token("!!garbage!!");
  EXPECT_THAT(files.ListFiles(other), StatusIs(absl::StatusCode::kInvalidArgument));
  other.mutable_page()->set_page_token("");
  other.mutable_page()->set_page_size(-1);
  EXPECT_THAT(files.ListFiles(other), StatusIs(absl::StatusCode::kInvalidArgument));

  v1::ListFilesRequest missing;
  missing.set_path("nope");
  EXPECT_THAT(files.ListFiles(missing), StatusIs(absl::StatusCode::kNotFound));
  missing.set_path("a.txt");
  EXPECT_THAT(files.ListFiles(missing), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(FileServiceTest, StatFile) {
  FileService files(vol_, 0);
  Put("dir/f.txt", "hello");
  v1::StatFileRequest req;
  req.set_path("dir/f.txt");
  absl::StatusOr<v1::StatFileResponse> r = files.StatFile(req);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->file().name(), "f.txt");
  EXPECT_EQ(r->file().path(), "dir/f.txt");
  EXPECT_EQ(r->file().type(), v1::FILE_TYPE_REGULAR);
  EXPECT_EQ(r->file().size_bytes(), 5);
  EXPECT_GT(r->file().modify_time().seconds(), 0);
  req.set_path("");
  r = files.StatFile(req);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->file().type(), v1::FILE_TYPE_DIRECTORY);
  EXPECT_EQ(r->file().name(), "");
  req.set_path("dir/missing");
  EXPECT_THAT(files.StatFile(req), StatusIs(absl::StatusCode::kNotFound));
  files.SetStampedPaths({"dir/f.txt"});
  req.set_path("dir/f.txt");
  EXPECT_TRUE(files.StatFile(req)->file().stamped());
}

TEST_F(FileServiceTest, MakeDirectory) {
  FileService files(vol_, 0);
  v1::MakeDirectoryRequest req;
  req.set_path("a");
  ASSERT_THAT(files.MakeDirectory(req), IsOk());
  EXPECT_TRUE(fs::is_directory(V("a")));
  EXPECT_THAT(files.MakeDirectory(req), StatusIs(absl::StatusCode::kAlreadyExists));
  req.set_path("x/y/z");
  EXPECT_THAT(files.MakeDirectory(req), StatusIs(absl::StatusCode::kNotFound));
  req.set_parents(true);
  absl::StatusOr<v1::MakeDirectoryResponse> r = files.MakeDirectory(req);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->directory().path(), "x/y/z");
  EXPECT_THAT(files.MakeDirectory(req), IsOk());  // existing dir with parents: fine
  Put("file", "f");
  req.set_path("file/sub");
  EXPECT_THAT(files.MakeDirectory(req), StatusIs(absl::StatusCode::kAlreadyExists));
  req.set_parents(false);
  req.set_path("file");
  EXPECT_THAT(files.MakeDirectory(req), StatusIs(absl::StatusCode::kAlreadyExists));
  req.set_path("/");
  EXPECT_THAT(files.MakeDirectory(req), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(FileServiceTest, MovePath) {
  FileService files(vol_, 0);
  Put("a.txt", "A");
  Put("b.txt", "B");
  Put("d1/x", "x");
  fs::create_directories(V("d2"));
  v1::MovePathRequest req;
  req.set_source_path("a.txt");
  req.set_destination_path("b.txt");
  EXPECT_THAT(files.MovePath(req), StatusIs(absl::StatusCode::kAlreadyExists));
  req.set_destination_path("d2");
  req.set_overwrite(true);
  EXPECT_THAT(files.MovePath(req), StatusIs(absl::StatusCode::kFailedPrecondition));
  req.set_destination_path("b.txt");
  ASSERT_THAT(files.MovePath(req), IsOk());
  EXPECT_EQ(ReadAll(V("b.txt")), "A");
  EXPECT_FALSE(fs::exists(V("a.txt")));
  req.set_source_path("d1");
  req.set_destination_path("d1/inner");
  EXPECT_THAT(files.MovePath(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.set_destination_path("");
  EXPECT_THAT(files.MovePath(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.set_source_path("missing");
  req.set_destination_path("m2");
  EXPECT_THAT(files.MovePath(req), StatusIs(absl::StatusCode::kNotFound));
  req.set_source_path("d1");
  req.set_destination_path("nope/d1");
  EXPECT_THAT(files.MovePath(req), StatusIs(absl::StatusCode::kNotFound));
  req.set_overwrite(false);
  req.set_destination_path("d3");
  absl::StatusOr<v1::MovePathResponse> r = files.MovePath(req);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->file().type(), v1::FILE_TYPE_DIRECTORY);
  EXPECT_EQ(ReadAll(V("d3/x")), "x");
  files.SetStampedPaths({"b.txt"});
  req.set_source_path("b.txt");
  req.set_destination_path("c.txt");
  EXPECT_THAT(files.MovePath(req), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(FileServiceTest, CopyPathRecursiveLinksAsLinksAndQuota) {
  FileService files(vol_, 0);
  Put("src/a.txt", "aaa");
  Put("src/sub/b.txt", "bbbb");
  fs::create_symlink(outside_, V("src/escape"));  // copied as a link, never followed
  fs::create_symlink("a.txt", V("src/rel"));
  v1::CopyPathRequest req;
  req.set_source_path("src");
  req.set_destination_path("dst");
  absl::StatusOr<v1::CopyPathResponse> r = files.CopyPath(req);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->copied_file_count(), 4);
  EXPECT_EQ(r->copied_bytes(), 7);
  EXPECT_EQ(Snapshot(V("src")), Snapshot(V("dst")));
  EXPECT_TRUE(fs::is_symlink(V("dst/escape")));
  EXPECT_THAT(files.CopyPath(req), StatusIs(absl::StatusCode::kAlreadyExists));
  req.set_overwrite(true);
  Put("src/a.txt", "changed");
  ASSERT_THAT(files.CopyPath(req), IsOk());
  EXPECT_EQ(ReadAll(V("dst/a.txt")), "changed");
  req.set_destination_path("src/inner");
  EXPECT_THAT(files.CopyPath(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.set_source_path("missing");
  req.set_destination_path("x");
  EXPECT_THAT(files.CopyPath(req), StatusIs(absl::StatusCode::kNotFound));
  req.set_source_path("src");
  req.set_destination_path("nope/x");
  EXPECT_THAT(files.CopyPath(req), StatusIs(absl::StatusCode::kNotFound));
  ExpectOutsideUntouched();

  // Quota: a 3 MB file cannot be copied under a 4 MB quota; nothing is left behind.
  Put("big/blob", RandomBytes(3 << 20, 1));
  FileService small(vol_, 4 << 20);
  v1::CopyPathRequest big;
  big.set_source_path("big");
  big.set_destination_path("big2");
  EXPECT_THAT(small.CopyPath(big), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_FALSE(fs::exists(V("big2")));
  for (const auto& e : fs::directory_iterator(vol_)) {
    EXPECT_THAT(e.path().filename().string(), ::testing::Not(HasSubstr(".tp-copy")));
  }
}

TEST_F(FileServiceTest, DeletePath) {
  FileService files(vol_, 0);
  Put("f", "x");
  Put("d/e/f", "y");
  fs::create_directories(V("empty"));
  fs::create_symlink(outside_, V("link"));
  v1::DeletePathRequest req;
  req.set_path("f");
  EXPECT_EQ(files.DeletePath(req)->deleted_entry_count(), 1);
  EXPECT_THAT(files.DeletePath(req), StatusIs(absl::StatusCode::kNotFound));
  req.set_path("empty");
  EXPECT_THAT(files.DeletePath(req), IsOk());
  req.set_path("d");
  EXPECT_THAT(files.DeletePath(req), StatusIs(absl::StatusCode::kFailedPrecondition));
  files.SetStampedPaths({"d/e/f"});
  req.set_recursive(true);
  EXPECT_THAT(files.DeletePath(req), StatusIs(absl::StatusCode::kFailedPrecondition));
  files.SetStampedPaths({});
  EXPECT_EQ(files.DeletePath(req)->deleted_entry_count(), 3);
  EXPECT_FALSE(fs::exists(V("d")));
  req.set_path("link");
  EXPECT_THAT(files.DeletePath(req), IsOk());
  req.set_path("");
  EXPECT_THAT(files.DeletePath(req), StatusIs(absl::StatusCode::kInvalidArgument));
  ExpectOutsideUntouched();
}

// ---------------------------------------------------------------------------------------
// Uploads

UploadManager::ReadFn Body(const std::string& data) {
  auto pos = std::make_shared<size_t>(0);
  return [data, pos](char* buf, size_t n) -> ssize_t {
    size_t k = std::min(n, data.size() - *pos);
    std::memcpy(buf, data.data() + *pos, k);
    *pos += k;
    return static_cast<ssize_t>(k);
  };
}

TEST_F(FileServiceTest, UploadResumableAcrossChunks) {
  FileService files(vol_, 0);
  testing::FakeClock clock(absl::FromUnixSeconds(1700000000));
  UploadManager up(files, clock);
  std::string data = RandomBytes(300000, 7);
  const std::string id = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  absl::StatusOr<v1::UploadStatus> st =
      up.PutChunk(id, "dir/sub/file.bin", 0, data.size(), false, Body(data.substr(0, 100000)));
  ASSERT_THAT(st, IsOk());
  EXPECT_EQ(st->received_bytes(), 100000);
  EXPECT_FALSE(st->complete());

  // Wrong offset: ABORTED with the status to resume from.
  v1::UploadStatus current;
  EXPECT_THAT(up.PutChunk(id, "dir/sub/file.bin", 50, data.size(), false, Body("zz"), &current),
              StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(current.received_bytes(), 100000);
  EXPECT_EQ(current.upload_id(), id);

  // A dropped connection keeps what was written.
  auto dropping = [&, sent = size_t{0}](char* buf, size_t n) mutable -> ssize_t {
    if (sent >= 50000) {
      return -1;
    }
    size_t k = std::min<size_t>(n, 50000 - sent);
    std::memcpy(buf, data.data() + 100000 + sent, k);
    sent += k;
    return static_cast<ssize_t>(k);
  };
  EXPECT_THAT(up.PutChunk(id, "dir/sub/file.bin", 100000, data.size(), false, dropping),
              StatusIs(absl::StatusCode::kUnavailable));
  st = up.Status(id);
  ASSERT_THAT(st, IsOk());
  EXPECT_EQ(st->received_bytes(), 150000);

  st = up.PutChunk(id, "dir/sub/file.bin", 150000, data.size(), false, Body(data.substr(150000)));
  ASSERT_THAT(st, IsOk());
  EXPECT_TRUE(st->complete());
  EXPECT_EQ(st->file().size_bytes(), 300000);
  EXPECT_EQ(ReadAll(V("dir/sub/file.bin")), data);
  EXPECT_TRUE(up.Status(id)->complete());

  // Zero-byte upload, then ALREADY_EXISTS without overwrite, completed later with overwrite.
  EXPECT_TRUE(up.PutChunk("empty1", "empty", 0, 0, false, Body(""))->complete());
  EXPECT_EQ(fs::file_size(V("empty")), 0u);
  EXPECT_THAT(up.PutChunk("again1", "empty", 0, 3, false, Body("new")),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(ReadAll(V("empty")), "");
  EXPECT_TRUE(up.PutChunk("again1", "empty", 3, 3, true, Body(""))->complete());
  EXPECT_EQ(ReadAll(V("empty")), "new");

  // Body past total_size is refused and discarded; bad ids are refused.
  EXPECT_THAT(up.PutChunk("over1", "o", 0, 2, false, Body("abc")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(up.Status("over1")->received_bytes(), 0);
  EXPECT_THAT(up.PutChunk("../x", "o", 0, 2, false, Body("ab")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(up.PutChunk(std::string(65, 'a'), "o", 0, 2, false, Body("ab")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(up.Status("unknown"), StatusIs(absl::StatusCode::kNotFound));

  // Abandon and purge.
  ASSERT_THAT(up.PutChunk("stale1", "s", 0, 10, false, Body("12345")), IsOk());
  EXPECT_THAT(up.Abandon("stale1"), IsOk());
  EXPECT_THAT(up.Status("stale1"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(up.PutChunk("stale2", "s", 0, 10, false, Body("12345")), IsOk());
  clock.Advance(absl::Hours(1));
  ASSERT_THAT(up.PutChunk("fresh1", "t", 0, 10, false, Body("12345")), IsOk());
  clock.Advance(UploadManager::kRetention - absl::Minutes(30));
  EXPECT_THAT(up.PurgeOlderThan(UploadManager::kRetention), IsOk());
  EXPECT_THAT(up.Status("stale2"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(up.Status("fresh1"), IsOk());
}

TEST_F(FileServiceTest, UploadQuotaExceeded) {
  FileService files(vol_, 1 << 20);
  testing::FakeClock clock(absl::Now());
  UploadManager up(files, clock);
  std::string data = RandomBytes(2 << 20, 3);
  v1::UploadStatus status;
  EXPECT_THAT(up.PutChunk("q1", "big", 0, data.size(), false, Body(data), &status),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // A client lying about total_size is still stopped by the per-write charge.
  EXPECT_THAT(up.PutChunk("q2", "big", 0, 2 << 20, false, Body(data)),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_FALSE(fs::exists(V("big")));
  EXPECT_EQ(up.Status("q2")->received_bytes(), 0);
}

// ---------------------------------------------------------------------------------------
// Archives

TEST_F(FileServiceTest, ExtractLegitTarGzIntact) {
  FileService files(vol_, 0);
  std::string blob = RandomBytes(1500000, 11);
  WriteArchive(V("in.tar.gz"), "tar.gz",
               {{.name = "proj/", .type = AE_IFDIR},
                {.name = "proj/src/main.py", .data = "print('hi')\n"},
                {.name = "proj/blob.bin", .data = blob},
                {.name = "proj/empty", .data = ""},
                {.name = "proj/link", .type = AE_IFLNK, .link = "src/main.py"},
                {.name = "proj/src/up", .type = AE_IFLNK, .link = "../blob.bin"},
                {.name = "proj/hard", .hardlink = "proj/empty"}});
  v1::ExtractArchiveRequest req;
  req.set_archive_path("in.tar.gz");
  req.set_destination_path("out");
  req.set_delete_archive(true);
  absl::StatusOr<v1::ExtractArchiveResponse> r = files.ExtractArchive(req);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->file_count(), 4);
  EXPECT_EQ(r->directory_count(), 1);
  EXPECT_EQ(r->symlink_count(), 2);
  EXPECT_EQ(r->extracted_bytes(), static_cast<int64_t>(blob.size() + 12));
  EXPECT_EQ(ReadAll(V("out/proj/blob.bin")), blob);
  EXPECT_EQ(ReadAll(V("out/proj/src/main.py")), "print('hi')\n");
  EXPECT_EQ(fs::read_symlink(V("out/proj/link")).string(), "src/main.py");
  EXPECT_FALSE(fs::exists(V("in.tar.gz")));
  // Re-extracting onto existing files: ALREADY_EXISTS unless overwrite; destination intact.
  WriteArchive(V("again.zip"), "zip", {{.name = "proj/src/main.py", .data = "v2"}});
  req.set_archive_path("again.zip");
  req.set_delete_archive(false);
  EXPECT_THAT(files.ExtractArchive(req), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(ReadAll(V("out/proj/src/main.py")), "print('hi')\n");
  req.set_overwrite(true);
  ASSERT_THAT(files.ExtractArchive(req), IsOk());
  EXPECT_EQ(ReadAll(V("out/proj/src/main.py")), "v2");
  EXPECT_EQ(ReadAll(V("out/proj/blob.bin")), blob);
  // Not an archive; missing archive.
  Put("plain.txt", "just text, not an archive");
  req.set_archive_path("plain.txt");
  EXPECT_THAT(files.ExtractArchive(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.set_archive_path("missing.zip");
  EXPECT_THAT(files.ExtractArchive(req), StatusIs(absl::StatusCode::kNotFound));
  // Staging area is clean.
  EXPECT_TRUE(fs::is_empty(V(".tidepool/tmp")));
}

TEST_F(FileServiceTest, ExtractLegitZipWithCompressibleDataIntoExistingDirectory) {
  FileService files(vol_, 0);
  std::string text;
  for (int k = 0; text.size() < (4 << 20); ++k) {
    text += absl::StrCat("line ", k, ": the quick brown fox jumps over the lazy dog\n");
  }
  std::string blob = RandomBytes(3 << 20, 21);
  WriteArchive(V("legit.zip"), "zip",
               {{.name = "docs/log.txt", .data = text},
                {.name = "docs/blob", .data = blob},
                {.name = "zeros", .zeros = 2 << 20}});
  Put("target/keep.txt", "keep");
  v1::ExtractArchiveRequest req;
  req.set_archive_path("legit.zip");
  req.set_destination_path("target");
  absl::StatusOr<v1::ExtractArchiveResponse> r = files.ExtractArchive(req);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->file_count(), 3);
  EXPECT_EQ(ReadAll(V("target/docs/log.txt")), text);
  EXPECT_EQ(ReadAll(V("target/docs/blob")), blob);
  EXPECT_EQ(fs::file_size(V("target/zeros")), 2u << 20);
  EXPECT_EQ(ReadAll(V("target/keep.txt")), "keep");
  // Default destination: the archive's directory.
  Put("sub/x.zip", "");
  WriteArchive(V("sub/x.zip"), "zip", {{.name = "inner.txt", .data = "in"}});
  v1::ExtractArchiveRequest here;
  here.set_archive_path("sub/x.zip");
  ASSERT_THAT(files.ExtractArchive(here), IsOk());
  EXPECT_EQ(ReadAll(V("sub/inner.txt")), "in");
}

TEST_F(FileServiceTest, ConcurrentChunkOfOneUploadIsAborted) {
  FileService files(vol_, 0);
  testing::FakeClock clock(absl::Now());
  UploadManager up(files, clock);
  absl::Status inner;
  bool sent = false;
  auto body = [&](char* buf, size_t) -> ssize_t {
    if (sent) {
      return 0;
    }
    sent = true;
    inner = up.PutChunk("same1", "f", 0, 1, false, Body("y")).status();
    buf[0] = 'x';
    return 1;
  };
  ASSERT_THAT(up.PutChunk("same1", "f", 0, 1, false, body), IsOk());
  EXPECT_THAT(inner, StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(ReadAll(V("f")), "x");
}

TEST_F(FileServiceTest, ExtractRefusesZipSlipAndLinkEscapes) {
  FileService files(vol_, 0);
  fs::create_directories(V("up"));
  fs::create_directories(V("up2"));
  struct Case {
    std::string format;
    std::vector<Entry> entries;
  };
  const std::vector<Case> cases = {
      {"zip", {{.name = "ok.txt", .data = "fine"}, {.name = "../x", .data = "evil"}}},
      {"tar", {{.name = "../../outside/evil", .data = "evil"}}},
      {"zip", {{.name = "/abs/evil", .data = "evil"}}},
      {"tar", {{.name = "./a/../../x", .data = "evil"}}},
      {"zip", {{.name = "..\\..\\x", .data = "evil"}}},
      {"zip", {{.name = "C:\\x", .data = "evil"}}},
      {"tar", {{.name = "../up2/x", .data = "evil"}}},
      {"tar",
       {{.name = "link", .type = AE_IFLNK, .link = "../../"},
        {.name = "link/payload", .data = "evil"}}},
      {"tar",
       {{.name = "link", .type = AE_IFLNK, .link = "/"},
        {.name = "link/etc/evil", .data = "evil"}}},
      {"tar",
       {{.name = "self", .type = AE_IFLNK, .link = "."},
        {.name = "self/payload", .data = "evil"}}},  // safe link, but never written through
      {"tar",
       {{.name = "a", .type = AE_IFLNK, .link = "."},
        {.name = "b", .type = AE_IFLNK, .link = "a/.."}}},  // chain out via a link
      {"tar", {{.name = "hl", .hardlink = "../outside/secret"}}},
      {"tar", {{.name = "hl", .hardlink = "nonexistent"}}},
      {"tar", {{.name = "fifo", .type = AE_IFIFO}}},
      {"tar", {{.name = "dev", .type = AE_IFCHR}}},
      {"tar", {{.name = std::string(300, 'n'), .data = "long"}}},
  };
  const auto before = Snapshot(vol_);
  int i = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat("case ", i));
    std::string name = absl::StrCat("evil", i++, ".", c.format);
    WriteArchive(V(name), c.format, c.entries);
    v1::ExtractArchiveRequest req;
    req.set_archive_path(name);
    req.set_destination_path("up/target");
    EXPECT_THAT(files.ExtractArchive(req),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsafe archive entry")));
    fs::remove(V(name));
    EXPECT_FALSE(fs::exists(V("up/target")));
  }
  EXPECT_EQ(Snapshot(vol_).size(), before.size() + 2);  // + .tidepool/tmp
  EXPECT_TRUE(fs::is_empty(V(".tidepool/tmp")));
  EXPECT_TRUE(fs::is_empty(V("up2")));
  ExpectOutsideUntouched();
}

TEST_F(FileServiceTest, ExtractRefusesBombsAndRemovesPartialOutput) {
  // 100 MB of zeros, deflated (~100 KB), with a 10 MB quota: stopped by the size bound.
  FileService files(vol_, 10 << 20);
  WriteArchive(V("bomb.zip"), "zip",
               {{.name = "small.txt", .data = "hi"}, {.name = "zeros", .zeros = 100 << 20}});
  ASSERT_LT(fs::file_size(V("bomb.zip")), 1u << 20);
  v1::ExtractArchiveRequest req;
  req.set_archive_path("bomb.zip");
  req.set_destination_path("dest");
  auto start = absl::Now();
  EXPECT_THAT(files.ExtractArchive(req), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_FALSE(fs::exists(V("dest")));
  EXPECT_TRUE(fs::is_empty(V(".tidepool/tmp")));

  // Unlimited quota, but bzip2 of zeros is far beyond 1032:1: refused by the ratio.
  FileService unlimited(vol_, 0);
  WriteArchive(V("bomb.tar.bz2"), "tar.bz2", {{.name = "zeros", .zeros = 50 << 20}});
  req.set_archive_path("bomb.tar.bz2");
  EXPECT_THAT(unlimited.ExtractArchive(req),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("1032:1")));
  EXPECT_FALSE(fs::exists(V("dest")));
  EXPECT_TRUE(fs::is_empty(V(".tidepool/tmp")));

  // Entry-count and per-operation size bounds (scaled down limits).
  ExtractLimits limits;
  limits.max_entries = 100;
  limits.max_total_bytes = 1 << 20;
  FileService bounded(vol_, 0, limits);
  std::vector<Entry> many;
  for (int k = 0; k < 150; ++k) {
    many.push_back({.name = absl::StrCat("f", k), .data = "x"});
  }
  WriteArchive(V("many.tar"), "tar", many);
  req.set_archive_path("many.tar");
  EXPECT_THAT(bounded.ExtractArchive(req), StatusIs(absl::StatusCode::kResourceExhausted));
  WriteArchive(V("big.tar.gz"), "tar.gz", {{.name = "r", .data = RandomBytes(2 << 20, 5)}});
  req.set_archive_path("big.tar.gz");
  EXPECT_THAT(bounded.ExtractArchive(req), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_FALSE(fs::exists(V("dest")));
  EXPECT_TRUE(fs::is_empty(V(".tidepool/tmp")));
  // Depth over 64.
  std::string deep;
  for (int k = 0; k < 70; ++k) {
    deep += "d/";
  }
  WriteArchive(V("deep.tar"), "tar", {{.name = deep + "f", .data = "x"}});
  req.set_archive_path("deep.tar");
  EXPECT_THAT(unlimited.ExtractArchive(req), StatusIs(absl::StatusCode::kInvalidArgument));
}

// ---------------------------------------------------------------------------------------
// Downloads

TEST_F(FileServiceTest, DownloadFileAndFolderAsZipAndTarGz) {
  FileService files(vol_, 0);
  std::string blob = RandomBytes(200000, 9);
  Put("tree/a.txt", "alpha");
  Put("tree/sub/b.bin", blob);
  Put("tree/empty", "");
  fs::create_directories(V("tree/emptydir"));
  fs::create_symlink(outside_ + "/secret", V("tree/escape"));  // stored as a link only
  std::string file;
  ASSERT_THAT(files.StreamDownload("tree/sub/b.bin", "",
                                   [&](absl::string_view b) {
                                     file.append(b.data(), b.size());
                                     return true;
                                   }),
              IsOk());
  EXPECT_EQ(file, blob);

  const std::map<std::string, std::string> want = {
      {"a.txt", "F:alpha"}, {"sub", "D"},      {"sub/b.bin", "F:" + blob},
      {"empty", "F:"},      {"emptydir", "D"}, {"escape", "L:" + outside_ + "/secret"}};
  for (const char* format : {"zip", "tar.gz", ""}) {
    SCOPED_TRACE(format);
    std::string bytes;
    ASSERT_THAT(files.StreamDownload("tree", format,
                                     [&](absl::string_view b) {
                                       bytes.append(b.data(), b.size());
                                       return true;
                                     }),
                IsOk());
    EXPECT_EQ(ReadArchive(bytes), want);
  }
  EXPECT_THAT(files.StreamDownload("tree", "rar", [](absl::string_view) { return true; }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(files.StreamDownload("nope", "", [](absl::string_view) { return true; }),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(files.StreamDownload("tree", "zip", [](absl::string_view) { return false; }),
              StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace tidepool::supervisor
