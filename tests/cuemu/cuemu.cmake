# cuemu.cmake: the XRANK_CUDA_EMU build (tests/cuemu/README.md). Included by the top-level CMakeLists.txt before the
# layers: finds the CUDA toolkit's headers (no nvcc, no GPU, no CUDA library is needed), builds the emulator library
# xrank_cuemu, and gives xr_cuemu_sources(), which compiles .cu files with the host C++ compiler.
find_path(XR_CUEMU_CUDA_INC cuda_runtime.h HINTS ENV CUDA_HOME PATH_SUFFIXES include
          PATHS /usr/local/cuda/include /usr/local/cuda/targets/x86_64-linux/include /usr/include)
find_path(XR_CUEMU_CUDNN_INC cudnn.h HINTS ${XR_CUEMU_CUDA_INC} /usr/include /usr/local/include)
if(NOT XR_CUEMU_CUDA_INC OR NOT EXISTS ${XR_CUEMU_CUDA_INC}/cublasLt.h OR NOT XR_CUEMU_CUDNN_INC)
  message(FATAL_ERROR "xrank: XRANK_CUDA_EMU needs the CUDA toolkit's headers (cuda_runtime.h, cuda_bf16.h, "
                      "cublasLt.h) and cudnn.h, not found (set CUDA_HOME)")
endif()
if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  message(FATAL_ERROR "xrank: XRANK_CUDA_EMU switches fiber stacks in x86-64 assembly (tests/cuemu/cuemu_runtime.cpp)")
endif()
find_program(XR_CUEMU_PERL perl REQUIRED)
set(XR_HAVE_CUDA ON)
set(XR_CUDA_EMU ON)
message(STATUS "xrank: CUDA backend on the CPU emulator (XRANK_CUDA_EMU; headers ${XR_CUEMU_CUDA_INC}); NCCL is not "
               "emulated: the communicator takes its host-staged MPI path")

# the runtime API, the launcher and the mma (cuemu_runtime.cpp); cuBLAS / cuBLASLt on host memory (cublas_emu.cpp,
# held to a double GEMM by test_cublas_emu, tests/cublas_emu.cmake)
add_library(xrank_cuemu STATIC ${CMAKE_SOURCE_DIR}/tests/cuemu/cuemu_runtime.cpp
                               ${CMAKE_SOURCE_DIR}/tests/cuemu/cublas_emu.cpp)
# tests/cuemu first: its cub/cub.cuh is found before the toolkit's
target_include_directories(xrank_cuemu PUBLIC ${CMAKE_SOURCE_DIR}/tests/cuemu)
target_include_directories(xrank_cuemu SYSTEM PUBLIC ${XR_CUEMU_CUDA_INC} ${XR_CUEMU_CUDNN_INC})
target_compile_definitions(xrank_cuemu PUBLIC XR_HAVE_CUDA=1 XR_CUDA_EMU=1)
target_link_libraries(xrank_cuemu PUBLIC Threads::Threads m)

# xr_cuemu_sources(<target> <.cu files>): each file rewritten (cuemu_rewrite.pl: the <<<>>> launches, extern
# __shared__) into the build tree and compiled as C++ with cuemu.h force-included and its own folder on the path
# (#pragma unroll is nvcc's; CUDA code puns types through pointers as nvcc allows: no strict aliasing).
function(xr_cuemu_sources target)
  foreach(cu ${ARGN})
    file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR} ${cu})
    set(out ${CMAKE_BINARY_DIR}/cuemu_src/${rel}.cpp)
    get_filename_component(dir ${cu} DIRECTORY)
    get_filename_component(outdir ${out} DIRECTORY)
    file(MAKE_DIRECTORY ${outdir})
    add_custom_command(OUTPUT ${out}
                       COMMAND ${XR_CUEMU_PERL} ${CMAKE_SOURCE_DIR}/tests/cuemu/cuemu_rewrite.pl ${cu} ${out}
                       DEPENDS ${cu} ${CMAKE_SOURCE_DIR}/tests/cuemu/cuemu_rewrite.pl
                       COMMENT "cuemu: rewriting ${rel}" VERBATIM)
    target_sources(${target} PRIVATE ${out})
    set_source_files_properties(${out} TARGET_DIRECTORY ${target} PROPERTIES
                                INCLUDE_DIRECTORIES "${dir}"
                                COMPILE_OPTIONS "-include;${CMAKE_SOURCE_DIR}/tests/cuemu/cuemu.h;-Wno-unknown-pragmas;-fno-strict-aliasing")
  endforeach()
  target_link_libraries(${target} PRIVATE xrank_cuemu)
endfunction()
