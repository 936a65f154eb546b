#pragma once

// absl-style status propagation macros. Abseil 20220623 (Debian 12) ships none, so these
// mirror the names used inside Google so a later swap is mechanical.

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TP_STATUS_CONCAT_INNER_(x, y) x##y
#define TP_STATUS_CONCAT_(x, y) TP_STATUS_CONCAT_INNER_(x, y)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function if not OK.
#define TP_RETURN_IF_ERROR(expr)                     \
  do {                                               \
    ::absl::Status tp_status_macro_status_ = (expr); \
    if (!tp_status_macro_status_.ok()) {             \
      return tp_status_macro_status_;                \
    }                                                \
  } while (false)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, otherwise moves the
// value into `lhs` (which may be a declaration such as `auto x` or `std::string y`).
#define TP_ASSIGN_OR_RETURN(lhs, rexpr) \
  TP_ASSIGN_OR_RETURN_IMPL_(TP_STATUS_CONCAT_(tp_statusor_, __LINE__), lhs, rexpr)

#define TP_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                              \
  if (!statusor.ok()) {                                 \
    return std::move(statusor).status();                \
  }                                                     \
  lhs = std::move(statusor).value()
