# ckpt.cmake: checkpoints through the built CLI under real mpirun (fixtures/ckpt/run_ckpt.sh says what each mode
# proves): exact resume (both losses, dropout on, 2 ranks with ZeRO-1 shards), resharding onto 1 and 4 ranks,
# atomicity under SIGKILL at each write phase, SIGTERM / SIGUSR1 stops, damaged checkpoints, export layout.
foreach(mode exact_bce exact_listwise reshard atomic signal damaged)
  add_test(NAME ckpt_${mode}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/ckpt/run_ckpt.sh ${mode} $<TARGET_FILE:xrank>
                   ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:test_trainer> ${CMAKE_CURRENT_SOURCE_DIR}
                   ${CMAKE_CURRENT_BINARY_DIR}/ckpt_${mode}.out)
  set_tests_properties(ckpt_${mode} PROPERTIES TIMEOUT 300 LABELS "cli;mpi;train;ckpt"
                       ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endforeach()
