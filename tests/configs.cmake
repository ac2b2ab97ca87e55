# configs.cmake: every file in configs/ parses and resolves for every command (xrank <cmd> --print-config), its
# keys resolve from the file and are documented in docs/CONFIG.md; --print-config names each value's source.
add_test(NAME configs_resolve
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/configs/run_configs.sh ${CMAKE_SOURCE_DIR}
                 $<TARGET_FILE:xrank> ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_BINARY_DIR}/configs_resolve.out)
set_tests_properties(configs_resolve PROPERTIES TIMEOUT 120 LABELS "cli;config"
                     ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1")
