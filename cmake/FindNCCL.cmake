# FindNCCL: the NCCL library as the imported target NCCL::NCCL.
#
# NCCL's own CMake package (NCCLConfig.cmake / nccl-config.cmake) is taken
# first; otherwise nccl.h and libnccl are looked up by hand, next to the CUDA
# toolkit first (CUDAToolkit_* variables when find_package(CUDAToolkit) ran),
# then under NCCL_ROOT / $NCCL_HOME and the system paths.
#
# Result variables: NCCL_FOUND, NCCL_INCLUDE_DIR, NCCL_LIBRARY, NCCL_VERSION.
# Set NCCL_INCLUDE_DIR and NCCL_LIBRARY to override the search.
#
# Installed with the ringattn package (lib/cmake/ringattn) for CUDA builds, so
# that find_package(ringattn) finds NCCL the same way the build did.
include(FindPackageHandleStandardArgs)

if(NOT TARGET NCCL::NCCL)
  find_package(NCCL CONFIG QUIET)
  if(TARGET nccl AND NOT TARGET NCCL::NCCL)
    add_library(NCCL::NCCL INTERFACE IMPORTED)
    target_link_libraries(NCCL::NCCL INTERFACE nccl)
  endif()
endif()

if(TARGET NCCL::NCCL)
  # From NCCL's config package (or an earlier call).
  if(NOT NCCL_VERSION AND DEFINED NCCL_VERSION_STRING)
    set(NCCL_VERSION "${NCCL_VERSION_STRING}")
  endif()
  set(NCCL_LIBRARY NCCL::NCCL)
  find_package_handle_standard_args(NCCL REQUIRED_VARS NCCL_LIBRARY VERSION_VAR NCCL_VERSION)
  return()
endif()

set(_nccl_include_hints ${CUDAToolkit_INCLUDE_DIRS})
set(_nccl_library_hints ${CUDAToolkit_LIBRARY_DIR})
if(CUDAToolkit_LIBRARY_ROOT)
  list(APPEND _nccl_library_hints ${CUDAToolkit_LIBRARY_ROOT}/lib ${CUDAToolkit_LIBRARY_ROOT}/lib64)
endif()
if(DEFINED ENV{NCCL_HOME})
  list(APPEND _nccl_include_hints $ENV{NCCL_HOME}/include)
  list(APPEND _nccl_library_hints $ENV{NCCL_HOME}/lib $ENV{NCCL_HOME}/lib64)
endif()
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_nccl_include_hints} PATH_SUFFIXES include)
find_library(NCCL_LIBRARY nccl HINTS ${_nccl_library_hints} PATH_SUFFIXES lib lib64)
mark_as_advanced(NCCL_INCLUDE_DIR NCCL_LIBRARY)

if(NCCL_INCLUDE_DIR AND EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _nccl_defs REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX MATCH "NCCL_${_part} +([0-9]+)" _m "${_nccl_defs}")
    set(_nccl_${_part} "${CMAKE_MATCH_1}")
  endforeach()
  if(NOT _nccl_MAJOR STREQUAL "")
    set(NCCL_VERSION "${_nccl_MAJOR}.${_nccl_MINOR}.${_nccl_PATCH}")
  endif()
endif()

find_package_handle_standard_args(NCCL
  REQUIRED_VARS NCCL_LIBRARY NCCL_INCLUDE_DIR
  VERSION_VAR NCCL_VERSION
  REASON_FAILURE_MESSAGE "the CUDA backend needs NCCL: set NCCL_ROOT, or NCCL_INCLUDE_DIR and NCCL_LIBRARY")

if(NCCL_FOUND AND NOT TARGET NCCL::NCCL)
  add_library(NCCL::NCCL UNKNOWN IMPORTED)
  set_target_properties(NCCL::NCCL PROPERTIES IMPORTED_LOCATION "${NCCL_LIBRARY}"
                                              INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
endif()
