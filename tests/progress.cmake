# progress.cmake: progress of a long command when stderr is not a terminal (batch jobs, mpirun): plain periodic
# lines from rank 0 with done/total, rate and time left (fixtures/progress/run_progress.sh).
add_test(NAME cli_progress_log
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/progress/run_progress.sh $<TARGET_FILE:xrank>
                 ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/cli_progress_log.out)
set_tests_properties(cli_progress_log PROPERTIES TIMEOUT 180 LABELS "cli;mpi;train"
                     ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
