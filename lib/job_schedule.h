#pragma once

// Schedules of an agent tool's jobs: cron expressions, fixed intervals and one-shots, and the
// time each one next runs. The workspace supervisor reports a job's next run time with this and
// the scaler wakes a sleeping workspace shortly before it.
//
// Syntax (leading and trailing whitespace is ignored; at most 256 bytes):
//
//   cron    Five whitespace-separated fields, Vixie/cronie style:
//             minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC,
//             day-of-week 0-7 or SUN-SAT (0 and 7 are both Sunday).
//           Each field is a comma-separated list of items; an item is `*`, a value `a`, a range
//           `a-b` (a <= b), or one of those followed by a step `/n` (n >= 1, at most the size
//           of the field's range). `a/n` means `a-max/n`; for day-of-week `*` and `a/n` run to
//           6 (Saturday). Names are case-insensitive and allowed wherever a value is.
//           Macros: @yearly = @annually = "0 0 1 1 *", @monthly = "0 0 1 * *",
//           @weekly = "0 0 * * 0", @daily = @midnight = "0 0 * * *", @hourly = "0 * * * *".
//           @reboot is refused (it has no next run time).
//           Day rule (Vixie): if both day-of-month and day-of-week are restricted (neither field
//           starts with `*`), a day matches when EITHER matches; otherwise both must match.
//   every   "every <n><unit>[<n><unit>...]", units d, h, m, s, each at most once, largest first
//           ("every 30m", "every 1h30m", "every 90s"). The total must be between 1s and 3650d.
//           Runs at anchor + k * interval for integer k (see set_anchor). Intervals are absolute
//           durations: "every 1d" is 24 hours, so it moves by an hour of local time across a
//           DST change. Use cron for wall-clock schedules.
//   at      "at YYYY-MM-DDTHH:MM[:SS]" in the job's time zone, or with an explicit offset:
//           "at 2026-06-01T09:00:00Z", "at 2026-06-01T09:00+02:00". Runs once.
//
// Time zones and DST (all zone arithmetic goes through absl::TimeZone::At(CivilSecond)):
//   Cron schedules match civil (local) minutes in the zone passed to Next. Each matching civil
//   minute is turned into one instant as follows:
//   1. Repeated local times (fall-back, e.g. 02:30 on 2026-10-25 in Europe/Berlin): every job
//      runs once, at the first occurrence (the earlier UTC instant), never at the repeat. This
//      holds for wildcard jobs too: "*/15 * * * *" runs 02:00..02:45 once, during the first
//      pass, and then nothing until 03:00 (after the repeated hour).
//   2. Nonexistent local times (spring-forward gap, e.g. 02:30 on 2026-03-29 in Europe/Berlin):
//      - A fixed-time job — neither the minute nor the hour field starts with `*` (cronie's
//        definition, e.g. "30 2 * * *", "0,30 2 * * *", "30 1-5 * * *", @daily) — runs at the
//        end of the gap, i.e. the transition instant (03:00 local), like cronie. All its
//        minutes that fall into the gap collapse into that single run, and a match at the
//        gap's end itself is the same run, so nothing runs twice.
//      - A wildcard job — minute or hour field starts with `*` (e.g. "30 * * * *",
//        "*/15 * * * *", @hourly) — follows plain civil-time matching: the gap's minutes do not
//        exist, so they are skipped and no extra run is invented.
//   One-shots given in local civil time follow the fixed-time rules: a repeated time runs at
//   its first occurrence, a nonexistent one at the end of the gap. Intervals and one-shots with
//   an explicit offset ignore the zone.

#include <bitset>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace tidepool {

// One job's schedule (see the file comment for syntax and DST rules). A value type: cheap to
// copy, immutable after Parse except for set_anchor. Const methods are thread-safe.
class JobSchedule {
 public:
  enum class Kind { kCron, kEvery, kAt };

  // Parses `text`. Returns INVALID_ARGUMENT with a message naming the bad field or token, e.g.
  // "cron field 2 (hour): 24 is out of range 0-23".
  static absl::StatusOr<JobSchedule> Parse(absl::string_view text);

  // The first run strictly after `after`, with civil times evaluated in `tz`. Returns nullopt
  // when there is none: a one-shot at or before `after`, a cron expression with no match within
  // 8 years after `after` (e.g. "0 0 30 2 *"), or an infinite `after` for cron and intervals.
  // Cron searches skip non-matching months and days, so a call costs microseconds.
  std::optional<absl::Time> Next(absl::Time after, const absl::TimeZone& tz) const;

  // Sets the anchor of an interval schedule (e.g. the job's creation time); runs fall on
  // anchor + k * interval. The default anchor is the Unix epoch. No effect on other kinds.
  JobSchedule& set_anchor(absl::Time anchor);
  absl::Time anchor() const { return anchor_; }

  Kind kind() const { return kind_; }

  // Canonical text that Parse accepts and that yields the same schedule: cron fields joined by
  // single spaces as written ("0  9 * * mon-fri" -> "0 9 * * mon-fri"), macros lower-cased
  // ("@daily"), intervals decomposed into d/h/m/s ("every 90m" -> "every 1h30m"), one-shots as
  // "at YYYY-MM-DDTHH:MM[:SS]" (seconds only if non-zero) plus "Z" or "+HH:MM" if an offset was
  // given (a zero offset is written "Z").
  std::string ToString() const;

 private:
  JobSchedule() = default;

  std::optional<absl::Time> NextCron(absl::Time after, const absl::TimeZone& tz) const;
  bool DayMatches(absl::CivilDay day) const;

  Kind kind_ = Kind::kCron;
  std::string text_;

  // kCron. Bit i of each set is value i (days of month and months from 1; Sunday is 0).
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_of_month_;
  std::bitset<13> months_;
  std::bitset<7> days_of_week_;
  bool day_of_month_star_ = false;  // the field starts with '*'
  bool day_of_week_star_ = false;
  bool fixed_time_ = false;  // neither the minute nor the hour field starts with '*'

  // kEvery.
  absl::Duration interval_ = absl::ZeroDuration();
  absl::Time anchor_ = absl::UnixEpoch();

  // kAt.
  absl::CivilSecond at_civil_;
  std::optional<absl::Duration> at_offset_;  // east of UTC; nullopt: civil time in the zone
};

}  // namespace tidepool
