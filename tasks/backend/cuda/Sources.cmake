# The CUDA backend's build, included by tasks/backend/CMakeLists.txt.
#
# PCFARM_CUDA defaults ON when a CUDA compiler is found: on PATH, in $CUDACXX,
# or at /usr/local/cuda/bin/nvcc (the toolkit's default prefix, usually not on
# PATH). It needs no GPU to build. The backend is the module
# libpcfarm_cuda.so (cuda_module.h), which links libcudart and libcublas from
# the toolkit; programs open it only when CUDA is asked for, and report
# kUnavailable, never crash, where it, the driver or a device is missing.
#
# Sets PCFARM_CUDA_HOST_SOURCES (the module loader, for pcfarm_backend) and
# PCFARM_CUDA_LIBS; builds the kernels (.cu) into pcfarm_backend_cuda_kernels,
# the backend into pcfarm_cuda_impl and the module pcfarm_cuda.
include(CheckLanguage)
if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  find_program(_pcfarm_nvcc_on_path nvcc)
  if(NOT _pcfarm_nvcc_on_path AND EXISTS /usr/local/cuda/bin/nvcc)
    set(ENV{CUDACXX} /usr/local/cuda/bin/nvcc)
  endif()
endif()
check_language(CUDA)
if(CMAKE_CUDA_COMPILER)
  set(_pcfarm_cuda_default ON)
else()
  set(_pcfarm_cuda_default OFF)
endif()
option(PCFARM_CUDA "Build the CUDA compute backend (needs nvcc, cuBLAS)" ${_pcfarm_cuda_default})

# SASS for Turing (75), Ampere (80 A100, 86 RTX 30xx), Ada (89 RTX 40xx),
# Hopper (90 H100/H200) and Blackwell consumer (120 RTX 50xx), each with its
# PTX, so later GPUs JIT from the newest. CUDA 13 dropped sm_5x-7.0, so 75 is
# the oldest it can target. CI and local iterations may set one, e.g. "75".
set(PCFARM_CUDA_ARCHITECTURES "75;80;86;89;90;120" CACHE STRING
    "CUDA architectures for the CUDA backend's kernels")

set(PCFARM_CUDA_HOST_SOURCES)
set(PCFARM_CUDA_LIBS)
if(PCFARM_CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR "PCFARM_CUDA is ON but no CUDA compiler (nvcc) was found; "
                        "set CUDACXX or CMAKE_CUDA_COMPILER")
  endif()
  # CMake picks a default architecture when enabling the language; give it ours.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES ${PCFARM_CUDA_ARCHITECTURES})
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)

  set(_cu_dir ${CMAKE_CURRENT_SOURCE_DIR}/cuda)
  add_library(pcfarm_backend_cuda_kernels STATIC
    ${_cu_dir}/adamw.cu ${_cu_dir}/attention.cu ${_cu_dir}/cross_entropy.cu
    ${_cu_dir}/elementwise.cu ${_cu_dir}/embedding.cu ${_cu_dir}/gemm.cu
    ${_cu_dir}/rmsnorm.cu ${_cu_dir}/rope.cu ${_cu_dir}/sum_squares.cu
    ${_cu_dir}/swiglu.cu)
  # Directory-wide options (the sanitizer flags of PCFARM_SANITIZE) are GCC
  # flags nvcc does not take; the kernels get only their own. Host code in
  # the .cu files is thin launchers, so it is not sanitized.
  set_property(TARGET pcfarm_backend_cuda_kernels PROPERTY COMPILE_OPTIONS "")
  set_target_properties(pcfarm_backend_cuda_kernels PROPERTIES
    CUDA_ARCHITECTURES "${PCFARM_CUDA_ARCHITECTURES}"
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
    CUDA_RUNTIME_LIBRARY Shared
    POSITION_INDEPENDENT_CODE ON)
  # C++17: CMake 3.25 knows no C++20 flag for nvcc, and the kernels need none.
  # Our warnings, through -Xcompiler for the host compiler and nvcc's own
  # -Werror for device code; never raw (nvcc rejects -Wall/-Wextra).
  target_compile_options(pcfarm_backend_cuda_kernels PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Werror --Werror=all-warnings>)
  target_link_libraries(pcfarm_backend_cuda_kernels PUBLIC CUDA::cudart)

  # The backend itself, for the module and for cuda_backend_test (which
  # links it directly). Hidden symbols, position-independent code.
  add_library(pcfarm_cuda_impl STATIC
    ${_cu_dir}/cuda_backend.cc ${_cu_dir}/cuda_ops.cc ${_cu_dir}/cuda_devices.cc)
  target_compile_options(pcfarm_cuda_impl PRIVATE ${PCFARM_WARNINGS})
  target_link_libraries(pcfarm_cuda_impl PUBLIC pcfarm_backend_cuda_kernels CUDA::cudart
                        CUDA::cublas CUDA::cublasLt ${CMAKE_DL_LIBS})
  # libpcfarm_cuda.so (cuda_module.h): opened with dlopen when CUDA is asked
  # for, so that no other run maps the CUDA runtime and cuBLAS. It carries
  # its own hidden copies of the backend interface and Status code (-z defs:
  # nothing left to the program), and exports pcfarm_cuda_module() alone.
  add_library(pcfarm_cuda MODULE ${_cu_dir}/cuda_module_entry.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/backend.cc ${CMAKE_CURRENT_SOURCE_DIR}/ggml_quants.cc
    ${PROJECT_SOURCE_DIR}/base/status.cc)
  target_compile_options(pcfarm_cuda PRIVATE ${PCFARM_WARNINGS})
  target_link_libraries(pcfarm_cuda PRIVATE pcfarm_cuda_impl)
  target_link_options(pcfarm_cuda PRIVATE -Wl,--exclude-libs,ALL -Wl,-z,defs)
  set_target_properties(pcfarm_cuda_impl pcfarm_cuda PROPERTIES
    POSITION_INDEPENDENT_CODE ON CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  # Beside the programs (build/bin), where they look first.
  set_target_properties(pcfarm_cuda PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

  # What pcfarm_backend gets: the loader only.
  set(PCFARM_CUDA_HOST_SOURCES cuda/cuda_module.cc)
  set(PCFARM_CUDA_LIBS ${CMAKE_DL_LIBS})
endif()
