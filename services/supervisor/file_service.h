#pragma once

// The supervisor's file API logic (no HTTP): the file RPCs of supervisor_service.proto
// (ListFiles, StatFile, MakeDirectory, MovePath, CopyPath, DeletePath, ExtractArchive) and
// folder/file downloads. Every path is resolved beneath the volume root by SafeRoot, never
// following a symlink out of it; every write is charged against the volume quota.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/supervisor/safe_path.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {

// Limits of one ExtractArchive call (SECURITY-TESTS.md G15). The defaults are the contract's.
struct ExtractLimits {
  // Expanded bytes per operation (also bounded by the remaining volume quota).
  int64_t max_total_bytes = int64_t{2} << 30;
  int64_t max_entries = 100000;
  // Directory depth of an entry path.
  int max_depth = 64;
  // Per entry: bytes written per byte of (compressed) archive input consumed.
  int64_t max_ratio = 1032;
  // Entries smaller than this are exempt from the ratio check (tiny files compress oddly).
  int64_t ratio_slack_bytes = int64_t{1} << 20;
  absl::Duration time_budget = absl::Seconds(10);
};

// Serves the file RPCs over one volume. Thread-safe: methods may be called concurrently
// (file system races between them resolve as the kernel orders them; nothing escapes the
// root). The used-bytes figure is measured lazily (a walk summing st_blocks * 512), cached,
// and adjusted by this object's own writes; deletes make it re-measure.
class FileService {
 public:
  // `root` is the volume root directory; `quota_bytes` <= 0 means unlimited. If the root
  // cannot be opened, every method returns that error (NOT_FOUND, FAILED_PRECONDITION...).
  FileService(std::string root, int64_t quota_bytes, ExtractLimits limits = {});

  FileService(const FileService&) = delete;
  FileService& operator=(const FileService&) = delete;

  // The staging area on the volume; file API listings show it like any other directory.
  static constexpr absl::string_view kInternalDir = ".tidepool";

  // Replaces the set of stamped paths (canonical relative paths). Stamped files are
  // reported as such and cannot be moved or deleted (FAILED_PRECONDITION).
  void SetStampedPaths(std::vector<std::string> paths);

  // Lists a directory: directories first, then by name (byte order); hidden names only with
  // include_hidden. Page size 0 means 50, over 1000 means 1000. Returns INVALID_ARGUMENT for
  // an invalid path, negative page size or malformed/foreign page token, NOT_FOUND if the
  // directory does not exist, FAILED_PRECONDITION if the path is not a directory.
  absl::StatusOr<v1::ListFilesResponse> ListFiles(const v1::ListFilesRequest& req);

  // Describes a file, directory or link (not followed). INVALID_ARGUMENT, NOT_FOUND.
  absl::StatusOr<v1::StatFileResponse> StatFile(const v1::StatFileRequest& req);

  // Creates a directory (with parents: its missing parents; an existing directory is fine).
  // INVALID_ARGUMENT (invalid or root), ALREADY_EXISTS (exists without parents, or a file
  // in the way), NOT_FOUND (parent missing without parents), RESOURCE_EXHAUSTED (quota).
  absl::StatusOr<v1::MakeDirectoryResponse> MakeDirectory(const v1::MakeDirectoryRequest& req);

  // Renames with renameat2 (RENAME_NOREPLACE unless overwrite). INVALID_ARGUMENT (invalid,
  // root, destination inside source), NOT_FOUND (source or destination parent),
  // ALREADY_EXISTS (destination exists, no overwrite), FAILED_PRECONDITION (stamped source
  // or destination, type mismatch on overwrite, non-empty directory destination, other
  // filesystem).
  absl::StatusOr<v1::MovePathResponse> MovePath(const v1::MovePathRequest& req);

  // Copies a file or tree; links are copied as links and never followed. The copy is built
  // under a hidden temporary name and moved into place at the end, so a failure leaves
  // nothing behind. INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, RESOURCE_EXHAUSTED.
  absl::StatusOr<v1::CopyPathResponse> CopyPath(const v1::CopyPathRequest& req);

  // Deletes a file, link or (with recursive) a tree; links are removed, not followed.
  // INVALID_ARGUMENT (invalid or root), NOT_FOUND, FAILED_PRECONDITION (non-empty directory
  // without recursive, or a stamped file at or below the path).
  absl::StatusOr<v1::DeletePathResponse> DeletePath(const v1::DeletePathRequest& req);

  // Safely extracts an archive (any format libarchive reads, detected from content) into a
  // staging directory on the volume, then moves it into the destination only if every entry
  // succeeded. Refused entries: absolute paths, "..", backslashes, names over 4096/255 bytes
  // or deeper than 64, symlinks whose target is absolute or leaves the destination (".."
  // is allowed only as leading components), hard links to anything outside the archive's
  // own extracted entries, devices, FIFOs and sockets (all INVALID_ARGUMENT naming the
  // entry). Modes are masked to 0777, owners never restored. RESOURCE_EXHAUSTED when the
  // expanded size exceeds min(remaining quota, 2 GiB), more than 100,000 entries, an entry's
  // expansion ratio exceeds 1032:1, or the 10 s budget runs out. NOT_FOUND if the archive
  // does not exist; ALREADY_EXISTS if an entry exists in the destination and overwrite is
  // not set. On any error the staging directory is removed.
  absl::StatusOr<v1::ExtractArchiveResponse> ExtractArchive(const v1::ExtractArchiveRequest& req);

  // Streams `path` to `sink`: a regular file as is (`format` ignored), a directory as an
  // archive built on the fly, `format` "zip" (also "") or "tar.gz", with paths relative to
  // the directory; links inside are stored as links, never followed; devices, FIFOs and
  // sockets are skipped. `sink` returns false to stop (the result is then UNAVAILABLE).
  // INVALID_ARGUMENT (invalid path or unknown format), NOT_FOUND.
  absl::Status StreamDownload(absl::string_view path, absl::string_view format,
                              const std::function<bool(absl::string_view)>& sink);

  // Opens a regular file beneath the root for reading (for Range requests: use pread).
  // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION if not a regular file.
  absl::StatusOr<ScopedFd> OpenFileForRead(absl::string_view path);

  // ---- Shared with UploadManager (same volume, same quota). ----

  // Describes `path` (not following a final link).
  absl::StatusOr<v1::FileInfo> Describe(absl::string_view path);
  // Creates the missing directories of canonical `dir` ("" is the root). Errors as
  // MakeDirectory with parents.
  absl::Status MakeDirs(absl::string_view dir);
  // Charges `bytes` against the quota; RESOURCE_EXHAUSTED (nothing charged) if they do
  // not fit.
  absl::Status Reserve(int64_t bytes);
  // Gives back bytes charged by Reserve.
  void Release(int64_t bytes);
  // Forgets the measured usage (re-measured on the next Reserve/UsedBytes).
  void InvalidateUsage();
  // The measured used bytes of the volume.
  absl::StatusOr<int64_t> UsedBytes();
  int64_t quota_bytes() const { return quota_bytes_; }
  // The root, or the error from opening it.
  absl::StatusOr<const SafeRoot*> root() const;
  bool IsStamped(absl::string_view path);
  // True if `path` or anything below it is stamped.
  bool HasStampedAtOrBelow(absl::string_view path);

 private:
  absl::StatusOr<int64_t> UsedBytesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<ScopedFd> MakeTempDir(absl::string_view prefix, std::string* name_out);

  std::unique_ptr<SafeRoot> root_;
  absl::Status root_status_;
  const int64_t quota_bytes_;
  const ExtractLimits limits_;

  absl::Mutex mu_;
  bool used_known_ ABSL_GUARDED_BY(mu_) = false;
  int64_t used_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> stamped_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tidepool::supervisor
