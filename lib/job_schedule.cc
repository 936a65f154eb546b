#include "lib/job_schedule.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tidepool {
namespace {

constexpr size_t kMaxScheduleBytes = 256;
// Longer than the longest gap between two matches of any satisfiable cron expression
// (Feb 29 on a given weekday-or-date combination is at most 8 years away, e.g. 2096 -> 2104).
constexpr int kCronSearchDays = 8 * 366 + 1;
constexpr absl::string_view kWhitespace = " \t\n\r\v\f";

constexpr const char* kMonthNames[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr const char* kDayNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

// One cron field's value space.
struct FieldSpec {
  int number = 0;                      // 1-based position, for messages
  const char* name = "";               // for messages
  int min = 0;                         // smallest value
  int max = 0;                         // largest value accepted
  int star_max = 0;                    // upper end of `*` and `a/n`
  const char* const* names = nullptr;  // three-letter names of min, min+1, ...; or null
  int name_count = 0;
};

constexpr FieldSpec kFields[] = {
    {1, "minute", 0, 59, 59, nullptr, 0},       {2, "hour", 0, 23, 23, nullptr, 0},
    {3, "day-of-month", 1, 31, 31, nullptr, 0}, {4, "month", 1, 12, 12, kMonthNames, 12},
    {5, "day-of-week", 0, 7, 6, kDayNames, 7},
};

absl::Status FieldError(const FieldSpec& spec, absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("cron field ", spec.number, " (", spec.name, "): ", message));
}

bool AllDigits(absl::string_view s) {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

// Parses a non-negative decimal of at most 9 digits (no sign, no overflow); -1 otherwise.
int64_t ParseSmallNumber(absl::string_view s) {
  if (!AllDigits(s) || s.size() > 9) {
    return -1;
  }
  int64_t value = 0;
  for (char c : s) {
    value = value * 10 + (c - '0');
  }
  return value;
}

absl::StatusOr<int> ParseFieldValue(const FieldSpec& spec, absl::string_view token) {
  if (AllDigits(token)) {
    const int64_t value = ParseSmallNumber(token);
    if (value < spec.min || value > spec.max) {
      return FieldError(spec, absl::StrCat(token, " is out of range ", spec.min, "-", spec.max));
    }
    return static_cast<int>(value);
  }
  if (spec.names != nullptr) {
    for (int i = 0; i < spec.name_count; ++i) {
      if (absl::EqualsIgnoreCase(token, spec.names[i])) {
        return spec.min + i;
      }
    }
    return FieldError(spec, absl::StrCat("'", token, "' is not a number or a ",
                                         spec.number == 4 ? "month" : "weekday", " name"));
  }
  return FieldError(spec, absl::StrCat("'", token, "' is not a number"));
}

// Parses one comma-separated cron field into `bits` (bit i = value i; day-of-week 7 -> 0).
template <size_t N>
absl::Status ParseField(const FieldSpec& spec, absl::string_view field, std::bitset<N>& bits) {
  for (absl::string_view item : absl::StrSplit(field, ',')) {
    if (item.empty()) {
      return FieldError(spec, absl::StrCat("empty list item in '", field, "'"));
    }
    absl::string_view range = item;
    int step = 1;
    bool has_step = false;
    if (const size_t slash = item.find('/'); slash != absl::string_view::npos) {
      range = item.substr(0, slash);
      const absl::string_view step_text = item.substr(slash + 1);
      if (step_text.empty()) {
        return FieldError(spec, absl::StrCat("missing step after '/' in '", item, "'"));
      }
      const int max_step = spec.star_max - spec.min + 1;
      if (!AllDigits(step_text)) {
        return FieldError(spec, absl::StrCat("step '", step_text, "' is not a number"));
      }
      const int64_t value = ParseSmallNumber(step_text);
      if (value < 1 || value > max_step) {
        return FieldError(spec, absl::StrCat("step ", step_text, " is out of range 1-", max_step));
      }
      step = static_cast<int>(value);
      has_step = true;
    }
    if (range.empty()) {
      return FieldError(spec, absl::StrCat("missing value before '/' in '", item, "'"));
    }
    int low = 0;
    int high = 0;
    if (range == "*") {
      low = spec.min;
      high = spec.star_max;
    } else if (const size_t dash = range.find('-'); dash != absl::string_view::npos) {
      const absl::string_view first = range.substr(0, dash);
      const absl::string_view last = range.substr(dash + 1);
      if (first.empty() || last.empty()) {
        return FieldError(spec, absl::StrCat("incomplete range '", range, "'"));
      }
      absl::StatusOr<int> first_value = ParseFieldValue(spec, first);
      if (!first_value.ok()) {
        return first_value.status();
      }
      absl::StatusOr<int> last_value = ParseFieldValue(spec, last);
      if (!last_value.ok()) {
        return last_value.status();
      }
      low = *first_value;
      high = *last_value;
      if (low > high) {
        return FieldError(spec,
                          absl::StrCat("range '", range, "' is reversed (", low, " > ", high, ")"));
      }
    } else {
      absl::StatusOr<int> value = ParseFieldValue(spec, range);
      if (!value.ok()) {
        return value.status();
      }
      low = *value;
      high = has_step ? std::max(low, spec.star_max) : low;  // a/n means a-max/n
    }
    for (int v = low; v <= high; v += step) {
      bits.set(static_cast<size_t>(v % static_cast<int>(N)));  // only day-of-week 7 wraps
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Duration> ParseInterval(absl::string_view spec) {
  static constexpr char kUnits[] = {'d', 'h', 'm', 's'};
  static constexpr int64_t kUnitSeconds[] = {86400, 3600, 60, 1};
  int64_t total_seconds = 0;
  int next_unit = 0;  // index into kUnits of the smallest unit still allowed
  size_t pos = 0;
  while (pos < spec.size()) {
    const size_t digits_begin = pos;
    while (pos < spec.size() && absl::ascii_isdigit(static_cast<unsigned char>(spec[pos]))) {
      ++pos;
    }
    const absl::string_view digits = spec.substr(digits_begin, pos - digits_begin);
    if (digits.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("every: expected a number at '", spec.substr(pos), "' in '", spec, "'"));
    }
    if (pos == spec.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("every: '", digits, "' needs a unit (d, h, m or s)"));
    }
    const char unit = absl::ascii_tolower(static_cast<unsigned char>(spec[pos]));
    ++pos;
    int unit_index = -1;
    for (int i = 0; i < 4; ++i) {
      if (kUnits[i] == unit) {
        unit_index = i;
      }
    }
    if (unit_index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("every: unknown unit '",
                                                     spec.substr(pos - 1, 1), "' in '", spec,
                                                     "' (use d, h, m or s)"));
    }
    if (unit_index < next_unit) {
      return absl::InvalidArgumentError(absl::StrCat(
          "every: units in '", spec, "' must appear in the order d, h, m, s, each at most once"));
    }
    next_unit = unit_index + 1;
    const int64_t value = ParseSmallNumber(digits);
    if (value < 0) {
      return absl::InvalidArgumentError(absl::StrCat("every: number ", digits, " is too large"));
    }
    total_seconds += value * kUnitSeconds[unit_index];
  }
  if (total_seconds < 1 || total_seconds > int64_t{3650} * 86400) {
    return absl::InvalidArgumentError(
        absl::StrCat("every: interval '", spec, "' must be between 1s and 3650d"));
  }
  return absl::Seconds(total_seconds);
}

std::string FormatInterval(absl::Duration interval) {
  int64_t seconds = absl::ToInt64Seconds(interval);
  std::string out = "every ";
  static constexpr char kUnits[] = {'d', 'h', 'm', 's'};
  static constexpr int64_t kUnitSeconds[] = {86400, 3600, 60, 1};
  for (int i = 0; i < 4; ++i) {
    if (seconds >= kUnitSeconds[i]) {
      absl::StrAppend(&out, seconds / kUnitSeconds[i], absl::string_view(&kUnits[i], 1));
      seconds %= kUnitSeconds[i];
    }
  }
  return out;
}

// Reads exactly `count` digits at `pos`; -1 if they are not there.
int ReadDigits(absl::string_view s, size_t& pos, size_t count) {
  if (pos + count > s.size() || !AllDigits(s.substr(pos, count))) {
    return -1;
  }
  const int value = static_cast<int>(ParseSmallNumber(s.substr(pos, count)));
  pos += count;
  return value;
}

bool ReadChar(absl::string_view s, size_t& pos, char c) {
  if (pos < s.size() && absl::ascii_tolower(static_cast<unsigned char>(s[pos])) ==
                            absl::ascii_tolower(static_cast<unsigned char>(c))) {
    ++pos;
    return true;
  }
  return false;
}

struct AtTime {
  absl::CivilSecond civil;
  std::optional<absl::Duration> offset;
};

// "YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM|-HH:MM]".
absl::StatusOr<AtTime> ParseAtTime(absl::string_view s) {
  const absl::Status format_error = absl::InvalidArgumentError(absl::StrCat(
      "at: '", s,
      "' is not a date-time of the form YYYY-MM-DDTHH:MM[:SS] with an optional Z or +HH:MM"));
  size_t pos = 0;
  const int year = ReadDigits(s, pos, 4);
  if (year < 0 || !ReadChar(s, pos, '-')) {
    return format_error;
  }
  const int month = ReadDigits(s, pos, 2);
  if (month < 0 || !ReadChar(s, pos, '-')) {
    return format_error;
  }
  const int day = ReadDigits(s, pos, 2);
  if (day < 0 || !ReadChar(s, pos, 'T')) {
    return format_error;
  }
  const int hour = ReadDigits(s, pos, 2);
  if (hour < 0 || !ReadChar(s, pos, ':')) {
    return format_error;
  }
  const int minute = ReadDigits(s, pos, 2);
  if (minute < 0) {
    return format_error;
  }
  int second = 0;
  if (ReadChar(s, pos, ':')) {
    second = ReadDigits(s, pos, 2);
    if (second < 0) {
      return format_error;
    }
  }
  AtTime at;
  if (ReadChar(s, pos, 'Z')) {
    at.offset = absl::ZeroDuration();
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    const int sign = s[pos] == '-' ? -1 : 1;
    ++pos;
    const int offset_hours = ReadDigits(s, pos, 2);
    if (offset_hours < 0 || !ReadChar(s, pos, ':')) {
      return format_error;
    }
    const int offset_minutes = ReadDigits(s, pos, 2);
    if (offset_minutes < 0) {
      return format_error;
    }
    if (offset_hours > 23 || offset_minutes > 59) {
      return absl::InvalidArgumentError(
          absl::StrCat("at: offset in '", s, "' is out of range (-23:59 to +23:59)"));
    }
    at.offset = sign * (absl::Hours(offset_hours) + absl::Minutes(offset_minutes));
  }
  if (pos != s.size()) {
    return format_error;
  }
  at.civil = absl::CivilSecond(year, month, day, hour, minute, second);
  // CivilSecond normalises out-of-range fields (Feb 30 -> Mar 2); refuse those.
  if (at.civil.year() != year || at.civil.month() != month || at.civil.day() != day ||
      at.civil.hour() != hour || at.civil.minute() != minute || at.civil.second() != second) {
    return absl::InvalidArgumentError(
        absl::StrCat("at: '", s, "' is not a valid calendar date and time of day"));
  }
  return at;
}

std::string FormatAtTime(const absl::CivilSecond& civil,
                         const std::optional<absl::Duration>& offset) {
  std::string out = absl::StrFormat("at %04d-%02d-%02dT%02d:%02d", civil.year(), civil.month(),
                                    civil.day(), civil.hour(), civil.minute());
  if (civil.second() != 0) {
    absl::StrAppend(&out, absl::StrFormat(":%02d", civil.second()));
  }
  if (offset.has_value()) {
    if (*offset == absl::ZeroDuration()) {
      absl::StrAppend(&out, "Z");
    } else {
      const int64_t minutes = absl::ToInt64Minutes(absl::AbsDuration(*offset));
      absl::StrAppend(&out,
                      absl::StrFormat("%c%02d:%02d", *offset < absl::ZeroDuration() ? '-' : '+',
                                      minutes / 60, minutes % 60));
    }
  }
  return out;
}

// The instant a matching civil time runs at (file comment in job_schedule.h, "Time zones and
// DST"); nullopt if it is skipped. `fixed_time` selects the run-at-the-gap's-end rule.
std::optional<absl::Time> ResolveCivil(const absl::TimeZone& tz, const absl::CivilSecond& civil,
                                       bool fixed_time) {
  const absl::TimeZone::TimeInfo info = tz.At(civil);
  switch (info.kind) {
    case absl::TimeZone::TimeInfo::UNIQUE:
      return info.pre;
    case absl::TimeZone::TimeInfo::REPEATED:
      return info.pre;  // the earlier occurrence
    case absl::TimeZone::TimeInfo::SKIPPED:
      if (fixed_time) {
        return info.trans;  // the first instant after the gap
      }
      return std::nullopt;
  }
  return std::nullopt;
}

int CronWeekday(absl::CivilDay day) {
  const absl::Weekday weekday = absl::GetWeekday(day);
  return weekday == absl::Weekday::sunday ? 0 : static_cast<int>(weekday) + 1;
}

}  // namespace

absl::StatusOr<JobSchedule> JobSchedule::Parse(absl::string_view text) {
  if (text.size() > kMaxScheduleBytes) {
    return absl::InvalidArgumentError(absl::StrCat("schedule is too long (", text.size(),
                                                   " bytes; at most ", kMaxScheduleBytes, ")"));
  }
  const std::vector<absl::string_view> tokens =
      absl::StrSplit(text, absl::ByAnyChar(kWhitespace), absl::SkipEmpty());
  if (tokens.empty()) {
    return absl::InvalidArgumentError("schedule is empty");
  }
  JobSchedule schedule;
  const std::string keyword = absl::AsciiStrToLower(tokens[0]);

  if (keyword == "every") {
    if (tokens.size() != 2) {
      return absl::InvalidArgumentError(
          "every: expected exactly one interval such as 'every 30m' or 'every 1h30m'");
    }
    absl::StatusOr<absl::Duration> interval = ParseInterval(tokens[1]);
    if (!interval.ok()) {
      return interval.status();
    }
    schedule.kind_ = Kind::kEvery;
    schedule.interval_ = *interval;
    schedule.text_ = FormatInterval(*interval);
    return schedule;
  }

  if (keyword == "at") {
    if (tokens.size() != 2) {
      return absl::InvalidArgumentError(
          "at: expected exactly one date-time such as 'at 2026-06-01T09:00'");
    }
    absl::StatusOr<AtTime> at = ParseAtTime(tokens[1]);
    if (!at.ok()) {
      return at.status();
    }
    schedule.kind_ = Kind::kAt;
    schedule.at_civil_ = at->civil;
    schedule.at_offset_ = at->offset;
    schedule.text_ = FormatAtTime(at->civil, at->offset);
    return schedule;
  }

  std::vector<absl::string_view> fields = tokens;
  std::string macro_expansion;
  if (keyword[0] == '@') {
    if (tokens.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("cron macro ", keyword, " takes no further fields"));
    }
    if (keyword == "@reboot") {
      return absl::InvalidArgumentError(
          "@reboot is not supported: it runs at boot and has no next run time");
    }
    if (keyword == "@yearly" || keyword == "@annually") {
      macro_expansion = "0 0 1 1 *";
    } else if (keyword == "@monthly") {
      macro_expansion = "0 0 1 * *";
    } else if (keyword == "@weekly") {
      macro_expansion = "0 0 * * 0";
    } else if (keyword == "@daily" || keyword == "@midnight") {
      macro_expansion = "0 0 * * *";
    } else if (keyword == "@hourly") {
      macro_expansion = "0 * * * *";
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown cron macro '", tokens[0],
          "' (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"));
    }
    fields = absl::StrSplit(macro_expansion, ' ');
  }
  if (fields.size() != 5) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cron expression needs 5 fields (minute hour day-of-month month day-of-week), got ",
        fields.size()));
  }
  absl::Status status = ParseField(kFields[0], fields[0], schedule.minutes_);
  if (status.ok()) {
    status = ParseField(kFields[1], fields[1], schedule.hours_);
  }
  if (status.ok()) {
    status = ParseField(kFields[2], fields[2], schedule.days_of_month_);
  }
  if (status.ok()) {
    status = ParseField(kFields[3], fields[3], schedule.months_);
  }
  if (status.ok()) {
    status = ParseField(kFields[4], fields[4], schedule.days_of_week_);
  }
  if (!status.ok()) {
    return status;
  }
  schedule.kind_ = Kind::kCron;
  schedule.day_of_month_star_ = fields[2][0] == '*';
  schedule.day_of_week_star_ = fields[4][0] == '*';
  schedule.fixed_time_ = fields[0][0] != '*' && fields[1][0] != '*';
  schedule.text_ = macro_expansion.empty() ? absl::StrJoin(fields, " ") : keyword;
  return schedule;
}

JobSchedule& JobSchedule::set_anchor(absl::Time anchor) {
  anchor_ = anchor;
  return *this;
}

std::string JobSchedule::ToString() const { return text_; }

std::optional<absl::Time> JobSchedule::Next(absl::Time after, const absl::TimeZone& tz) const {
  switch (kind_) {
    case Kind::kAt: {
      std::optional<absl::Time> run;
      if (at_offset_.has_value()) {
        run = absl::FromCivil(at_civil_, absl::UTCTimeZone()) - *at_offset_;
      } else {
        run = ResolveCivil(tz, at_civil_, /*fixed_time=*/true);
      }
      if (run.has_value() && *run > after) {
        return run;
      }
      return std::nullopt;
    }
    case Kind::kEvery: {
      const absl::Duration since_anchor = after - anchor_;
      if (since_anchor == absl::InfiniteDuration() || since_anchor == -absl::InfiniteDuration()) {
        return std::nullopt;
      }
      absl::Duration remainder;
      int64_t periods = absl::IDivDuration(since_anchor, interval_, &remainder);
      if (remainder < absl::ZeroDuration()) {
        --periods;  // floor, not truncation, for `after` before the anchor
      }
      return anchor_ + (periods + 1) * interval_;
    }
    case Kind::kCron:
      return NextCron(after, tz);
  }
  return std::nullopt;
}

bool JobSchedule::DayMatches(absl::CivilDay day) const {
  const bool dom = days_of_month_[static_cast<size_t>(day.day())];
  const bool dow = days_of_week_[static_cast<size_t>(CronWeekday(day))];
  if (day_of_month_star_ || day_of_week_star_) {
    return dom && dow;
  }
  return dom || dow;  // Vixie: both restricted -> either one
}

std::optional<absl::Time> JobSchedule::NextCron(absl::Time after, const absl::TimeZone& tz) const {
  if (after == absl::InfiniteFuture() || after == absl::InfinitePast()) {
    return std::nullopt;
  }
  // Candidates are civil minutes after the civil minute of `after`, in ascending order. The
  // civil -> instant mapping (ResolveCivil) never decreases, so the first candidate whose
  // instant is after `after` is the answer; earlier candidates can still map to instants at or
  // before `after` when `after` lies in the second pass of a repeated hour.
  const absl::CivilMinute start = absl::CivilMinute(tz.At(after).cs) + 1;
  const absl::CivilDay first_day(start);
  const absl::CivilDay last_day = first_day + kCronSearchDays;
  absl::CivilDay day = first_day;
  while (day <= last_day) {
    if (!months_[static_cast<size_t>(day.month())]) {
      day = absl::CivilDay(absl::CivilMonth(day) + 1);
      continue;
    }
    if (DayMatches(day)) {
      const bool is_first_day = day == first_day;
      for (int hour = is_first_day ? start.hour() : 0; hour < 24; ++hour) {
        if (!hours_[static_cast<size_t>(hour)]) {
          continue;
        }
        const int first_minute = is_first_day && hour == start.hour() ? start.minute() : 0;
        for (int minute = first_minute; minute < 60; ++minute) {
          if (!minutes_[static_cast<size_t>(minute)]) {
            continue;
          }
          const std::optional<absl::Time> run = ResolveCivil(
              tz, absl::CivilSecond(day.year(), day.month(), day.day(), hour, minute, 0),
              fixed_time_);
          if (run.has_value() && *run > after) {
            return run;
          }
        }
      }
    }
    ++day;
  }
  return std::nullopt;
}

}  // namespace tidepool
