#include "lib/sqlite_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace tidepool {
namespace {

using ::testing::AllOf;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::IsOkAndHolds;
using ::tidepool::testing::StatusIs;

// Sets the process umask for the lifetime of the object (tests run single-threaded).
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : previous_(::umask(mask)) {}
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;
  ~ScopedUmask() { ::umask(previous_); }

 private:
  mode_t previous_;
};

class SqliteDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = absl::StrCat(::testing::TempDir(), "sqlite_store_test_", ::getpid(), "_", info->name(),
                         ".db");
    RemoveFiles();
  }

  void TearDown() override { RemoveFiles(); }

  void RemoveFiles() {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
      ::unlink(absl::StrCat(path_, suffix).c_str());
    }
  }

  std::unique_ptr<SqliteDb> OpenOrDie(const SqliteOptions& options = SqliteOptions()) {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path_, options);
    EXPECT_THAT(db, IsOk());
    return db.ok() ? std::move(db).value() : nullptr;
  }

  static int64_t CountRows(SqliteDb& db, const std::string& table) {
    absl::StatusOr<Statement> statement = db.Prepare(absl::StrCat("SELECT count(*) FROM ", table));
    EXPECT_THAT(statement, IsOk());
    if (!statement.ok()) {
      return -1;
    }
    absl::StatusOr<bool> row = statement->Step();
    EXPECT_THAT(row, IsOk());
    return row.ok() && *row ? statement->ColumnInt(0) : -1;
  }

  static bool TableExists(SqliteDb& db, const std::string& name) {
    absl::StatusOr<Statement> statement = db.Prepare("SELECT 1 FROM sqlite_master WHERE name = ?");
    EXPECT_THAT(statement, IsOk());
    EXPECT_THAT(statement->Bind(1, name), IsOk());
    absl::StatusOr<bool> row = statement->Step();
    EXPECT_THAT(row, IsOk());
    return row.ok() && *row;
  }

  static mode_t FileMode(const std::string& path) {
    struct stat info {};
    EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
    return info.st_mode & 0777;
  }

  std::string path_;
};

TEST_F(SqliteDbTest, OpensInWalWithFullSynchronousByDefault) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  EXPECT_THAT(db->JournalMode(), IsOkAndHolds(Eq("wal")));
  absl::StatusOr<int> synchronous = db->Synchronous();
  ASSERT_THAT(synchronous, IsOk());
  EXPECT_EQ(*synchronous, 2);
}

TEST_F(SqliteDbTest, OpensWithNormalSynchronousWhenAsked) {
  SqliteOptions options;
  options.durability = Durability::kNormal;
  std::unique_ptr<SqliteDb> db = OpenOrDie(options);
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::string> mode = db->JournalMode();
  ASSERT_THAT(mode, IsOk());
  EXPECT_EQ(*mode, "wal");
  absl::StatusOr<int> synchronous = db->Synchronous();
  ASSERT_THAT(synchronous, IsOk());
  EXPECT_EQ(*synchronous, 1);
}

TEST_F(SqliteDbTest, CreatesDatabaseWalAndShmFilesOwnerOnlyEvenWithPermissiveUmask) {
  ScopedUmask permissive(0);
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_THAT(db->Exec("CREATE TABLE t(x); INSERT INTO t VALUES (1);"), IsOk());
  EXPECT_EQ(FileMode(path_), 0600);
  EXPECT_EQ(FileMode(path_ + "-wal"), 0600);
  EXPECT_EQ(FileMode(path_ + "-shm"), 0600);
}

TEST_F(SqliteDbTest, OpenInMissingDirectoryIsUnavailable) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "sqlite_store_test_missing_", ::getpid(), "/x.db");
  EXPECT_THAT(SqliteDb::Open(path, SqliteOptions()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(path)));
}

TEST_F(SqliteDbTest, ReadOnlyOpenOfMissingFileIsUnavailableAndCreatesNothing) {
  SqliteOptions options;
  options.read_only = true;
  EXPECT_THAT(SqliteDb::Open(path_, options),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(path_)));
  EXPECT_NE(::access(path_.c_str(), F_OK), 0);
}

TEST_F(SqliteDbTest, ReadOnlyOpenReadsButRejectsWrites) {
  {
    std::unique_ptr<SqliteDb> db = OpenOrDie();
    ASSERT_NE(db, nullptr);
    ASSERT_THAT(db->Exec("CREATE TABLE t(x); INSERT INTO t VALUES (7);"), IsOk());
  }
  SqliteOptions options;
  options.read_only = true;
  std::unique_ptr<SqliteDb> db = OpenOrDie(options);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(CountRows(*db, "t"), 1);
  EXPECT_THAT(db->Exec("INSERT INTO t VALUES (8)"), StatusIs(absl::StatusCode::kInternal));
}

TEST_F(SqliteDbTest, RejectsNegativeBusyTimeout) {
  SqliteOptions options;
  options.busy_timeout = absl::Seconds(-1);
  EXPECT_THAT(SqliteDb::Open(path_, options), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SqliteDbTest, EnforcesForeignKeysAsFailedPrecondition) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_THAT(db->Exec("CREATE TABLE parent(id INTEGER PRIMARY KEY);"
                       "CREATE TABLE child(parent_id INTEGER NOT NULL REFERENCES parent(id));"),
              IsOk());
  EXPECT_THAT(db->Exec("INSERT INTO child VALUES (42)"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("FOREIGN KEY")));
  EXPECT_THAT(db->Exec("INSERT INTO child VALUES (NULL)"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("NOT NULL")));
}

TEST_F(SqliteDbTest, MigrationsApplyInOrderAndSetUserVersion) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  const std::vector<Migration> migrations = {
      {1, "CREATE TABLE steps(name TEXT NOT NULL);"},
      {2, "INSERT INTO steps VALUES ('two');"},
      {3, "INSERT INTO steps VALUES ('three'); CREATE INDEX steps_name ON steps(name);"},
  };
  ASSERT_THAT(db->Migrate(migrations), IsOk());
  EXPECT_THAT(db->UserVersion(), IsOkAndHolds(3));

  absl::StatusOr<Statement> statement = db->Prepare("SELECT name FROM steps ORDER BY rowid");
  ASSERT_THAT(statement, IsOk());
  std::vector<std::string> names;
  for (;;) {
    absl::StatusOr<bool> row = statement->Step();
    ASSERT_THAT(row, IsOk());
    if (!*row) {
      break;
    }
    names.push_back(statement->ColumnText(0));
  }
  EXPECT_THAT(names, ::testing::ElementsAre("two", "three"));
}

TEST_F(SqliteDbTest, ReopeningDoesNotReapplyMigrations) {
  std::vector<Migration> migrations = {
      {1, "CREATE TABLE t(x); INSERT INTO t VALUES (1);"},
  };
  {
    std::unique_ptr<SqliteDb> db = OpenOrDie();
    ASSERT_NE(db, nullptr);
    ASSERT_THAT(db->Migrate(migrations), IsOk());
  }
  {
    std::unique_ptr<SqliteDb> db = OpenOrDie();
    ASSERT_NE(db, nullptr);
    ASSERT_THAT(db->Migrate(migrations), IsOk());
    EXPECT_EQ(CountRows(*db, "t"), 1);
    EXPECT_THAT(db->UserVersion(), IsOkAndHolds(1));
  }
  migrations.push_back({2, "INSERT INTO t VALUES (2);"});
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_THAT(db->Migrate(migrations), IsOk());
  EXPECT_EQ(CountRows(*db, "t"), 2);
  EXPECT_THAT(db->UserVersion(), IsOkAndHolds(2));
}

TEST_F(SqliteDbTest, FailingMigrationLeavesPreviousVersionAndNoPartialSchema) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  std::vector<Migration> migrations = {
      {1, "CREATE TABLE a(x);"},
      {2,
       "CREATE TABLE b(y); CREATE INDEX b_y ON b(y); INSERT INTO a VALUES (1);"
       "SELECT * FROM no_such_table;"},
  };
  EXPECT_THAT(db->Migrate(migrations),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("migration 2")));
  EXPECT_THAT(db->UserVersion(), IsOkAndHolds(1));
  EXPECT_TRUE(TableExists(*db, "a"));
  EXPECT_FALSE(TableExists(*db, "b"));
  EXPECT_FALSE(TableExists(*db, "b_y"));
  EXPECT_EQ(CountRows(*db, "a"), 0);

  // A fixed migration 2 then applies cleanly.
  migrations[1].sql = "CREATE TABLE b(y); CREATE INDEX b_y ON b(y); INSERT INTO a VALUES (1);";
  ASSERT_THAT(db->Migrate(migrations), IsOk());
  EXPECT_THAT(db->UserVersion(), IsOkAndHolds(2));
  EXPECT_TRUE(TableExists(*db, "b"));
  EXPECT_EQ(CountRows(*db, "a"), 1);
}

TEST_F(SqliteDbTest, MigrationCannotCommitItsOwnTransaction) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  const std::vector<Migration> migrations = {
      {1, "CREATE TABLE a(x); COMMIT; CREATE TABLE b(y);"},
  };
  EXPECT_THAT(db->Migrate(migrations),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("migration 1"), HasSubstr("COMMIT"))));
  EXPECT_THAT(db->UserVersion(), IsOkAndHolds(0));
  EXPECT_FALSE(TableExists(*db, "a"));
  // The authorizer is gone afterwards: ordinary transactions work again.
  absl::StatusOr<Transaction> transaction = db->Begin();
  ASSERT_THAT(transaction, IsOk());
  EXPECT_THAT(transaction->Commit(), IsOk());
}

TEST_F(SqliteDbTest, RejectsMigrationVersionsThatAreNotStrictlyIncreasingFromOne) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  const std::vector<std::vector<Migration>> bad = {
      {{1, "CREATE TABLE t(x);"}, {1, "CREATE TABLE u(x);"}},
      {{1, "CREATE TABLE t(x);"}, {3, "CREATE TABLE u(x);"}, {2, "CREATE TABLE v(x);"}},
      {{2, "CREATE TABLE t(x);"}},
      {{0, "CREATE TABLE t(x);"}},
  };
  for (const std::vector<Migration>& migrations : bad) {
    EXPECT_THAT(db->Migrate(migrations), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(db->UserVersion(), IsOkAndHolds(0));
  EXPECT_FALSE(TableExists(*db, "t"));
}

TEST_F(SqliteDbTest, RejectsDatabaseNewerThanBinary) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_THAT(db->Exec("PRAGMA user_version = 5"), IsOk());
  const std::vector<Migration> migrations = {
      {1, "CREATE TABLE t(x);"},
      {2, "CREATE TABLE u(x);"},
  };
  EXPECT_THAT(db->Migrate(migrations),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       Eq("database schema version 5 is newer than this binary supports (2)")));
  EXPECT_THAT(db->UserVersion(), IsOkAndHolds(5));
  EXPECT_FALSE(TableExists(*db, "t"));
}

TEST_F(SqliteDbTest, BindAndStepRoundTripEveryType) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_THAT(db->Exec("CREATE TABLE v(i INTEGER, t TEXT, b BLOB, n, d REAL, e TEXT, eb BLOB)"),
              IsOk());
  const std::string blob("a\0b\xff\0", 5);
  const int64_t big = std::numeric_limits<int64_t>::min();
  {
    absl::StatusOr<Statement> insert = db->Prepare("INSERT INTO v VALUES (?, ?, ?, ?, ?, ?, ?)");
    ASSERT_THAT(insert, IsOk());
    ASSERT_THAT(insert->Bind(1, big), IsOk());
    ASSERT_THAT(insert->Bind(2, "héllo"), IsOk());
    ASSERT_THAT(insert->BindBlob(3, blob), IsOk());
    ASSERT_THAT(insert->BindNull(4), IsOk());
    ASSERT_THAT(insert->Bind(5, 2.5), IsOk());
    ASSERT_THAT(insert->Bind(6, absl::string_view()), IsOk());
    ASSERT_THAT(insert->BindBlob(7, ""), IsOk());
    EXPECT_THAT(insert->Step(), IsOkAndHolds(false));
  }
  EXPECT_EQ(db->Changes(), 1);
  EXPECT_EQ(db->LastInsertRowId(), 1);

  absl::StatusOr<Statement> select = db->Prepare("SELECT i, t, b, n, d, e, eb FROM v");
  ASSERT_THAT(select, IsOk());
  ASSERT_THAT(select->Step(), IsOkAndHolds(true));
  EXPECT_EQ(select->ColumnCount(), 7);
  EXPECT_EQ(select->ColumnInt(0), big);
  EXPECT_EQ(select->ColumnText(1), "héllo");
  EXPECT_EQ(select->ColumnBlob(2), blob);
  EXPECT_TRUE(select->ColumnIsNull(3));
  EXPECT_DOUBLE_EQ(select->ColumnDouble(4), 2.5);
  EXPECT_FALSE(select->ColumnIsNull(5));
  EXPECT_EQ(select->ColumnText(5), "");
  EXPECT_FALSE(select->ColumnIsNull(6));
  EXPECT_EQ(select->ColumnBlob(6), "");
  EXPECT_THAT(select->Step(), IsOkAndHolds(false));
}

TEST_F(SqliteDbTest, ResetAllowsReusingAStatement) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_THAT(db->Exec("CREATE TABLE t(x INTEGER)"), IsOk());
  absl::StatusOr<Statement> insert = db->Prepare("INSERT INTO t VALUES (?);");
  ASSERT_THAT(insert, IsOk());
  for (int i = 1; i <= 3; ++i) {
    ASSERT_THAT(insert->Bind(1, i), IsOk());
    ASSERT_THAT(insert->Step(), IsOkAndHolds(false));
    ASSERT_THAT(insert->Reset(), IsOk());
    EXPECT_EQ(db->LastInsertRowId(), i);
  }
  ASSERT_THAT(db->Exec("UPDATE t SET x = x + 1 WHERE x >= 2"), IsOk());
  EXPECT_EQ(db->Changes(), 2);
}

TEST_F(SqliteDbTest, UniqueViolationIsAlreadyExists) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_THAT(db->Exec("CREATE TABLE u(id INTEGER PRIMARY KEY, name TEXT UNIQUE);"
                       "CREATE TABLE k(key TEXT PRIMARY KEY);"
                       "INSERT INTO u VALUES (1, 'a'); INSERT INTO k VALUES ('x');"),
              IsOk());
  absl::StatusOr<Statement> insert = db->Prepare("INSERT INTO u VALUES (?, ?)");
  ASSERT_THAT(insert, IsOk());
  ASSERT_THAT(insert->Bind(1, 2), IsOk());
  ASSERT_THAT(insert->Bind(2, "a"), IsOk());
  EXPECT_THAT(insert->Step(), StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_THAT(insert->Reset(), IsOk());
  ASSERT_THAT(insert->Bind(1, 1), IsOk());
  ASSERT_THAT(insert->Bind(2, "b"), IsOk());
  EXPECT_THAT(insert->Step(), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(db->Exec("INSERT INTO k VALUES ('x')"),
              StatusIs(absl::StatusCode::kAlreadyExists, ::testing::Not(HasSubstr("k.key"))));
}

TEST_F(SqliteDbTest, PrepareAcceptsExactlyOneStatement) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  EXPECT_THAT(db->Prepare("SELECT 1; -- trailing comment\n"), IsOk());
  EXPECT_THAT(db->Prepare("SELECT 1; SELECT 2"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(db->Prepare("  -- only a comment"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(db->Prepare(std::string("SELECT 1\0; DROP TABLE x", 24)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(db->Prepare("SELEC 1"), StatusIs(absl::StatusCode::kInternal, HasSubstr("syntax")));
}

TEST_F(SqliteDbTest, UncommittedTransactionRollsBackOnDestruction) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  ASSERT_THAT(db->Exec("CREATE TABLE t(x)"), IsOk());
  {
    absl::StatusOr<Transaction> transaction = db->Begin();
    ASSERT_THAT(transaction, IsOk());
    ASSERT_THAT(db->Exec("INSERT INTO t VALUES (1)"), IsOk());
    EXPECT_EQ(CountRows(*db, "t"), 1);
  }
  EXPECT_EQ(CountRows(*db, "t"), 0);
  // The connection is back in autocommit mode: a new transaction can start.
  absl::StatusOr<Transaction> transaction = db->Begin();
  EXPECT_THAT(transaction, IsOk());
}

TEST_F(SqliteDbTest, CommittedTransactionPersistsAcrossReopen) {
  {
    std::unique_ptr<SqliteDb> db = OpenOrDie();
    ASSERT_NE(db, nullptr);
    ASSERT_THAT(db->Exec("CREATE TABLE t(x)"), IsOk());
    absl::StatusOr<Transaction> transaction = db->Begin();
    ASSERT_THAT(transaction, IsOk());
    ASSERT_THAT(db->Exec("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"), IsOk());
    ASSERT_THAT(transaction->Commit(), IsOk());
    EXPECT_THAT(transaction->Commit(), StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(CountRows(*db, "t"), 2);
}

TEST_F(SqliteDbTest, BusyWriterIsUnavailable) {
  std::unique_ptr<SqliteDb> holder = OpenOrDie();
  ASSERT_NE(holder, nullptr);
  ASSERT_THAT(holder->Exec("CREATE TABLE t(x)"), IsOk());
  absl::StatusOr<Transaction> held = holder->Begin();
  ASSERT_THAT(held, IsOk());

  SqliteOptions impatient;
  impatient.busy_timeout = absl::ZeroDuration();
  std::unique_ptr<SqliteDb> other = OpenOrDie(impatient);
  ASSERT_NE(other, nullptr);
  EXPECT_THAT(other->Begin(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(other->Exec("INSERT INTO t VALUES (1)"), StatusIs(absl::StatusCode::kUnavailable));
  // Readers are not blocked by the writer in WAL mode.
  EXPECT_EQ(CountRows(*other, "t"), 0);
}

TEST_F(SqliteDbTest, MovedFromObjectsReportFailedPrecondition) {
  std::unique_ptr<SqliteDb> db = OpenOrDie();
  ASSERT_NE(db, nullptr);
  SqliteDb moved(std::move(*db));
  EXPECT_THAT(db->Exec("SELECT 1"), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(moved.Exec("CREATE TABLE t(x)"), IsOk());

  absl::StatusOr<Statement> statement = moved.Prepare("SELECT count(*) FROM t");
  ASSERT_THAT(statement, IsOk());
  Statement taken(std::move(*statement));
  EXPECT_THAT(statement->Step(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(taken.Step(), IsOkAndHolds(true));
  EXPECT_EQ(taken.ColumnInt(0), 0);
}

}  // namespace
}  // namespace tidepool
