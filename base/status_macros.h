// base/status_macros.h: early return on an error Status, the only two macros the project uses for
// it. Every Status/StatusOr-returning function is [[nodiscard]]; these make handling the result as
// short as dropping it.
//
//   RETURN_IF_ERROR(tier->Write(slot, meta, payload));        // returns the Status if not OK
//   ASSIGN_OR_RETURN(SlotId slot, tier->Allocate(bytes));    // declares `slot`, or returns
//   ASSIGN_OR_RETURN(slot, tier->Allocate(bytes));           // assigns an existing variable
//
// Both work in functions returning absl::Status or any absl::StatusOr<T> (a Status converts to
// either). The expression is evaluated exactly once. The error is returned unchanged: add context
// at the call site with absl::Status's own API when the caller needs it.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CACHESVC_STATUS_CONCAT_INNER_(a, b) a##b
#define CACHESVC_STATUS_CONCAT_(a, b) CACHESVC_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function unless it is OK.
#define RETURN_IF_ERROR(expr)                                               \
  do {                                                                      \
    if (::absl::Status cachesvc_status_ = (expr); !cachesvc_status_.ok()) { \
      return cachesvc_status_;                                              \
    }                                                                       \
  } while (false)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status unless it is OK, else moves its
// value into `lhs` (a declaration such as `auto x` or `Foo x`, or an existing lvalue).
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  CACHESVC_ASSIGN_OR_RETURN_IMPL_(CACHESVC_STATUS_CONCAT_(cachesvc_statusor_, __LINE__), lhs, rexpr)

#define CACHESVC_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();    \
  lhs = *std::move(statusor)
