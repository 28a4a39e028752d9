# `cmake --install` rules and the package files, in one place.
#
#   include/ringattn/*.h, *.hpp           the public C and C++ API
#   lib/libringattn.so (RINGATTN_BUILD_SHARED) and lib/libringattn.a
#   lib/libringattn_kernels_*.a           only for static linking (link-only dependencies of libringattn.a)
#   lib/cmake/ringattn/                   ringattnConfig.cmake, version file, targets:
#                                           ringattn::ringattn         the shared library (static without RINGATTN_BUILD_SHARED)
#                                           ringattn::ringattn_static  the static one
#   lib/pkgconfig/ringattn.pc             pkg-config (shared; --static for libringattn.a)
#
# Users find MPI (and, for a CUDA build only, CUDAToolkit and NCCL) through
# find_dependency in ringattnConfig.cmake; a CPU build needs nothing of CUDA.
# Everything is relocatable: the prefix may be chosen at install time
# (cmake --install build --prefix DIR).
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(RINGATTN_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/ringattn CACHE STRING
    "Where ringattnConfig.cmake is installed, relative to the prefix")
mark_as_advanced(RINGATTN_INSTALL_CMAKEDIR)

# Exported names: ringattn::ringattn is the shared library when there is one.
set_target_properties(ringattn PROPERTIES EXPORT_NAME ringattn_static)
set(_ringattn_install_targets ringattn ringattn_kernels_cpu)
if(RINGATTN_HAVE_CUDA)
  list(APPEND _ringattn_install_targets ringattn_kernels_cuda)
endif()
if(TARGET ringattn_shared)
  set_target_properties(ringattn_shared PROPERTIES EXPORT_NAME ringattn INSTALL_RPATH_USE_LINK_PATH ON)
  list(APPEND _ringattn_install_targets ringattn_shared)
endif()

install(TARGETS ${_ringattn_install_targets} EXPORT ringattnTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/ringattn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
install(EXPORT ringattnTargets NAMESPACE ringattn:: DESTINATION ${RINGATTN_INSTALL_CMAKEDIR})

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/ringattnConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/ringattnConfig.cmake
                              INSTALL_DESTINATION ${RINGATTN_INSTALL_CMAKEDIR})
# 0.x: a minor version may change the API, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ringattnConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
set(_ringattn_cmake_files ${PROJECT_BINARY_DIR}/ringattnConfig.cmake ${PROJECT_BINARY_DIR}/ringattnConfigVersion.cmake)
if(RINGATTN_HAVE_CUDA)
  list(APPEND _ringattn_cmake_files ${CMAKE_CURRENT_LIST_DIR}/FindNCCL.cmake)
endif()
install(FILES ${_ringattn_cmake_files} DESTINATION ${RINGATTN_INSTALL_CMAKEDIR})

# pkg-config. The prefix is found from the .pc file's own place (${pcfiledir}),
# so the file stays right whatever --prefix the install is given.
set(_pc_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH _pc_to_prefix /${_pc_dir} /)
string(REGEX REPLACE "/$" "" _pc_to_prefix "${_pc_to_prefix}")
set(RINGATTN_PC_PREFIX "\${pcfiledir}/${_pc_to_prefix}")
# Static linking also needs the kernel libraries and the C++ runtime; CUDA and
# NCCL only when built with them. MPI comes from the compiler wrapper (mpicc).
set(RINGATTN_PC_LIBS_PRIVATE "-lringattn_kernels_cpu")
if(RINGATTN_HAVE_CUDA)
  string(APPEND RINGATTN_PC_LIBS_PRIVATE " -lringattn_kernels_cuda")
  if(EXISTS "${NCCL_LIBRARY}")  # not a config package's target
    get_filename_component(_nccl_libdir "${NCCL_LIBRARY}" DIRECTORY)
    if(NOT _nccl_libdir STREQUAL CUDAToolkit_LIBRARY_DIR)
      string(APPEND RINGATTN_PC_LIBS_PRIVATE " -L${_nccl_libdir}")
    endif()
  endif()
  string(APPEND RINGATTN_PC_LIBS_PRIVATE " -lnccl -L${CUDAToolkit_LIBRARY_DIR} -lcudart")
endif()
string(APPEND RINGATTN_PC_LIBS_PRIVATE " -lstdc++ -lm -pthread")
if(TARGET ringattn_shared)
  set(RINGATTN_PC_DESCRIPTION "Distributed dilated (LongNet) ring attention over MPI; compile with mpicc/mpicxx")
else()
  set(RINGATTN_PC_DESCRIPTION "Distributed dilated (LongNet) ring attention over MPI (static only: use --static); compile with mpicc/mpicxx")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/ringattn.pc.in ${PROJECT_BINARY_DIR}/ringattn.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/ringattn.pc DESTINATION ${_pc_dir})
