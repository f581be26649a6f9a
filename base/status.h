// Status and Result: how errors cross module boundaries in pcfarm.
//
// A Status is either OK or a code from a small closed set plus a message a
// person can act on ("worker.key: mode 0644 lets others read it"). Functions
// that can fail because of the world (disk, network, peer, bad input) return
// a Status or a Result<T>; broken invariants assert instead.
//
// Thread-safety: values; safe to copy between threads.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace pcfarm {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // bad input from a person or a peer
  kNotFound,           // a named thing does not exist
  kAlreadyExists,      // creating something that is there
  kPermissionDenied,   // not allowed (key not enrolled, file mode, role)
  kUnauthenticated,    // a signature or secret did not verify
  kCorruption,         // stored or received bytes are damaged
  kIoError,            // the filesystem failed
  kUnavailable,        // a peer could not be reached; try again later
  kTimeout,            // a deadline passed
  kResourceExhausted,  // a size or count limit was hit
  kFailedPrecondition, // the operation does not fit the current state
  kCancelled,          // stopped on request
  kInternal,           // a failure of a library we call
};

// Returns a stable lower-case name for `code`, e.g. "invalid_argument".
const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "code: message", or "ok".
  std::string ToString() const;
  // Returns a copy whose message is "context: message".
  Status WithContext(std::string_view context) const;
  // Silences [[nodiscard]] where ignoring a failure is deliberate.
  void IgnoreError() const {}

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status PermissionDenied(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
inline Status Unauthenticated(std::string m) { return {StatusCode::kUnauthenticated, std::move(m)}; }
inline Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
inline Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status Timeout(std::string m) { return {StatusCode::kTimeout, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Either a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "Result built from an OK status has no value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  // REQUIRES: ok().
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace pcfarm

// Returns early with the status when `expr` is not OK.
#define PCFARM_RETURN_IF_ERROR(expr)           \
  do {                                         \
    ::pcfarm::Status _st = (expr);             \
    if (!_st.ok()) return _st;                 \
  } while (0)

#define PCFARM_CONCAT_INNER(a, b) a##b
#define PCFARM_CONCAT(a, b) PCFARM_CONCAT_INNER(a, b)
// `PCFARM_ASSIGN_OR_RETURN(auto x, F());` declares x from F()'s value or
// returns F()'s status.
#define PCFARM_ASSIGN_OR_RETURN(decl, expr)                          \
  auto PCFARM_CONCAT(_res_, __LINE__) = (expr);                      \
  if (!PCFARM_CONCAT(_res_, __LINE__).ok())                          \
    return PCFARM_CONCAT(_res_, __LINE__).status();                  \
  decl = std::move(PCFARM_CONCAT(_res_, __LINE__)).value()
