#pragma once

// Chunked, resumable uploads into the volume (the PUT/GET/DELETE /_tidepool/v1/upload routes
// of supervisor_service.proto), without HTTP: the route handler passes the query parameters
// and a function that streams the request body.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/clock.h"
#include "services/supervisor/file_service.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {

// Keeps unfinished uploads in a staging area on the volume (.tidepool/uploads/), one data
// file (<id>.part) and one metadata file (<id>.meta) per upload, so an upload survives a
// dropped connection and a supervisor restart. Every byte is charged against the volume
// quota of `files`. Thread-safe; two chunks of one upload at once: the second is ABORTED.
class UploadManager {
 public:
  // Reads up to `n` bytes of the request body into `buf`: > 0 bytes read, 0 at the end of
  // the body, < 0 on error (connection dropped).
  using ReadFn = std::function<ssize_t(char* buf, size_t n)>;

  // Unfinished uploads are discarded after this long without a chunk.
  static constexpr absl::Duration kRetention = absl::Hours(24);
  // The staging directory, relative to the volume root.
  static constexpr absl::string_view kStagingDir = ".tidepool/uploads";

  // Not owned: `files` and `clock` must outlive this object.
  UploadManager(FileService& files, Clock& clock);

  UploadManager(const UploadManager&) = delete;
  UploadManager& operator=(const UploadManager&) = delete;

  // Appends one chunk, streamed from `read_fn`, at `offset`. The first chunk has offset 0
  // and creates the upload; when received bytes reach `total_size` the file is moved
  // atomically to `path` (missing parents are created) and the upload is complete.
  // Returns the UploadStatus after the chunk, or:
  //  INVALID_ARGUMENT  bad upload_id (1-64 characters [A-Za-z0-9]), path (or the root),
  //                    negative offset/total_size, path or total_size differing from the
  //                    upload's first chunk, or a body running past total_size (the chunk is
  //                    discarded);
  //  ABORTED           offset is not the received size (or a chunk of this upload is in
  //                    flight); `*status_out` (if not null) gets the current UploadStatus;
  //  ALREADY_EXISTS    the final path exists and overwrite is not set (the data stays
  //                    staged: resend an empty chunk at offset total_size with overwrite);
  //  FAILED_PRECONDITION the final path is a directory or a stamped file;
  //  RESOURCE_EXHAUSTED  the volume quota (the chunk is discarded);
  //  UNAVAILABLE       read_fn failed (bytes written so far are kept: resume from Status).
  // `*status_out` is also filled on the other errors when the upload exists.
  absl::StatusOr<v1::UploadStatus> PutChunk(absl::string_view upload_id, absl::string_view path,
                                            int64_t offset, int64_t total_size, bool overwrite,
                                            const ReadFn& read_fn,
                                            v1::UploadStatus* status_out = nullptr);

  // The upload's status. INVALID_ARGUMENT (bad id), NOT_FOUND (unknown or purged).
  absl::StatusOr<v1::UploadStatus> Status(absl::string_view upload_id);

  // Discards the upload and its staged bytes. INVALID_ARGUMENT, NOT_FOUND, ABORTED (a
  // chunk is in flight).
  absl::Status Abandon(absl::string_view upload_id);

  // Discards uploads (finished or not) whose last chunk is older than `age` by the clock.
  // Returns how many were discarded.
  absl::StatusOr<int> PurgeOlderThan(absl::Duration age);

 private:
  struct Meta {
    std::string path;
    int64_t total_size = 0;
    bool complete = false;
    absl::Time last_activity = absl::InfinitePast();
  };

  absl::StatusOr<ScopedFd> OpenStaging();
  absl::StatusOr<Meta> ReadMeta(int staging, const std::string& id);
  absl::Status WriteMeta(int staging, const std::string& id, const Meta& meta);
  v1::UploadStatus MakeStatus(int staging, const std::string& id, const Meta& meta);
  absl::StatusOr<v1::UploadStatus> PutChunkLocked(int staging, const std::string& id,
                                                  const std::string& path, int64_t offset,
                                                  int64_t total_size, bool overwrite,
                                                  const ReadFn& read_fn,
                                                  v1::UploadStatus* status_out);
  absl::Status Finish(int staging, const std::string& id, Meta& meta, bool overwrite);

  FileService& files_;
  Clock& clock_;
  absl::Mutex mu_;
  std::set<std::string> in_flight_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tidepool::supervisor
