// JobSchedule: parsing of cron / every / at schedules and the next run time, above all across
// DST changes (the rules are in lib/job_schedule.h). All expected instants are written in UTC.
#include "lib/job_schedule.h"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace tidepool {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

absl::Time Utc(int year, int month, int day, int hour, int minute, int second = 0) {
  return absl::FromCivil(absl::CivilSecond(year, month, day, hour, minute, second),
                         absl::UTCTimeZone());
}

absl::TimeZone Zone(const std::string& name) {
  absl::TimeZone tz;
  EXPECT_TRUE(absl::LoadTimeZone(name, &tz)) << name;
  return tz;
}

// The first `count` runs of `text` after `after` in `tz` (fewer if the schedule ends).
std::vector<absl::Time> Runs(absl::string_view text, const absl::TimeZone& tz, absl::Time after,
                             int count) {
  absl::StatusOr<JobSchedule> schedule = JobSchedule::Parse(text);
  EXPECT_THAT(schedule, IsOk()) << text;
  std::vector<absl::Time> runs;
  if (!schedule.ok()) {
    return runs;
  }
  for (int i = 0; i < count; ++i) {
    std::optional<absl::Time> next = schedule->Next(after, tz);
    if (!next.has_value()) {
      break;
    }
    EXPECT_GT(*next, after) << text;
    runs.push_back(*next);
    after = *next;
  }
  return runs;
}

std::optional<absl::Time> NextRun(absl::string_view text, const absl::TimeZone& tz,
                                  absl::Time after) {
  absl::StatusOr<JobSchedule> schedule = JobSchedule::Parse(text);
  EXPECT_THAT(schedule, IsOk()) << text;
  if (!schedule.ok()) {
    return std::nullopt;
  }
  return schedule->Next(after, tz);
}

TEST(JobScheduleTest, ParsesEverySyntaxFormToCanonicalText) {
  struct Case {
    std::string text;
    JobSchedule::Kind kind = JobSchedule::Kind::kCron;
    std::string canonical;
  };
  const std::vector<Case> cases = {
      {"0 9 * * *", JobSchedule::Kind::kCron, "0 9 * * *"},
      {"  0   9\t* *  *\n", JobSchedule::Kind::kCron, "0 9 * * *"},
      {"*/15 * * * *", JobSchedule::Kind::kCron, "*/15 * * * *"},
      {"0-30/10 9-17 * * *", JobSchedule::Kind::kCron, "0-30/10 9-17 * * *"},
      {"5/20 * * * *", JobSchedule::Kind::kCron, "5/20 * * * *"},
      {"1,2-4/2,59 0,12 1,15 * *", JobSchedule::Kind::kCron, "1,2-4/2,59 0,12 1,15 * *"},
      {"0 8 * JAN-mar,Dec mon-FRI,sun", JobSchedule::Kind::kCron, "0 8 * JAN-mar,Dec mon-FRI,sun"},
      {"0 0 * * 7", JobSchedule::Kind::kCron, "0 0 * * 7"},
      {"0 0 * * 0-7/2", JobSchedule::Kind::kCron, "0 0 * * 0-7/2"},
      {"@yearly", JobSchedule::Kind::kCron, "@yearly"},
      {"@Annually", JobSchedule::Kind::kCron, "@annually"},
      {"@monthly", JobSchedule::Kind::kCron, "@monthly"},
      {"@weekly", JobSchedule::Kind::kCron, "@weekly"},
      {"@DAILY", JobSchedule::Kind::kCron, "@daily"},
      {"@midnight", JobSchedule::Kind::kCron, "@midnight"},
      {"@hourly", JobSchedule::Kind::kCron, "@hourly"},
      {"every 30m", JobSchedule::Kind::kEvery, "every 30m"},
      {"every 2h", JobSchedule::Kind::kEvery, "every 2h"},
      {"every 1d", JobSchedule::Kind::kEvery, "every 1d"},
      {"every 90s", JobSchedule::Kind::kEvery, "every 1m30s"},
      {"EVERY 1h30m", JobSchedule::Kind::kEvery, "every 1h30m"},
      {"every 90m", JobSchedule::Kind::kEvery, "every 1h30m"},
      {"every 1d2h3m4s", JobSchedule::Kind::kEvery, "every 1d2h3m4s"},
      {"at 2026-06-01T09:00", JobSchedule::Kind::kAt, "at 2026-06-01T09:00"},
      {"at 2026-06-01T09:00:00Z", JobSchedule::Kind::kAt, "at 2026-06-01T09:00Z"},
      {"at 2026-06-01T09:00:15+00:00", JobSchedule::Kind::kAt, "at 2026-06-01T09:00:15Z"},
      {"at 2026-06-01T09:00+02:00", JobSchedule::Kind::kAt, "at 2026-06-01T09:00+02:00"},
      {"At 2026-06-01t09:00-04:30", JobSchedule::Kind::kAt, "at 2026-06-01T09:00-04:30"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<JobSchedule> schedule = JobSchedule::Parse(c.text);
    ASSERT_THAT(schedule, IsOk()) << c.text;
    EXPECT_EQ(schedule->kind(), c.kind) << c.text;
    EXPECT_EQ(schedule->ToString(), c.canonical) << c.text;
    // The canonical text parses back to itself.
    absl::StatusOr<JobSchedule> again = JobSchedule::Parse(schedule->ToString());
    ASSERT_THAT(again, IsOk()) << c.canonical;
    EXPECT_EQ(again->ToString(), c.canonical);
  }
}

TEST(JobScheduleTest, RejectsBadInputWithAMessageNamingTheProblem) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", "schedule is empty"},
      {" \t ", "schedule is empty"},
      {"0 24 * * *", "cron field 2 (hour): 24 is out of range 0-23"},
      {"60 * * * *", "cron field 1 (minute): 60 is out of range 0-59"},
      {"0 0 0 * *", "cron field 3 (day-of-month): 0 is out of range 1-31"},
      {"0 0 32 * *", "cron field 3 (day-of-month): 32 is out of range 1-31"},
      {"0 0 * 13 *", "cron field 4 (month): 13 is out of range 1-12"},
      {"0 0 * * 8", "cron field 5 (day-of-week): 8 is out of range 0-7"},
      {"0 0 * * 99999999999", "cron field 5 (day-of-week): 99999999999 is out of range 0-7"},
      {"0 0 * *", "needs 5 fields (minute hour day-of-month month day-of-week), got 4"},
      {"0 0 0 * * * *", "got 7"},
      {"0 0 * * * 2026", "got 6"},
      {"5-3 * * * *", "cron field 1 (minute): range '5-3' is reversed"},
      {"0 0 * * SAT-SUN", "cron field 5 (day-of-week): range 'SAT-SUN' is reversed"},
      {"*/0 * * * *", "cron field 1 (minute): step 0 is out of range 1-60"},
      {"0 0-23/0 * * *", "cron field 2 (hour): step 0 is out of range 1-24"},
      {"*/61 * * * *", "cron field 1 (minute): step 61 is out of range 1-60"},
      {"*/x * * * *", "cron field 1 (minute): step 'x' is not a number"},
      {"*/ * * * *", "cron field 1 (minute): missing step after '/'"},
      {"/5 * * * *", "cron field 1 (minute): missing value before '/'"},
      {"1-/2 * * * *", "cron field 1 (minute): incomplete range '1-'"},
      {"0 0 * * -1", "cron field 5 (day-of-week): incomplete range '-1'"},
      {"1,,2 * * * *", "cron field 1 (minute): empty list item in '1,,2'"},
      {"0 1, * * *", "cron field 2 (hour): empty list item in '1,'"},
      {"0 ,1 * * *", "cron field 2 (hour): empty list item in ',1'"},
      {"abc * * * *", "cron field 1 (minute): 'abc' is not a number"},
      {"jan * * * *", "cron field 1 (minute): 'jan' is not a number"},
      {"0 0 * foo *", "cron field 4 (month): 'foo' is not a number or a month name"},
      {"0 0 * * funday", "cron field 5 (day-of-week): 'funday' is not a number or a weekday name"},
      {"0 0 * mon *", "cron field 4 (month): 'mon' is not a number or a month name"},
      {"0 0 * * 1.5", "cron field 5 (day-of-week): '1.5' is not a number"},
      {"@reboot", "@reboot is not supported"},
      {"@REBOOT", "@reboot is not supported"},
      {"@fortnightly", "unknown cron macro '@fortnightly'"},
      {"@daily 5", "cron macro @daily takes no further fields"},
      {"0 0 * * *" + std::string(252, ' '), "schedule is too long (261 bytes; at most 256)"},
      {"every", "every: expected exactly one interval"},
      {"every 1h 30m", "every: expected exactly one interval"},
      {"every 0m", "every: interval '0m' must be between 1s and 3650d"},
      {"every 3651d", "every: interval '3651d' must be between 1s and 3650d"},
      {"every 5x", "every: unknown unit 'x'"},
      {"every 5", "every: '5' needs a unit (d, h, m or s)"},
      {"every h", "every: expected a number at 'h'"},
      {"every -5m", "every: expected a number at '-5m'"},
      {"every 30m1h", "must appear in the order d, h, m, s"},
      {"every 1h1h", "must appear in the order d, h, m, s"},
      {"every 9999999999s", "every: number 9999999999 is too large"},
      {"at", "at: expected exactly one date-time"},
      {"at 2026-06-01 09:00", "at: expected exactly one date-time"},
      {"at tomorrow", "at: 'tomorrow' is not a date-time of the form YYYY-MM-DDTHH:MM[:SS]"},
      {"at 2026-06-01T9:00", "is not a date-time of the form"},
      {"at 2026-06-01T09:00+2", "is not a date-time of the form"},
      {"at 2026-06-01T09:00Zjunk", "is not a date-time of the form"},
      {"at 2026-02-30T09:00", "at: '2026-02-30T09:00' is not a valid calendar date and time"},
      {"at 2026-06-01T24:00", "is not a valid calendar date and time"},
      {"at 2026-06-01T09:60", "is not a valid calendar date and time"},
      {"at 2026-06-01T09:00+24:00", "at: offset in '2026-06-01T09:00+24:00' is out of range"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(JobSchedule::Parse(c.text),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.text;
  }
  // Exactly at the limit is fine.
  EXPECT_THAT(JobSchedule::Parse("0 0 * * *" + std::string(247, ' ')), IsOk());
}

TEST(JobScheduleTest, NextIsStrictlyAfterTheGivenTime) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_THAT(NextRun("0 9 * * *", utc, Utc(2026, 6, 1, 8, 59, 59)),
              Optional(Utc(2026, 6, 1, 9, 0)));
  EXPECT_THAT(NextRun("0 9 * * *", utc, Utc(2026, 6, 1, 9, 0)), Optional(Utc(2026, 6, 2, 9, 0)));
  EXPECT_THAT(NextRun("0 9 * * *", utc, Utc(2026, 6, 1, 9, 0, 30)),
              Optional(Utc(2026, 6, 2, 9, 0)));
  EXPECT_THAT(NextRun("* * * * *", utc, Utc(2026, 12, 31, 23, 59, 59)),
              Optional(Utc(2027, 1, 1, 0, 0)));
}

TEST(JobScheduleTest, StepsRangesAndListsSelectTheExpectedMinutes) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  const absl::Time after = Utc(2026, 6, 1, 9, 59);
  EXPECT_THAT(Runs("*/15 * * * *", utc, after, 5),
              ElementsAre(Utc(2026, 6, 1, 10, 0), Utc(2026, 6, 1, 10, 15), Utc(2026, 6, 1, 10, 30),
                          Utc(2026, 6, 1, 10, 45), Utc(2026, 6, 1, 11, 0)));
  // a/n means a-max/n.
  EXPECT_THAT(Runs("5/20 * * * *", utc, after, 4),
              ElementsAre(Utc(2026, 6, 1, 10, 5), Utc(2026, 6, 1, 10, 25), Utc(2026, 6, 1, 10, 45),
                          Utc(2026, 6, 1, 11, 5)));
  EXPECT_THAT(Runs("0-30/10 10 * * *", utc, after, 5),
              ElementsAre(Utc(2026, 6, 1, 10, 0), Utc(2026, 6, 1, 10, 10), Utc(2026, 6, 1, 10, 20),
                          Utc(2026, 6, 1, 10, 30), Utc(2026, 6, 2, 10, 0)));
  EXPECT_THAT(Runs("1,2-6/2,59 10 * * *", utc, after, 5),
              ElementsAre(Utc(2026, 6, 1, 10, 1), Utc(2026, 6, 1, 10, 2), Utc(2026, 6, 1, 10, 4),
                          Utc(2026, 6, 1, 10, 6), Utc(2026, 6, 1, 10, 59)));
  EXPECT_THAT(Runs("0 */8 * * *", utc, after, 3),
              ElementsAre(Utc(2026, 6, 1, 16, 0), Utc(2026, 6, 2, 0, 0), Utc(2026, 6, 2, 8, 0)));
}

TEST(JobScheduleTest, DayOfMonth31SkipsShortMonths) {
  EXPECT_THAT(Runs("0 0 31 * *", absl::UTCTimeZone(), Utc(2026, 1, 31, 0, 0), 4),
              ElementsAre(Utc(2026, 3, 31, 0, 0), Utc(2026, 5, 31, 0, 0), Utc(2026, 7, 31, 0, 0),
                          Utc(2026, 8, 31, 0, 0)));
}

TEST(JobScheduleTest, February29WaitsForTheNextLeapYear) {
  EXPECT_THAT(Runs("0 0 29 2 *", absl::UTCTimeZone(), Utc(2026, 1, 1, 0, 0), 2),
              ElementsAre(Utc(2028, 2, 29, 0, 0), Utc(2032, 2, 29, 0, 0)));
  // 2100 is not a leap year: the longest wait, almost 8 years, is still found.
  EXPECT_THAT(NextRun("0 0 29 2 *", absl::UTCTimeZone(), Utc(2096, 3, 1, 0, 0)),
              Optional(Utc(2104, 2, 29, 0, 0)));
}

TEST(JobScheduleTest, RestrictedDayOfMonthAndDayOfWeekMatchEither) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  // 2026-01-02 is a Friday, 2026-01-13 a Tuesday: the 13th OR any Friday.
  EXPECT_THAT(Runs("0 0 13 * fri", utc, Utc(2026, 1, 1, 0, 0), 4),
              ElementsAre(Utc(2026, 1, 2, 0, 0), Utc(2026, 1, 9, 0, 0), Utc(2026, 1, 13, 0, 0),
                          Utc(2026, 1, 16, 0, 0)));
  // A day-of-month field starting with '*' is unrestricted: odd days AND Fridays.
  EXPECT_THAT(Runs("0 0 */2 * fri", utc, Utc(2026, 1, 1, 0, 0), 4),
              ElementsAre(Utc(2026, 1, 9, 0, 0), Utc(2026, 1, 23, 0, 0), Utc(2026, 2, 13, 0, 0),
                          Utc(2026, 2, 27, 0, 0)));
  // Only one restricted: that one decides.
  EXPECT_THAT(Runs("0 0 * * fri", utc, Utc(2026, 1, 1, 0, 0), 2),
              ElementsAre(Utc(2026, 1, 2, 0, 0), Utc(2026, 1, 9, 0, 0)));
  EXPECT_THAT(Runs("0 0 13 * *", utc, Utc(2026, 1, 1, 0, 0), 2),
              ElementsAre(Utc(2026, 1, 13, 0, 0), Utc(2026, 2, 13, 0, 0)));
}

TEST(JobScheduleTest, DayOfWeekSevenIsSunday) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  const absl::Time after = Utc(2026, 1, 1, 0, 0);  // a Thursday
  const std::vector<absl::Time> sundays = {Utc(2026, 1, 4, 12, 0), Utc(2026, 1, 11, 12, 0)};
  EXPECT_EQ(Runs("0 12 * * 7", utc, after, 2), sundays);
  EXPECT_EQ(Runs("0 12 * * 0", utc, after, 2), sundays);
  EXPECT_EQ(Runs("0 12 * * SUN", utc, after, 2), sundays);
  EXPECT_THAT(Runs("0 12 * * 5-7", utc, after, 4),
              ElementsAre(Utc(2026, 1, 2, 12, 0), Utc(2026, 1, 3, 12, 0), Utc(2026, 1, 4, 12, 0),
                          Utc(2026, 1, 9, 12, 0)));
}

TEST(JobScheduleTest, MonthAndWeekdayNamesAreCaseInsensitive) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_THAT(Runs("0 0 1 jan-MAR *", utc, Utc(2026, 1, 1, 0, 0), 3),
              ElementsAre(Utc(2026, 2, 1, 0, 0), Utc(2026, 3, 1, 0, 0), Utc(2027, 1, 1, 0, 0)));
  // From Saturday 2026-01-03 the next weekday is Monday the 5th.
  EXPECT_THAT(Runs("0 8 * * Mon-fri", utc, Utc(2026, 1, 3, 0, 0), 2),
              ElementsAre(Utc(2026, 1, 5, 8, 0), Utc(2026, 1, 6, 8, 0)));
}

TEST(JobScheduleTest, MacrosExpandToTheirCronExpressions) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  const absl::Time after = Utc(2026, 1, 1, 10, 30);  // a Thursday
  EXPECT_THAT(NextRun("@yearly", utc, after), Optional(Utc(2027, 1, 1, 0, 0)));
  EXPECT_THAT(NextRun("@annually", utc, after), Optional(Utc(2027, 1, 1, 0, 0)));
  EXPECT_THAT(NextRun("@monthly", utc, after), Optional(Utc(2026, 2, 1, 0, 0)));
  EXPECT_THAT(NextRun("@weekly", utc, after), Optional(Utc(2026, 1, 4, 0, 0)));
  EXPECT_THAT(NextRun("@daily", utc, after), Optional(Utc(2026, 1, 2, 0, 0)));
  EXPECT_THAT(NextRun("@midnight", utc, after), Optional(Utc(2026, 1, 2, 0, 0)));
  EXPECT_THAT(NextRun("@hourly", utc, after), Optional(Utc(2026, 1, 1, 11, 0)));
}

TEST(JobScheduleTest, DailyJobInBerlinKeepsLocalTimeAcrossBothDstChanges) {
  const absl::TimeZone berlin = Zone("Europe/Berlin");
  // Spring forward on 2026-03-29: 09:00 CET = 08:00Z, then 09:00 CEST = 07:00Z.
  EXPECT_THAT(Runs("0 9 * * *", berlin, Utc(2026, 3, 27, 12, 0), 3),
              ElementsAre(Utc(2026, 3, 28, 8, 0), Utc(2026, 3, 29, 7, 0), Utc(2026, 3, 30, 7, 0)));
  // Fall back on 2026-10-25: 09:00 CEST = 07:00Z, then 09:00 CET = 08:00Z.
  EXPECT_THAT(
      Runs("0 9 * * *", berlin, Utc(2026, 10, 23, 12, 0), 3),
      ElementsAre(Utc(2026, 10, 24, 7, 0), Utc(2026, 10, 25, 8, 0), Utc(2026, 10, 26, 8, 0)));
}

TEST(JobScheduleTest, FixedTimeInTheSpringGapRunsOnceAtTheGapsEnd) {
  const absl::TimeZone berlin = Zone("Europe/Berlin");
  // 02:30 does not exist on 2026-03-29 (02:00 CET -> 03:00 CEST at 01:00Z): run at 01:00Z.
  EXPECT_THAT(
      Runs("30 2 * * *", berlin, Utc(2026, 3, 27, 12, 0), 3),
      ElementsAre(Utc(2026, 3, 28, 1, 30), Utc(2026, 3, 29, 1, 0), Utc(2026, 3, 30, 0, 30)));
  // Every matching minute inside the gap collapses into that one run.
  EXPECT_THAT(Runs("0,30 2 * * *", berlin, Utc(2026, 3, 28, 12, 0), 3),
              ElementsAre(Utc(2026, 3, 29, 1, 0), Utc(2026, 3, 30, 0, 0), Utc(2026, 3, 30, 0, 30)));
  // Fixed-time means neither minute nor hour starts with '*' (cronie), so ranges count too.
  EXPECT_THAT(
      Runs("30 1-3 * * *", berlin, Utc(2026, 3, 28, 12, 0), 3),
      ElementsAre(Utc(2026, 3, 29, 0, 30), Utc(2026, 3, 29, 1, 0), Utc(2026, 3, 29, 1, 30)));
  // From just before the gap, and not again from the gap's end.
  EXPECT_THAT(NextRun("30 2 * * *", berlin, Utc(2026, 3, 29, 0, 59, 59)),
              Optional(Utc(2026, 3, 29, 1, 0)));
  EXPECT_THAT(NextRun("30 2 * * *", berlin, Utc(2026, 3, 29, 1, 0)),
              Optional(Utc(2026, 3, 30, 0, 30)));
}

TEST(JobScheduleTest, RepeatedTimeInTheAutumnRunsOnceAtTheFirstOccurrence) {
  const absl::TimeZone berlin = Zone("Europe/Berlin");
  // 02:30 occurs twice on 2026-10-25 (00:30Z in CEST, 01:30Z in CET): only the first runs.
  EXPECT_THAT(
      Runs("30 2 * * *", berlin, Utc(2026, 10, 23, 12, 0), 3),
      ElementsAre(Utc(2026, 10, 24, 0, 30), Utc(2026, 10, 25, 0, 30), Utc(2026, 10, 26, 1, 30)));
  // Asked during the repeated hour (02:10 CET, second pass), the next run is tomorrow.
  EXPECT_THAT(NextRun("30 2 * * *", berlin, Utc(2026, 10, 25, 1, 10)),
              Optional(Utc(2026, 10, 26, 1, 30)));
  // Asked during the first pass, before 02:30 CEST.
  EXPECT_THAT(NextRun("30 2 * * *", berlin, Utc(2026, 10, 25, 0, 10)),
              Optional(Utc(2026, 10, 25, 0, 30)));
}

TEST(JobScheduleTest, HourlyJobsSkipTheGapAndDoNotRepeatTheRepeatedHour) {
  const absl::TimeZone berlin = Zone("Europe/Berlin");
  // Spring: 00:30 CET, 01:30 CET, (02:30 does not exist), 03:30 CEST, 04:30 CEST. No run is
  // invented at the gap's end (01:00Z).
  EXPECT_THAT(Runs("30 * * * *", berlin, Utc(2026, 3, 28, 23, 0), 4),
              ElementsAre(Utc(2026, 3, 28, 23, 30), Utc(2026, 3, 29, 0, 30),
                          Utc(2026, 3, 29, 1, 30), Utc(2026, 3, 29, 2, 30)));
  // Autumn: 00:30 CEST, 01:30 CEST, 02:30 CEST, (02:30 CET is a repeat), 03:30 CET.
  EXPECT_THAT(Runs("30 * * * *", berlin, Utc(2026, 10, 24, 22, 0), 4),
              ElementsAre(Utc(2026, 10, 24, 22, 30), Utc(2026, 10, 24, 23, 30),
                          Utc(2026, 10, 25, 0, 30), Utc(2026, 10, 25, 2, 30)));
  // Quarter-hourly: the repeated 02:00-02:45 runs once; 03:00 CET follows 02:45 CEST.
  EXPECT_THAT(
      Runs("*/15 * * * *", berlin, Utc(2026, 10, 25, 0, 40), 3),
      ElementsAre(Utc(2026, 10, 25, 0, 45), Utc(2026, 10, 25, 2, 0), Utc(2026, 10, 25, 2, 15)));
  // A wildcard-minute job with a fixed hour inside the gap does not run that day.
  EXPECT_THAT(NextRun("*/30 2 * * *", berlin, Utc(2026, 3, 28, 12, 0)),
              Optional(Utc(2026, 3, 30, 0, 0)));
}

TEST(JobScheduleTest, NewYorkGapRunsAtTheGapsEnd) {
  const absl::TimeZone new_york = Zone("America/New_York");
  // 2026-03-08: 02:00 EST -> 03:00 EDT at 07:00Z.
  EXPECT_THAT(Runs("30 2 * * *", new_york, Utc(2026, 3, 7, 12, 0), 3),
              ElementsAre(Utc(2026, 3, 8, 7, 0), Utc(2026, 3, 9, 6, 30), Utc(2026, 3, 10, 6, 30)));
}

TEST(JobScheduleTest, LordHoweHalfHourShiftFollowsBothRules) {
  const absl::TimeZone lord_howe = Zone("Australia/Lord_Howe");
  // 2026-10-04: 02:00 +10:30 -> 02:30 +11:00 at 15:30Z the day before; 02:15 runs at 02:30.
  EXPECT_THAT(Runs("15 2 * * *", lord_howe, Utc(2026, 10, 3, 0, 0), 2),
              ElementsAre(Utc(2026, 10, 3, 15, 30), Utc(2026, 10, 4, 15, 15)));
  // 2026-04-05: 02:00 +11:00 -> 01:30 +10:30 at 15:00Z; 01:45 runs once, at 14:45Z.
  EXPECT_THAT(Runs("45 1 * * *", lord_howe, Utc(2026, 4, 4, 0, 0), 2),
              ElementsAre(Utc(2026, 4, 4, 14, 45), Utc(2026, 4, 5, 15, 15)));
}

TEST(JobScheduleTest, KolkataHalfHourOffset) {
  const absl::TimeZone kolkata = Zone("Asia/Kolkata");
  EXPECT_THAT(Runs("0 9 * * *", kolkata, Utc(2026, 6, 1, 0, 0), 2),
              ElementsAre(Utc(2026, 6, 1, 3, 30), Utc(2026, 6, 2, 3, 30)));
}

TEST(JobScheduleTest, EveryRunsOnTheAnchorGrid) {
  absl::StatusOr<JobSchedule> schedule = JobSchedule::Parse("every 2h");
  ASSERT_THAT(schedule, IsOk());
  const absl::TimeZone berlin = Zone("Europe/Berlin");
  schedule->set_anchor(Utc(2026, 1, 1, 0, 10));
  EXPECT_THAT(schedule->Next(Utc(2026, 1, 1, 5, 0), berlin), Optional(Utc(2026, 1, 1, 6, 10)));
  EXPECT_THAT(schedule->Next(Utc(2026, 1, 1, 6, 10), berlin), Optional(Utc(2026, 1, 1, 8, 10)));
  // Before the anchor the grid extends backwards.
  EXPECT_THAT(schedule->Next(Utc(2025, 12, 31, 23, 0), berlin), Optional(Utc(2026, 1, 1, 0, 10)));
  EXPECT_THAT(schedule->Next(Utc(2025, 12, 31, 22, 10), berlin), Optional(Utc(2026, 1, 1, 0, 10)));
  // Default anchor: the Unix epoch.
  absl::StatusOr<JobSchedule> ninety = JobSchedule::Parse("every 90s");
  ASSERT_THAT(ninety, IsOk());
  EXPECT_EQ(ninety->anchor(), absl::UnixEpoch());
  EXPECT_THAT(ninety->Next(absl::FromUnixSeconds(100), berlin),
              Optional(absl::FromUnixSeconds(180)));
  // Intervals are absolute: "every 1d" stays 24h apart across the spring change.
  absl::StatusOr<JobSchedule> daily = JobSchedule::Parse("every 1d");
  ASSERT_THAT(daily, IsOk());
  daily->set_anchor(Utc(2026, 3, 28, 8, 0));
  EXPECT_THAT(daily->Next(Utc(2026, 3, 28, 8, 0), berlin), Optional(Utc(2026, 3, 29, 8, 0)));
  EXPECT_EQ(daily->Next(absl::InfiniteFuture(), berlin), std::nullopt);
}

TEST(JobScheduleTest, AtRunsOnceWithOffsetOrInTheZone) {
  const absl::TimeZone berlin = Zone("Europe/Berlin");
  const absl::TimeZone kolkata = Zone("Asia/Kolkata");
  const absl::Time before = Utc(2026, 5, 1, 0, 0);
  EXPECT_THAT(NextRun("at 2026-06-01T09:00:00Z", berlin, before), Optional(Utc(2026, 6, 1, 9, 0)));
  EXPECT_EQ(NextRun("at 2026-06-01T09:00:00Z", berlin, Utc(2026, 6, 1, 9, 0)), std::nullopt);
  EXPECT_EQ(NextRun("at 2026-06-01T09:00:00Z", berlin, Utc(2027, 1, 1, 0, 0)), std::nullopt);
  // An explicit offset ignores the zone.
  EXPECT_THAT(NextRun("at 2026-06-01T09:00+02:00", kolkata, before),
              Optional(Utc(2026, 6, 1, 7, 0)));
  EXPECT_THAT(NextRun("at 2026-06-01T09:00:15-04:30", berlin, before),
              Optional(Utc(2026, 6, 1, 13, 30, 15)));
  // Local civil time follows the zone.
  EXPECT_THAT(NextRun("at 2026-06-01T09:00", berlin, before), Optional(Utc(2026, 6, 1, 7, 0)));
  EXPECT_THAT(NextRun("at 2026-06-01T09:00", kolkata, before), Optional(Utc(2026, 6, 1, 3, 30)));
  EXPECT_EQ(NextRun("at 2026-06-01T09:00", kolkata, Utc(2026, 6, 1, 3, 30)), std::nullopt);
  // ...including the gap (runs at its end) and the repeat (first occurrence).
  EXPECT_THAT(NextRun("at 2026-03-29T02:30", berlin, before - absl::Hours(24 * 60)),
              Optional(Utc(2026, 3, 29, 1, 0)));
  EXPECT_THAT(NextRun("at 2026-10-25T02:30", berlin, before), Optional(Utc(2026, 10, 25, 0, 30)));
}

TEST(JobScheduleTest, ImpossibleCronReturnsNulloptQuickly) {
  const absl::TimeZone berlin = Zone("Europe/Berlin");
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) {
    const absl::Time after = Utc(2026, 1, 1, 0, 0) + absl::Hours(24 * 7 * i);
    EXPECT_EQ(NextRun("0 0 30 2 *", berlin, after), std::nullopt);
    EXPECT_EQ(NextRun("0 0 31 4,6,9,11 *", berlin, after), std::nullopt);
  }
  // 200 searches over 8 years each; a minute-by-minute scan would take seconds per search.
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  EXPECT_EQ(NextRun("0 0 * * *", berlin, absl::InfiniteFuture()), std::nullopt);
}

}  // namespace
}  // namespace tidepool
