# launch.cmake: launch/xrank-run, the mpirun wrapper: the line it prints on CPU / GPU / Slurm, its refusals, and
# a real 2-rank run whose printed line gives the same output when run again.
add_test(NAME launch_xrank_run
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/launch/run_xrank_run.sh ${CMAKE_SOURCE_DIR}
                 $<TARGET_FILE:xrank> ${CMAKE_CURRENT_BINARY_DIR}/launch_xrank_run.out)
set_tests_properties(launch_xrank_run PROPERTIES TIMEOUT 120 LABELS "cli;mpi;launch"
                     ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
