# The optional CUDA backend, decided in one place.
#
#   RINGATTN_CUDA                AUTO (build it when a CUDA compiler is found), ON (require it), OFF
#   RINGATTN_CUDA_ARCHITECTURES  ';'-separated nvcc architectures, default 90a (Hopper: wgmma,
#                                setmaxnreg). Each entry NN gives -gencode=arch=compute_NN,code=sm_NN.
#                                Never `native` in CI (the CI machine has no GPU).
#
# Sets RINGATTN_HAVE_CUDA (ON/OFF), enables the CUDA language (C++17) and finds
# CUDAToolkit (CUDA::cudart). Targets with .cu sources call
#
#   ringattn_cuda_architectures(<target>...)
#
# to get the architecture flags; CMake adds none of its own
# (CMAKE_CUDA_ARCHITECTURES OFF), so the flags come from here only.
#
# Include this file from the top-level CMakeLists.txt (enable_language must run
# at directory scope).
include_guard(GLOBAL)

set(RINGATTN_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set_property(CACHE RINGATTN_CUDA PROPERTY STRINGS AUTO ON OFF)
set(RINGATTN_CUDA_ARCHITECTURES 90a CACHE STRING
    "CUDA architectures of the CUDA backend, ';'-separated (e.g. 90a or 90a;100a); never native in CI")

set(RINGATTN_HAVE_CUDA OFF)
if(NOT RINGATTN_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES OFF)
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(RINGATTN_HAVE_CUDA ON)
  elseif(RINGATTN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "RINGATTN_CUDA=ON but no CUDA compiler was found (set CUDACXX or add nvcc to PATH)")
  endif()
endif()

# The nvcc flags of RINGATTN_CUDA_ARCHITECTURES, checked once.
set(RINGATTN_CUDA_GENCODE "")
if(RINGATTN_HAVE_CUDA)
  if(RINGATTN_CUDA_ARCHITECTURES STREQUAL "")
    message(FATAL_ERROR "RINGATTN_CUDA_ARCHITECTURES is empty (default: 90a)")
  endif()
  foreach(_arch IN LISTS RINGATTN_CUDA_ARCHITECTURES)
    if(_arch STREQUAL "native")
      list(APPEND RINGATTN_CUDA_GENCODE -arch=native)
    elseif(_arch MATCHES "^[0-9]+[af]?$")
      list(APPEND RINGATTN_CUDA_GENCODE -gencode=arch=compute_${_arch},code=sm_${_arch})
    else()
      message(FATAL_ERROR "RINGATTN_CUDA_ARCHITECTURES entry '${_arch}' is not an architecture "
                          "(allowed: numbers such as 90a, 100a, 80; or native on a machine with a GPU)")
    endif()
  endforeach()
endif()

function(ringattn_cuda_architectures)
  foreach(_target IN LISTS ARGN)
    target_compile_options(${_target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${RINGATTN_CUDA_GENCODE}>)
  endforeach()
endfunction()

# The kernels' optional timing traces (options RINGATTN_FWD_TRACE,
# RINGATTN_BWD_TRACE): the kernels and the code that reads them are built with
# the same definitions.
function(ringattn_kernel_traces)
  foreach(_target IN LISTS ARGN)
    foreach(_trace FWD BWD)
      if(RINGATTN_${_trace}_TRACE)
        target_compile_definitions(${_target} PRIVATE RINGATTN_${_trace}_TRACE=1)
      endif()
    endforeach()
  endforeach()
endfunction()
