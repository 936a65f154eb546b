#pragma once

// SqliteDb: one service's SQLite database file (WAL mode), with prepared statements,
// transactions and versioned schema migrations. All errors are absl::Status; nothing throws.
//
// Status codes used throughout (from the SQLite result code of the failing call):
//   ALREADY_EXISTS       UNIQUE or PRIMARY KEY constraint violated.
//   FAILED_PRECONDITION  any other constraint (NOT NULL, CHECK, FOREIGN KEY, ...) violated;
//                        a failed or too-new migration; use of a moved-from object.
//   UNAVAILABLE          the database is locked by another connection (SQLITE_BUSY) beyond
//                        the busy timeout, or the file cannot be opened.
//   INVALID_ARGUMENT     a malformed argument detected before reaching SQLite.
//   INTERNAL             anything else (syntax errors, I/O errors, writes to a read-only
//                        handle, ...). INTERNAL messages may carry SQLite's detailed error text;
//                        other codes carry only generic text, so they can travel to clients.
//
// Lifetimes: Statement and Transaction objects refer to the connection of the SqliteDb that
// created them and must be destroyed before it.
//
// Thread safety: none of these classes is thread-safe. The connection is opened with
// SQLITE_OPEN_NOMUTEX, so callers must serialize all access to a SqliteDb and to every
// Statement and Transaction created from it (e.g. with one absl::Mutex per database).
// Separate SqliteDb objects (even for the same file, or in other processes) may be used
// concurrently; SQLite's file locking and the busy timeout arbitrate between them.

#include <concepts>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

struct sqlite3;
struct sqlite3_stmt;

namespace tidepool {

// How durable a committed transaction is.
enum class Durability {
  // synchronous=NORMAL: a commit may be lost on power failure (never corrupted). For caches
  // and state that can be rebuilt.
  kNormal,
  // synchronous=FULL: a commit survives power failure. Required for stores whose
  // acknowledgements are promises (audit, secrets, sessions).
  kFull,
};

// Options for SqliteDb::Open.
struct SqliteOptions {
  Durability durability = Durability::kFull;
  // How long a statement waits for another connection's lock before failing UNAVAILABLE.
  // Must not be negative; zero fails immediately.
  absl::Duration busy_timeout = absl::Seconds(5);
  // Opens with SQLITE_OPEN_READONLY: the file must exist, nothing is created and the journal
  // mode is left as found. Writes fail INTERNAL.
  bool read_only = false;
};

// One prepared SQL statement (RAII over sqlite3_stmt). Obtained from SqliteDb::Prepare.
// Movable, not copyable; finalizes the statement on destruction. A moved-from Statement is
// empty: its methods return FAILED_PRECONDITION and its column getters return zero values.
// Not thread-safe; must be destroyed before the SqliteDb that prepared it.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Binds parameter `index` (1-based, as in SQLite) for the next Step. Text and blob bytes are
  // copied. An empty text or blob binds an empty value, not NULL. Bindings persist across
  // Reset. Errors: INTERNAL for an index out of range or binding while the statement is
  // running (call Reset first).
  absl::Status Bind(int index, int64_t value);
  absl::Status Bind(int index, double value);
  // Binds UTF-8 text; `const char*` and std::string arguments land here.
  absl::Status Bind(int index, absl::string_view text);
  // Binds arbitrary bytes (may contain NULs) as a BLOB.
  absl::Status BindBlob(int index, absl::string_view bytes);
  absl::Status BindNull(int index);
  // Lets integer literals and other integer types that fit in int64_t bind as integers
  // instead of being ambiguous between int64_t and double. bool and uint64_t are deliberately
  // excluded: cast explicitly.
  template <typename T>
  requires(std::integral<T> && !std::same_as<T, bool> && !std::same_as<T, int64_t> &&
           (std::signed_integral<T> || sizeof(T) < sizeof(int64_t))) absl::Status
      Bind(int index, T value) {
    return Bind(index, static_cast<int64_t>(value));
  }

  // Runs the statement until the next result row. Returns true when a row is available
  // through the Column* getters, false when the statement has finished (calling Step again
  // then restarts it). Errors: ALREADY_EXISTS, FAILED_PRECONDITION (constraints),
  // UNAVAILABLE (busy), INTERNAL (others); see the top of this file.
  absl::StatusOr<bool> Step();

  // Column getters for the current row. `index` is 0-based and must be below ColumnCount(),
  // and the last Step must have returned true. Values convert as SQLite converts them; NULL
  // reads as 0, 0.0 or "".
  int ColumnCount() const;
  int64_t ColumnInt(int index) const;
  double ColumnDouble(int index) const;
  std::string ColumnText(int index) const;
  // The column's bytes, embedded NULs included.
  std::string ColumnBlob(int index) const;
  bool ColumnIsNull(int index) const;

  // Rewinds the statement so it can be stepped again; bindings are kept. Errors reported by
  // the previous Step are not reported again. Errors: FAILED_PRECONDITION if moved-from.
  absl::Status Reset();

 private:
  friend class SqliteDb;
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}

  sqlite3_stmt* stmt_;  // Owned; null when moved-from.
};

// An open write transaction (BEGIN IMMEDIATE), obtained from SqliteDb::Begin. Rolls back on
// destruction unless Commit succeeded. Movable, not copyable. Not thread-safe; must be
// destroyed before the SqliteDb that began it.
class Transaction {
 public:
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&& other) noexcept;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  // Commits. Errors: UNAVAILABLE if busy (the transaction stays open; retry Commit or let the
  // destructor roll back), INTERNAL for other failures, FAILED_PRECONDITION if already
  // committed or moved-from.
  absl::Status Commit();

 private:
  friend class SqliteDb;
  explicit Transaction(sqlite3* db) : db_(db) {}
  void RollbackIfActive();

  sqlite3* db_;  // Not owned; null once committed or moved-from.
};

// A schema migration: `sql` (one or more statements) brings the schema from version
// `version - 1` to `version`. It must not contain BEGIN, COMMIT or ROLLBACK: Migrate runs it
// inside its own transaction.
struct Migration {
  int version;
  std::string sql;
};

// One SQLite connection to one database file, configured for Tidepool: WAL journal,
// synchronous per Durability, foreign keys enforced, extended result codes, busy timeout.
// Movable, not copyable; closes the connection on destruction (any open transaction is rolled
// back). A moved-from SqliteDb is closed: its methods return FAILED_PRECONDITION.
// Not thread-safe: callers serialize access (see the top of this file).
class SqliteDb {
 public:
  // Opens (creating if missing, unless options.read_only) the database at `path`. A new file
  // is created with mode 0600 regardless of the umask, before SQLite sees it; SQLite gives
  // the -wal and -shm files the same mode. An existing file's mode is left unchanged.
  // Errors: INVALID_ARGUMENT for an empty path or negative busy timeout; UNAVAILABLE if the
  // file cannot be created or opened (the message names the path); INTERNAL if configuring
  // the connection fails (including a file that is not a database or refuses WAL).
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path,
                                                        const SqliteOptions& options);

  SqliteDb(SqliteDb&& other) noexcept;
  SqliteDb& operator=(SqliteDb&& other) noexcept;
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;
  ~SqliteDb();

  // Runs one or more `;`-separated statements, discarding any result rows. Stops at the first
  // failing statement (earlier ones stay applied unless inside a transaction).
  // Errors: as Statement::Step; INTERNAL for syntax errors; INVALID_ARGUMENT for embedded NULs.
  absl::Status Exec(absl::string_view sql);

  // Compiles exactly one statement (a trailing `;`, whitespace or comments are fine).
  // Errors: INVALID_ARGUMENT for empty SQL, more than one statement or embedded NULs;
  // INTERNAL for syntax errors or unknown tables/columns; UNAVAILABLE if busy.
  absl::StatusOr<Statement> Prepare(absl::string_view sql);

  // The rowid of the most recent successful INSERT on this connection (0 if none).
  int64_t LastInsertRowId() const;
  // Rows changed by the most recent INSERT, UPDATE or DELETE on this connection.
  int Changes() const;

  // Starts a write transaction with BEGIN IMMEDIATE (takes the write lock now, so later
  // statements in it do not fail busy). Errors: UNAVAILABLE if another connection holds the
  // write lock past the busy timeout; INTERNAL if a transaction is already open.
  absl::StatusOr<Transaction> Begin();

  // Brings the schema up to the newest of `migrations`. Versions must be strictly increasing
  // and start at 1. Each migration above the current PRAGMA user_version runs in its own
  // transaction together with `PRAGMA user_version = version`, so it applies completely or
  // not at all; migrations at or below it are skipped (also when another process applied them
  // concurrently). Errors: INVALID_ARGUMENT for bad versions (nothing is applied);
  // FAILED_PRECONDITION "migration N failed: ..." if a migration fails (user_version stays at
  // the previous version, earlier migrations stay applied) or "database schema version N is
  // newer than this binary supports (M)"; UNAVAILABLE if busy; INTERNAL otherwise.
  absl::Status Migrate(const std::vector<Migration>& migrations);

  // Diagnostics: PRAGMA user_version, journal_mode (lower case, e.g. "wal") and synchronous
  // (1 NORMAL, 2 FULL). Errors: as Statement::Step.
  absl::StatusOr<int> UserVersion();
  absl::StatusOr<std::string> JournalMode();
  absl::StatusOr<int> Synchronous();

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  absl::Status Configure(const std::string& path, const SqliteOptions& options);
  absl::StatusOr<int64_t> QueryInt(absl::string_view sql);
  absl::Status CheckOpen() const;

  sqlite3* db_;  // Owned; null when moved-from.
};

}  // namespace tidepool
