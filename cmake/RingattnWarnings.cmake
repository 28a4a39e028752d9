# The project's warning flags, set in one place.
#
#   ringattn_warnings(<target>...)
#
# -Wall -Wextra for C and C++ sources, and the same flags for the host
# compiler of CUDA sources (nvcc -Xcompiler). RINGATTN_WARNINGS_AS_ERRORS=ON
# adds -Werror (C, C++ and CUDA host code) for CI jobs that want it.
include_guard(GLOBAL)

option(RINGATTN_WARNINGS_AS_ERRORS "Treat compiler warnings as errors (-Werror)" OFF)

function(ringattn_warnings)
  set(_host -Wall -Wextra)
  if(RINGATTN_WARNINGS_AS_ERRORS)
    list(APPEND _host -Werror)
  endif()
  list(JOIN _host "," _xcompiler)
  foreach(_target IN LISTS ARGN)
    target_compile_options(${_target} PRIVATE
      $<$<COMPILE_LANGUAGE:C,CXX>:${_host}>
      $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${_xcompiler}>)
  endforeach()
endfunction()
