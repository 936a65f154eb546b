#pragma once

// Hard disk quotas for the local runtime: each workspace volume is its own ext4 file system in
// a sparse image file of the quota's size, loop-mounted (nosuid, nodev) at the volume
// directory. A write past the quota fails with ENOSPC inside the sandbox, whoever makes it
// (the tool, the shell, the file API). Needs root and loop devices; ImageVolumesSupported()
// says whether this host has them (the runtime then falls back to the file API's soft quota).

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tidepool::provisioner {

// True when this process can make, mount and grow image volumes: root, /dev/loop-control,
// mkfs.ext4, mount, umount, e2fsck and resize2fs.
bool ImageVolumesSupported();

// Makes `image` (a sparse file of `bytes`, formatted ext4 with no reserved blocks, root dir
// owned by `uid`:`gid`) if it does not exist, and mounts it at `mount_dir` unless something
// already is. An image smaller than `bytes` (the quota was raised) is grown to it before it is
// mounted; one already mounted is unmounted for that first when `may_remount` (nothing runs on
// the volume) and the unmount succeeds, else it grows at a later call. A larger image is kept
// as it is (shrinking could lose data). FAILED_PRECONDITION if `mount_dir` holds files but is not yet backed by an
// image (a volume made before quotas were on stays as it is), UNAVAILABLE if a tool fails
// (its message included), INVALID_ARGUMENT for a quota under 16 MiB.
absl::Status EnsureImageVolume(const std::string& image, const std::string& mount_dir,
                               int64_t bytes, uint32_t uid, uint32_t gid, bool may_remount);

// Unmounts `mount_dir` if it is a mount point and removes `image`. Missing is fine.
absl::Status ReleaseImageVolume(const std::string& image, const std::string& mount_dir);

// Whether `dir` is a mount point (its device differs from its parent's).
bool IsMountPoint(const std::string& dir);

// The bytes in use on the file system mounted at `dir` (statvfs), which is what counts against
// the quota.
absl::StatusOr<int64_t> MountedBytesUsed(const std::string& dir);

}  // namespace tidepool::provisioner
