// Small *CHECK helpers (nccl's checks.h habit): each failed call becomes a
// Status that says file:line, the call and the library's own message.
#pragma once
#include <mpi.h>

#include <string>

#include "ringattn/status.hpp"

namespace ringattn {

inline std::string where(const char* file, int line) {
  std::string f(file);
  auto slash = f.find_last_of('/');
  return (slash == std::string::npos ? f : f.substr(slash + 1)) + ":" + std::to_string(line);
}

inline std::string mpi_error_string(int err) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(err, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(err);
  return std::string(buf, len);
}

#define RINGATTN_MPI_CHECK(call)                                                                        \
  do {                                                                                                  \
    int _e = (call);                                                                                    \
    if (_e != MPI_SUCCESS)                                                                              \
      return ::ringattn::Status(::ringattn::StatusCode::kCommError,                                     \
                                ::ringattn::where(__FILE__, __LINE__) + ": " #call " failed: " +        \
                                    ::ringattn::mpi_error_string(_e));                                  \
  } while (0)

}  // namespace ringattn
