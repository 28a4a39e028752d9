// Errors are values at the API edge: every call returns a Status whose
// message names the bad value and what is allowed.
#pragma once
#include <string>
#include <utility>

namespace ringattn {

// The C API returns these values (ringattn.h: ringattn_status, kept equal by
// static_asserts in runtime/src/api/c_api.cpp): add a code to both.
enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,   // a value outside its allowed range
  kMismatch = 2,          // ranks disagree on config or shape
  kUnsupported = 3,       // valid request this build/backend cannot serve
  kCommError = 4,         // MPI / NCCL failure
  kDeviceError = 5,       // CUDA failure
  kTimeout = 6,           // a peer did not answer in time
  kIoError = 7,           // file could not be read or written
  kInternal = 8,
  kPeerError = 9,         // another rank reported an error
};

const char* status_code_name(StatusCode c);

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
inline Status Unsupported(std::string m) { return Status(StatusCode::kUnsupported, std::move(m)); }

#define RINGATTN_RETURN_IF_ERROR(expr)          \
  do {                                          \
    ::ringattn::Status _st = (expr);            \
    if (!_st.ok()) return _st;                  \
  } while (0)

}  // namespace ringattn
