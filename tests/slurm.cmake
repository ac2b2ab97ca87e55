# slurm.cmake: the sbatch scripts of launch/slurm/ on a real Slurm started on this machine (fixtures/slurm/
# run_slurm.sh says what each mode proves): a 2-task CPU job ends byte-identical to the same run under plain
# mpirun; a job signalled mid-training checkpoints, requeues and resumes to the same weights; the GPU scripts
# (srun + PMIx, mpirun) run the same job on CPU. Skipped (77, with
# the reason) where Slurm cannot be installed or started.
foreach(mode job preempt gpu_scripts)
  add_test(NAME slurm_${mode}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/slurm/run_slurm.sh ${mode} $<TARGET_FILE:xrank>
                   ${MPIEXEC_EXECUTABLE} ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/slurm_${mode}.out)
  set_tests_properties(slurm_${mode} PROPERTIES TIMEOUT 400 LABELS "slurm;mpi;train;ckpt" SKIP_RETURN_CODE 77
                       ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endforeach()
