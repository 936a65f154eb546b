#include "lib/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <system_error>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/status_macros.h"

namespace tidepool {
namespace {

// The kind of a non-unique constraint, for messages that name no table or column.
absl::string_view ConstraintKind(int rc) {
  switch (rc) {
    case SQLITE_CONSTRAINT_NOTNULL:
      return "NOT NULL";
    case SQLITE_CONSTRAINT_CHECK:
      return "CHECK";
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return "FOREIGN KEY";
    case SQLITE_CONSTRAINT_TRIGGER:
      return "trigger";
    case SQLITE_CONSTRAINT_DATATYPE:
      return "datatype";
    default:
      return "";
  }
}

// Maps an (extended) SQLite result code to a Status. `detail` is SQLite's specific message
// (sqlite3_errmsg), which may name tables and columns: it only goes into INTERNAL statuses,
// which the gRPC edge replaces with a generic text.
absl::Status FromSqlite(int rc, absl::string_view what, const char* detail) {
  switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_ROWID:
      return absl::AlreadyExistsError(absl::StrCat(what, ": unique constraint violated"));
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: {
      const absl::string_view kind = ConstraintKind(rc);
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": ", kind, kind.empty() ? "" : " ", "constraint violated"));
    }
    case SQLITE_BUSY:
      return absl::UnavailableError(absl::StrCat(what, ": ", sqlite3_errstr(rc)));
    default:
      return absl::InternalError(absl::StrCat(
          what, ": ", detail != nullptr && *detail != '\0' ? detail : sqlite3_errstr(rc)));
  }
}

absl::Status FromSqlite(int rc, absl::string_view what, sqlite3* db) {
  return FromSqlite(rc, what, db != nullptr ? sqlite3_errmsg(db) : nullptr);
}

// Keeps the code, prefixes the message.
absl::Status WithContext(const absl::Status& status, absl::string_view context) {
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

absl::Status MovedFromError() {
  return absl::FailedPreconditionError("sqlite: object is closed or moved-from");
}

std::string ErrnoText(int error_number) { return std::generic_category().message(error_number); }

// Creates `path` with mode 0600 if it does not exist. The explicit fchmod makes the result
// independent of the umask (which can only remove bits from 0600, never add them).
absl::Status CreateOwnerOnlyFile(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int error_number = errno;
    if (error_number == EEXIST) {
      return absl::OkStatus();
    }
    return absl::UnavailableError(
        absl::StrCat("cannot create database file ", path, ": ", ErrnoText(error_number)));
  }
  const int chmod_result = ::fchmod(fd, 0600);
  const int chmod_errno = errno;
  ::close(fd);
  if (chmod_result != 0) {
    ::unlink(path.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot set mode of database file ", path, ": ", ErrnoText(chmod_errno)));
  }
  return absl::OkStatus();
}

// Runs a pragma on a raw connection; stores the first column of its first row (if any) in
// `*result`. Returns the SQLite result code.
int RunPragma(sqlite3* db, const char* sql, std::string* result) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return rc;
  }
  rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(stmt, 0);
    result->assign(text != nullptr ? reinterpret_cast<const char*>(text) : "");
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    result->clear();
    rc = SQLITE_OK;
  }
  sqlite3_finalize(stmt);
  return rc;
}

// Status for a failure while configuring a freshly opened connection. Uses only
// sqlite3_errstr, never SQLite's detailed message.
absl::Status ConfigureError(const std::string& path, absl::string_view step, int rc) {
  if ((rc & 0xff) == SQLITE_CANTOPEN) {
    return absl::UnavailableError(
        absl::StrCat("cannot open database file ", path, ": ", sqlite3_errstr(rc)));
  }
  return absl::InternalError(
      absl::StrCat("configuring database ", path, ": ", step, ": ", sqlite3_errstr(rc)));
}

// Denies transaction control (BEGIN/COMMIT/ROLLBACK) while a migration's SQL is compiled:
// a COMMIT inside a migration would end Migrate's transaction and break atomicity.
class MigrationAuthorizer {
 public:
  explicit MigrationAuthorizer(sqlite3* db) : db_(db) {
    sqlite3_set_authorizer(db_, &MigrationAuthorizer::Authorize, this);
  }
  MigrationAuthorizer(const MigrationAuthorizer&) = delete;
  MigrationAuthorizer& operator=(const MigrationAuthorizer&) = delete;
  ~MigrationAuthorizer() { sqlite3_set_authorizer(db_, nullptr, nullptr); }

  bool denied() const { return denied_; }

 private:
  static int Authorize(void* self, int action, const char*, const char*, const char*, const char*) {
    if (action == SQLITE_TRANSACTION) {
      static_cast<MigrationAuthorizer*>(self)->denied_ = true;
      return SQLITE_DENY;
    }
    return SQLITE_OK;
  }

  sqlite3* db_;
  bool denied_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------
// Statement

Statement::Statement(Statement&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    stmt_ = std::exchange(other.stmt_, nullptr);
  }
  return *this;
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

absl::Status Statement::Bind(int index, int64_t value) {
  if (stmt_ == nullptr) {
    return MovedFromError();
  }
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  return rc == SQLITE_OK ? absl::OkStatus()
                         : FromSqlite(rc, "sqlite bind", sqlite3_db_handle(stmt_));
}

absl::Status Statement::Bind(int index, double value) {
  if (stmt_ == nullptr) {
    return MovedFromError();
  }
  const int rc = sqlite3_bind_double(stmt_, index, value);
  return rc == SQLITE_OK ? absl::OkStatus()
                         : FromSqlite(rc, "sqlite bind", sqlite3_db_handle(stmt_));
}

absl::Status Statement::Bind(int index, absl::string_view text) {
  if (stmt_ == nullptr) {
    return MovedFromError();
  }
  // A null pointer would bind SQL NULL; an empty string_view may have one.
  const char* data = text.data() != nullptr ? text.data() : "";
  const int rc =
      sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  return rc == SQLITE_OK ? absl::OkStatus()
                         : FromSqlite(rc, "sqlite bind", sqlite3_db_handle(stmt_));
}

absl::Status Statement::BindBlob(int index, absl::string_view bytes) {
  if (stmt_ == nullptr) {
    return MovedFromError();
  }
  const char* data = bytes.data() != nullptr ? bytes.data() : "";
  const int rc = sqlite3_bind_blob64(stmt_, index, data, bytes.size(), SQLITE_TRANSIENT);
  return rc == SQLITE_OK ? absl::OkStatus()
                         : FromSqlite(rc, "sqlite bind", sqlite3_db_handle(stmt_));
}

absl::Status Statement::BindNull(int index) {
  if (stmt_ == nullptr) {
    return MovedFromError();
  }
  const int rc = sqlite3_bind_null(stmt_, index);
  return rc == SQLITE_OK ? absl::OkStatus()
                         : FromSqlite(rc, "sqlite bind", sqlite3_db_handle(stmt_));
}

absl::StatusOr<bool> Statement::Step() {
  if (stmt_ == nullptr) {
    return MovedFromError();
  }
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) {
    return true;
  }
  if (rc == SQLITE_DONE) {
    return false;
  }
  return FromSqlite(rc, "sqlite step", sqlite3_db_handle(stmt_));
}

int Statement::ColumnCount() const { return stmt_ != nullptr ? sqlite3_column_count(stmt_) : 0; }

int64_t Statement::ColumnInt(int index) const {
  return stmt_ != nullptr ? sqlite3_column_int64(stmt_, index) : 0;
}

double Statement::ColumnDouble(int index) const {
  return stmt_ != nullptr ? sqlite3_column_double(stmt_, index) : 0.0;
}

std::string Statement::ColumnText(int index) const {
  if (stmt_ == nullptr) {
    return std::string();
  }
  // Per the SQLite docs: fetch the pointer first, then the size.
  const unsigned char* text = sqlite3_column_text(stmt_, index);
  const int size = sqlite3_column_bytes(stmt_, index);
  if (text == nullptr || size <= 0) {
    return std::string();
  }
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(size));
}

std::string Statement::ColumnBlob(int index) const {
  if (stmt_ == nullptr) {
    return std::string();
  }
  const void* blob = sqlite3_column_blob(stmt_, index);
  const int size = sqlite3_column_bytes(stmt_, index);
  if (blob == nullptr || size <= 0) {
    return std::string();
  }
  return std::string(static_cast<const char*>(blob), static_cast<size_t>(size));
}

bool Statement::ColumnIsNull(int index) const {
  return stmt_ == nullptr || sqlite3_column_type(stmt_, index) == SQLITE_NULL;
}

absl::Status Statement::Reset() {
  if (stmt_ == nullptr) {
    return MovedFromError();
  }
  // sqlite3_reset repeats the previous Step's error code, which Step already reported; the
  // statement is rewound either way.
  sqlite3_reset(stmt_);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Transaction

Transaction::Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

Transaction& Transaction::operator=(Transaction&& other) noexcept {
  if (this != &other) {
    RollbackIfActive();
    db_ = std::exchange(other.db_, nullptr);
  }
  return *this;
}

Transaction::~Transaction() { RollbackIfActive(); }

void Transaction::RollbackIfActive() {
  // SQLite rolls back by itself after some errors (e.g. SQLITE_FULL, SQLITE_IOERR); only roll
  // back what is still open.
  if (db_ != nullptr && sqlite3_get_autocommit(db_) == 0) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  db_ = nullptr;
}

absl::Status Transaction::Commit() {
  if (db_ == nullptr) {
    return absl::FailedPreconditionError("sqlite commit: transaction is not active");
  }
  if (sqlite3_get_autocommit(db_) != 0) {
    db_ = nullptr;
    return absl::InternalError("sqlite commit: transaction was rolled back by an earlier error");
  }
  const int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) {
    // Still open (e.g. busy): stays active so Commit can be retried or the destructor rolls
    // back. Otherwise SQLite has rolled it back already.
    absl::Status status = FromSqlite(rc, "sqlite commit", db_);
    if (sqlite3_get_autocommit(db_) != 0) {
      db_ = nullptr;
    }
    return status;
  }
  db_ = nullptr;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// SqliteDb

absl::StatusOr<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path,
                                                         const SqliteOptions& options) {
  if (path.empty() || path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("database path is empty or contains NUL");
  }
  if (options.busy_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("busy_timeout must not be negative");
  }
  int flags = SQLITE_OPEN_NOMUTEX;
  if (options.read_only) {
    flags |= SQLITE_OPEN_READONLY;
  } else {
    TP_RETURN_IF_ERROR(CreateOwnerOnlyFile(path));
    // No SQLITE_OPEN_CREATE: the file exists now, and if it vanished in between SQLite must
    // not recreate it with its default (umask-dependent, world-readable) mode.
    flags |= SQLITE_OPEN_READWRITE;
  }
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  // SQLite allocates a handle even on most failures; the SqliteDb owns and closes it.
  std::unique_ptr<SqliteDb> db = absl::WrapUnique(new SqliteDb(raw));
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(
        absl::StrCat("cannot open database file ", path, ": ", sqlite3_errstr(rc)));
  }
  TP_RETURN_IF_ERROR(db->Configure(path, options));
  return db;
}

absl::Status SqliteDb::Configure(const std::string& path, const SqliteOptions& options) {
  sqlite3_extended_result_codes(db_, 1);

  const int64_t timeout_ms =
      std::min<int64_t>(absl::ToInt64Milliseconds(options.busy_timeout), INT_MAX);
  int rc = sqlite3_busy_timeout(db_, static_cast<int>(timeout_ms));
  if (rc != SQLITE_OK) {
    return ConfigureError(path, "busy_timeout", rc);
  }

  std::string value;
  if (!options.read_only) {
    rc = RunPragma(db_, "PRAGMA journal_mode=WAL", &value);
    if (rc != SQLITE_OK) {
      return ConfigureError(path, "journal_mode", rc);
    }
    if (absl::AsciiStrToLower(value) != "wal") {
      return absl::InternalError(absl::StrCat("configuring database ", path, ": journal_mode is '",
                                              value, "', not 'wal'"));
    }
  }

  const bool full = options.durability == Durability::kFull;
  rc = RunPragma(db_, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", &value);
  if (rc == SQLITE_OK) {
    rc = RunPragma(db_, "PRAGMA synchronous", &value);
  }
  if (rc != SQLITE_OK) {
    return ConfigureError(path, "synchronous", rc);
  }
  if (value != (full ? "2" : "1")) {
    return absl::InternalError(
        absl::StrCat("configuring database ", path, ": synchronous is ", value));
  }

  rc = RunPragma(db_, "PRAGMA foreign_keys=ON", &value);
  if (rc == SQLITE_OK) {
    rc = RunPragma(db_, "PRAGMA foreign_keys", &value);
  }
  if (rc != SQLITE_OK) {
    return ConfigureError(path, "foreign_keys", rc);
  }
  if (value != "1") {
    return absl::InternalError(
        absl::StrCat("configuring database ", path, ": foreign keys are not supported"));
  }
  return absl::OkStatus();
}

SqliteDb::SqliteDb(SqliteDb&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

SqliteDb& SqliteDb::operator=(SqliteDb&& other) noexcept {
  if (this != &other) {
    sqlite3_close_v2(db_);
    db_ = std::exchange(other.db_, nullptr);
  }
  return *this;
}

// sqlite3_close_v2 (unlike sqlite3_close) cannot fail with SQLITE_BUSY: if statements are
// still alive it defers the close until they are finalized.
SqliteDb::~SqliteDb() { sqlite3_close_v2(db_); }

absl::Status SqliteDb::CheckOpen() const {
  return db_ != nullptr ? absl::OkStatus() : MovedFromError();
}

absl::Status SqliteDb::Exec(absl::string_view sql) {
  TP_RETURN_IF_ERROR(CheckOpen());
  if (sql.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("sqlite exec: SQL contains NUL");
  }
  const std::string terminated(sql);
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, terminated.c_str(), nullptr, nullptr, &error);
  if (rc == SQLITE_OK) {
    return absl::OkStatus();
  }
  absl::Status status = FromSqlite(rc, "sqlite exec", error);
  sqlite3_free(error);
  return status;
}

absl::StatusOr<Statement> SqliteDb::Prepare(absl::string_view sql) {
  TP_RETURN_IF_ERROR(CheckOpen());
  if (sql.find('\0') != absl::string_view::npos || sql.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("sqlite prepare: SQL contains NUL or is too long");
  }
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &raw, &tail);
  Statement statement(raw);
  if (rc != SQLITE_OK) {
    return FromSqlite(rc, "sqlite prepare", db_);
  }
  if (raw == nullptr) {
    return absl::InvalidArgumentError("sqlite prepare: SQL contains no statement");
  }
  // Whatever follows must compile to nothing (whitespace, `;`, comments).
  const int rest = static_cast<int>(sql.data() + sql.size() - tail);
  if (rest > 0) {
    sqlite3_stmt* next = nullptr;
    const int next_rc = sqlite3_prepare_v2(db_, tail, rest, &next, nullptr);
    sqlite3_finalize(next);
    if (next_rc != SQLITE_OK || next != nullptr) {
      return absl::InvalidArgumentError("sqlite prepare: expected exactly one statement");
    }
  }
  return statement;
}

int64_t SqliteDb::LastInsertRowId() const {
  return db_ != nullptr ? sqlite3_last_insert_rowid(db_) : 0;
}

int SqliteDb::Changes() const { return db_ != nullptr ? sqlite3_changes(db_) : 0; }

absl::StatusOr<Transaction> SqliteDb::Begin() {
  TP_RETURN_IF_ERROR(CheckOpen());
  TP_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  return Transaction(db_);
}

absl::StatusOr<int64_t> SqliteDb::QueryInt(absl::string_view sql) {
  TP_ASSIGN_OR_RETURN(Statement statement, Prepare(sql));
  TP_ASSIGN_OR_RETURN(bool has_row, statement.Step());
  if (!has_row) {
    return absl::InternalError(absl::StrCat("sqlite: no result from ", sql));
  }
  return statement.ColumnInt(0);
}

absl::StatusOr<int> SqliteDb::UserVersion() {
  TP_ASSIGN_OR_RETURN(int64_t version, QueryInt("PRAGMA user_version"));
  return static_cast<int>(version);
}

absl::StatusOr<int> SqliteDb::Synchronous() {
  TP_ASSIGN_OR_RETURN(int64_t value, QueryInt("PRAGMA synchronous"));
  return static_cast<int>(value);
}

absl::StatusOr<std::string> SqliteDb::JournalMode() {
  TP_ASSIGN_OR_RETURN(Statement statement, Prepare("PRAGMA journal_mode"));
  TP_ASSIGN_OR_RETURN(bool has_row, statement.Step());
  if (!has_row) {
    return absl::InternalError("sqlite: no result from PRAGMA journal_mode");
  }
  return absl::AsciiStrToLower(statement.ColumnText(0));
}

absl::Status SqliteDb::Migrate(const std::vector<Migration>& migrations) {
  TP_RETURN_IF_ERROR(CheckOpen());
  int previous = 0;
  for (const Migration& migration : migrations) {
    const bool in_order = previous == 0 ? migration.version == 1 : migration.version > previous;
    if (!in_order) {
      return absl::InvalidArgumentError(
          absl::StrFormat("migration versions must be strictly increasing from 1; got %d after %d",
                          migration.version, previous));
    }
    previous = migration.version;
  }
  const int newest = previous;
  const auto check_not_newer = [newest](int current) {
    if (current > newest) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "database schema version %d is newer than this binary supports (%d)", current, newest));
    }
    return absl::OkStatus();
  };

  TP_ASSIGN_OR_RETURN(int current, UserVersion());
  TP_RETURN_IF_ERROR(check_not_newer(current));
  for (const Migration& migration : migrations) {
    if (migration.version <= current) {
      continue;
    }
    TP_ASSIGN_OR_RETURN(Transaction transaction, Begin());
    // Another connection may have migrated between our read and our write lock.
    TP_ASSIGN_OR_RETURN(current, UserVersion());
    TP_RETURN_IF_ERROR(check_not_newer(current));
    if (migration.version <= current) {
      continue;  // `transaction` rolls back an empty transaction.
    }
    absl::Status applied;
    bool denied = false;
    {
      MigrationAuthorizer authorizer(db_);
      applied = Exec(migration.sql);
      denied = authorizer.denied();
    }
    if (!applied.ok()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "migration %d failed: %s", migration.version,
          denied ? "migrations must not contain BEGIN, COMMIT or ROLLBACK" : applied.message()));
    }
    TP_RETURN_IF_ERROR(Exec(absl::StrCat("PRAGMA user_version = ", migration.version)));
    absl::Status committed = transaction.Commit();
    if (!committed.ok()) {
      return WithContext(committed, absl::StrCat("committing migration ", migration.version));
    }
    current = migration.version;
  }
  return absl::OkStatus();
}

}  // namespace tidepool
