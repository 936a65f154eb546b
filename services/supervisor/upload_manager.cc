#include "services/supervisor/upload_manager.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lib/status_macros.h"

namespace tidepool::supervisor {
namespace {

constexpr size_t kChunkBuf = 64 * 1024;

bool ValidId(absl::string_view id) {
  if (id.empty() || id.size() > 64) {
    return false;
  }
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

std::string PartName(const std::string& id) { return id + ".part"; }
std::string MetaName(const std::string& id) { return id + ".meta"; }

absl::StatusOr<std::string> ReadSmallFile(int dirfd, const std::string& name) {
  ScopedFd fd(openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    return ErrnoToStatus(errno, "open", name);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return ErrnoToStatus(errno, "read", name);
    }
    if (n == 0) {
      break;
    }
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > 16384) {
      return absl::InternalError("upload metadata too large");
    }
  }
  return out;
}

int64_t PartSize(int staging, const std::string& id) {
  struct stat st;
  if (fstatat(staging, PartName(id).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
      !S_ISREG(st.st_mode)) {
    return 0;
  }
  return st.st_size;
}

}  // namespace

UploadManager::UploadManager(FileService& files, Clock& clock) : files_(files), clock_(clock) {}

absl::StatusOr<ScopedFd> UploadManager::OpenStaging() {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, files_.root());
  TP_RETURN_IF_ERROR(files_.MakeDirs(kStagingDir));
  return r->OpenBeneath(kStagingDir, O_PATH | O_DIRECTORY);
}

// Metadata: "<total>\n<complete 0|1>\n<last activity, unix ns>\n<path>" (the path last: it
// may hold any byte but NUL).
absl::StatusOr<UploadManager::Meta> UploadManager::ReadMeta(int staging, const std::string& id) {
  TP_ASSIGN_OR_RETURN(std::string raw, ReadSmallFile(staging, MetaName(id)));
  std::vector<std::string> parts = absl::StrSplit(raw, absl::MaxSplits('\n', 3));
  Meta meta;
  int64_t ns = 0;
  if (parts.size() != 4 || !absl::SimpleAtoi(parts[0], &meta.total_size) ||
      (parts[1] != "0" && parts[1] != "1") || !absl::SimpleAtoi(parts[2], &ns)) {
    return absl::InternalError(absl::StrCat("corrupt upload metadata for ", id));
  }
  meta.complete = parts[1] == "1";
  meta.last_activity = absl::FromUnixNanos(ns);
  meta.path = parts[3];
  return meta;
}

absl::Status UploadManager::WriteMeta(int staging, const std::string& id, const Meta& meta) {
  std::string tmp = MetaName(id) + ".tmp";
  std::string body = absl::StrCat(meta.total_size, "\n", meta.complete ? "1" : "0", "\n",
                                  absl::ToUnixNanos(meta.last_activity), "\n", meta.path);
  ScopedFd fd(
      openat(staging, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return ErrnoToStatus(errno, "write upload metadata", id);
  }
  if (write(fd.get(), body.data(), body.size()) != static_cast<ssize_t>(body.size()) ||
      fdatasync(fd.get()) != 0) {
    return ErrnoToStatus(errno, "write upload metadata", id);
  }
  if (renameat(staging, tmp.c_str(), staging, MetaName(id).c_str()) != 0) {
    return ErrnoToStatus(errno, "write upload metadata", id);
  }
  return absl::OkStatus();
}

v1::UploadStatus UploadManager::MakeStatus(int staging, const std::string& id, const Meta& meta) {
  v1::UploadStatus st;
  st.set_upload_id(id);
  st.set_path(meta.path);
  st.set_total_size(meta.total_size);
  st.set_complete(meta.complete);
  if (meta.complete) {
    st.set_received_bytes(meta.total_size);
    absl::StatusOr<v1::FileInfo> info = files_.Describe(meta.path);
    if (info.ok()) {
      *st.mutable_file() = *std::move(info);
    }
  } else {
    st.set_received_bytes(PartSize(staging, id));
  }
  return st;
}

absl::StatusOr<v1::UploadStatus> UploadManager::PutChunk(absl::string_view upload_id,
                                                         absl::string_view path, int64_t offset,
                                                         int64_t total_size, bool overwrite,
                                                         const ReadFn& read_fn,
                                                         v1::UploadStatus* status_out) {
  if (!ValidId(upload_id)) {
    return absl::InvalidArgumentError("upload_id must be 1-64 characters [A-Za-z0-9]");
  }
  if (offset < 0 || total_size < 0) {
    return absl::InvalidArgumentError("offset and total_size must not be negative");
  }
  TP_ASSIGN_OR_RETURN(std::string norm, NormalizePath(path));
  if (norm.empty()) {
    return absl::InvalidArgumentError("path must name a file, not the root");
  }
  std::string id(upload_id);
  TP_ASSIGN_OR_RETURN(ScopedFd staging, OpenStaging());
  {
    absl::MutexLock lock(&mu_);
    if (!in_flight_.insert(id).second) {
      if (status_out != nullptr) {
        absl::StatusOr<Meta> meta = ReadMeta(staging.get(), id);
        if (meta.ok()) {
          *status_out = MakeStatus(staging.get(), id, *meta);
        }
      }
      return absl::AbortedError("another chunk of this upload is in flight");
    }
  }
  absl::StatusOr<v1::UploadStatus> result =
      PutChunkLocked(staging.get(), id, norm, offset, total_size, overwrite, read_fn, status_out);
  absl::MutexLock lock(&mu_);
  in_flight_.erase(id);
  return result;
}

absl::StatusOr<v1::UploadStatus> UploadManager::PutChunkLocked(
    int staging, const std::string& id, const std::string& path, int64_t offset, int64_t total_size,
    bool overwrite, const ReadFn& read_fn, v1::UploadStatus* status_out) {
  Meta meta;
  absl::StatusOr<Meta> existing = ReadMeta(staging, id);
  if (existing.ok()) {
    meta = *std::move(existing);
    if (meta.path != path || meta.total_size != total_size) {
      return absl::InvalidArgumentError("path or total_size differ from the upload's first chunk");
    }
  } else if (absl::IsNotFound(existing.status())) {
    if (offset != 0) {
      if (status_out != nullptr) {
        v1::UploadStatus st;
        st.set_upload_id(id);
        st.set_path(path);
        st.set_total_size(total_size);
        *status_out = st;
      }
      return absl::AbortedError("unknown upload: the first chunk must have offset 0");
    }
    ScopedFd part(openat(staging, PartName(id).c_str(),
                         O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!part.valid()) {
      return ErrnoToStatus(errno, "create upload", id);
    }
    meta.path = path;
    meta.total_size = total_size;
    meta.last_activity = clock_.Now();
    TP_RETURN_IF_ERROR(WriteMeta(staging, id, meta));
  } else {
    return existing.status();
  }
  auto fill = [&] {
    if (status_out != nullptr) {
      *status_out = MakeStatus(staging, id, meta);
    }
  };
  if (meta.complete) {
    fill();
    if (offset == total_size) {
      return MakeStatus(staging, id, meta);
    }
    return absl::AbortedError("the upload is already complete");
  }
  int64_t received = PartSize(staging, id);
  if (offset != received) {
    fill();
    return absl::AbortedError(
        absl::StrCat("offset ", offset, " is not the received size ", received));
  }
  // Fail fast when the rest of the file cannot fit.
  if (files_.quota_bytes() > 0) {
    TP_ASSIGN_OR_RETURN(int64_t used, files_.UsedBytes());
    if (used + (total_size - received) > files_.quota_bytes()) {
      fill();
      return absl::ResourceExhaustedError("the upload would exceed the volume quota");
    }
  }
  ScopedFd part(openat(staging, PartName(id).c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!part.valid()) {
    return ErrnoToStatus(errno, "open upload", id);
  }
  std::string buf(kChunkBuf, '\0');
  int64_t pos = received;
  int64_t charged = 0;
  absl::Status err;
  for (;;) {
    ssize_t n = read_fn(buf.data(), buf.size());
    if (n == 0) {
      break;
    }
    if (n < 0) {
      err = absl::UnavailableError("reading the chunk body failed; resume from the status");
      break;
    }
    if (pos + n > total_size) {
      err = absl::InvalidArgumentError("the chunk runs past total_size");
      break;
    }
    absl::Status q = files_.Reserve(n);
    if (!q.ok()) {
      err = q;
      break;
    }
    charged += n;
    if (pwrite(part.get(), buf.data(), static_cast<size_t>(n), pos) != n) {
      err = ErrnoToStatus(errno, "write upload", id);
      break;
    }
    pos += n;
  }
  if (!err.ok() && !absl::IsUnavailable(err)) {
    // Discard the whole chunk so the upload stays at a consistent offset.
    if (ftruncate(part.get(), received) != 0) {
      files_.InvalidateUsage();
    }
    files_.Release(charged);
  }
  fdatasync(part.get());
  meta.last_activity = clock_.Now();
  absl::Status ms = WriteMeta(staging, id, meta);
  if (!err.ok()) {
    fill();
    return err;
  }
  TP_RETURN_IF_ERROR(ms);
  if (pos == total_size) {
    absl::Status fin = Finish(staging, id, meta, overwrite);
    if (!fin.ok()) {
      fill();
      return fin;
    }
  }
  return MakeStatus(staging, id, meta);
}

absl::Status UploadManager::Finish(int staging, const std::string& id, Meta& meta, bool overwrite) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, files_.root());
  if (files_.IsStamped(meta.path)) {
    return absl::FailedPreconditionError("the destination is a stamped file");
  }
  size_t slash = meta.path.rfind('/');
  if (slash != std::string::npos) {
    TP_RETURN_IF_ERROR(files_.MakeDirs(meta.path.substr(0, slash)));
  }
  TP_ASSIGN_OR_RETURN(ParentRef dest, r->ResolveParent(meta.path));
  struct stat st;
  if (fstatat(dest.dir.get(), dest.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!overwrite) {
      return absl::AlreadyExistsError(absl::StrCat("\"", meta.path, "\" exists"));
    }
    if (S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat("\"", meta.path, "\" is a directory"));
    }
  }
  if (renameat2(staging, PartName(id).c_str(), dest.dir.get(), dest.name.c_str(),
                overwrite ? 0 : RENAME_NOREPLACE) != 0) {
    return ErrnoToStatus(errno, "move upload into place", meta.path);
  }
  if (overwrite) {
    files_.InvalidateUsage();  // the replaced file's bytes were freed
  }
  meta.complete = true;
  meta.last_activity = clock_.Now();
  return WriteMeta(staging, id, meta);
}

absl::StatusOr<v1::UploadStatus> UploadManager::Status(absl::string_view upload_id) {
  if (!ValidId(upload_id)) {
    return absl::InvalidArgumentError("upload_id must be 1-64 characters [A-Za-z0-9]");
  }
  std::string id(upload_id);
  TP_ASSIGN_OR_RETURN(ScopedFd staging, OpenStaging());
  TP_ASSIGN_OR_RETURN(Meta meta, ReadMeta(staging.get(), id));
  return MakeStatus(staging.get(), id, meta);
}

absl::Status UploadManager::Abandon(absl::string_view upload_id) {
  if (!ValidId(upload_id)) {
    return absl::InvalidArgumentError("upload_id must be 1-64 characters [A-Za-z0-9]");
  }
  std::string id(upload_id);
  TP_ASSIGN_OR_RETURN(ScopedFd staging, OpenStaging());
  absl::MutexLock lock(&mu_);
  if (in_flight_.count(id) != 0) {
    return absl::AbortedError("a chunk of this upload is in flight");
  }
  bool found = unlinkat(staging.get(), MetaName(id).c_str(), 0) == 0;
  found = (unlinkat(staging.get(), PartName(id).c_str(), 0) == 0) || found;
  if (!found) {
    return absl::NotFoundError(absl::StrCat("no upload ", id));
  }
  files_.InvalidateUsage();
  return absl::OkStatus();
}

absl::StatusOr<int> UploadManager::PurgeOlderThan(absl::Duration age) {
  TP_ASSIGN_OR_RETURN(ScopedFd staging, OpenStaging());
  TP_ASSIGN_OR_RETURN(ScopedFd dir, [&]() -> absl::StatusOr<ScopedFd> {
    ScopedFd fd(openat(staging.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid()) {
      return ErrnoToStatus(errno, "open", kStagingDir);
    }
    return fd;
  }());
  std::vector<std::string> ids;
  {
    DIR* d = fdopendir(dir.Release());
    if (d == nullptr) {
      return ErrnoToStatus(errno, "read", kStagingDir);
    }
    while (struct dirent* e = readdir(d)) {
      absl::string_view n(e->d_name);
      if (absl::ConsumeSuffix(&n, ".meta") || absl::ConsumeSuffix(&n, ".part")) {
        ids.emplace_back(n);
      }
    }
    closedir(d);
  }
  absl::Time cutoff = clock_.Now() - age;
  int purged = 0;
  absl::MutexLock lock(&mu_);
  for (const std::string& id : ids) {
    if (in_flight_.count(id) != 0) {
      continue;
    }
    absl::StatusOr<Meta> meta = ReadMeta(staging.get(), id);
    if (meta.ok() && meta->last_activity >= cutoff) {
      continue;
    }
    bool removed = unlinkat(staging.get(), MetaName(id).c_str(), 0) == 0;
    removed = (unlinkat(staging.get(), PartName(id).c_str(), 0) == 0) || removed;
    if (removed) {
      ++purged;
    }
  }
  if (purged > 0) {
    files_.InvalidateUsage();
  }
  return purged;
}

}  // namespace tidepool::supervisor
