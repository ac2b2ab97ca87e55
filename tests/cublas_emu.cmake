# cublas_emu.cmake: test_cublas_emu, the CPU emulator's cuBLAS / cuBLASLt (tests/cuemu/cublas_emu.cpp) against a
# double-precision GEMM in every call shape core/cuda uses. It needs the CUDA toolkit's headers only (no nvcc, no GPU,
# no CUDA library: the emulator's definitions are linked alone, never beside libcublas), so every build that finds
# them runs it, CUDA on or off; without the headers the test is not built.
find_path(XR_CUBLAS_EMU_INC cublasLt.h HINTS ENV CUDA_HOME PATH_SUFFIXES include
          PATHS /usr/local/cuda/include /usr/local/cuda/targets/x86_64-linux/include /usr/include)
if(XR_CUBLAS_EMU_INC AND EXISTS ${XR_CUBLAS_EMU_INC}/cuda_bf16.h AND EXISTS ${XR_CUBLAS_EMU_INC}/cuda_runtime.h)
  add_executable(test_cublas_emu ${CMAKE_SOURCE_DIR}/tests/cuemu/test_cublas_emu.cpp
                                 ${CMAKE_SOURCE_DIR}/tests/cuemu/cublas_emu.cpp)
  target_include_directories(test_cublas_emu SYSTEM PRIVATE ${XR_CUBLAS_EMU_INC})
  target_link_libraries(test_cublas_emu PRIVATE m)
  add_test(NAME test_cublas_emu COMMAND test_cublas_emu WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(test_cublas_emu PROPERTIES TIMEOUT 60)
else()
  message(STATUS "xrank: test_cublas_emu not built (no CUDA toolkit headers: cublasLt.h, cuda_bf16.h; set CUDA_HOME)")
endif()
# test_cuda_cublas_model: the same test built against the real libcublas / libcublasLt (XR_CUBLAS_REAL: managed
# buffers, skipped without a GPU) in CUDA builds: on a GPU it holds the real library to the emulator's model of it
# (all_device_check.sh runs it with the GPU tests; its step cublas_model condenses the lines).
if(XR_HAVE_CUDA AND NOT XR_CUDA_EMU)
  add_executable(test_cuda_cublas_model ${CMAKE_SOURCE_DIR}/tests/cuemu/test_cublas_emu.cpp)
  target_compile_definitions(test_cuda_cublas_model PRIVATE XR_CUBLAS_REAL=1)
  target_link_libraries(test_cuda_cublas_model PRIVATE CUDA::cublas CUDA::cublasLt CUDA::cudart m)
  add_test(NAME test_cuda_cublas_model COMMAND test_cuda_cublas_model WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(test_cuda_cublas_model PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
endif()
# In the emulator build (XRANK_CUDA_EMU): the GPU tests whose linears go through cuBLASLt again, with the emulated
# heuristic finding no algorithm (XR_CUEMU_LT_NO_ALGO=1), so the callers' fallbacks (ops_cuda.cu lt_linear's callers:
# cublasGemmEx, and the packed linear's fp32 GEMM + bias-and-round kernel) meet the same checks on the CPU.
if(XR_CUDA_EMU)
  foreach(t test_cuda_ops test_cuda_act_pack)
    add_test(NAME emu_lt_fallback_${t} COMMAND ${t} WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
    set_tests_properties(emu_lt_fallback_${t} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300
                         ENVIRONMENT "OMP_NUM_THREADS=2;XR_CUEMU_LT_NO_ALGO=1")
  endforeach()
endif()
