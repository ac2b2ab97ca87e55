# train.cmake: `xrank train` / `xrank eval` through the built CLI under mpirun: rank invariance (1 rank with
# gradient accumulation 2 and 2 ranks with 1 give the same parameters after 10 steps, 1e-5: BCE with dropout off,
# and listwise with dropout on, whose masks are keyed by the example's place in the global batch), eval on 1 and 2
# ranks giving the same JSON, the exported model read back by `xrank eval`, and bad input failing with a clear
# message. Driver: fixtures/train/run_train.cmake; data: the FlagEmbedding fixture tokenized for the tiny BERT.
set(XR_TRAIN_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
                 "OMPI_MCA_btl_vader_single_copy_mechanism=none;OMPI_MCA_btl=self,vader,tcp;OMPI_MCA_pml=ob1"
                 "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
function(xr_train_test name mode)
  add_test(NAME ${name}
           COMMAND ${CMAKE_COMMAND} -DXRANK=$<TARGET_FILE:xrank> -DMPIEXEC=${MPIEXEC_EXECUTABLE}
                   -DCOMPARE=$<TARGET_FILE:test_trainer> -DTESTS=${CMAKE_CURRENT_SOURCE_DIR}
                   -DOUT=${CMAKE_CURRENT_BINARY_DIR}/${name}.out -DMODE=${mode}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/train/run_train.cmake)
  set_tests_properties(${name} PROPERTIES TIMEOUT 300 ENVIRONMENT "${XR_TRAIN_ENV}" LABELS "cli;mpi;train")
endfunction()
xr_train_test(train_rank_invariance_bce bce)
xr_train_test(train_rank_invariance_listwise listwise)
xr_train_test(train_eval_ranks eval)
xr_train_test(train_bad_input errors)
