# reliability.cmake: damaged and hostile inputs (docs/RELIABILITY.md lists each case and its test). Inspect of
# damaged stores: old-style variable-length string attributes whose global heap makes libhdf5 loop forever or
# crash (read in a child process with a time limit), a dataset extent far beyond the bytes stored (libhdf5 would
# walk 16 M chunks), a flipped byte in the root attribute message (h5dump fails; inspect must too), a model
# directory without a tokenizer; and an undamaged old-style store still read.
function(xr_damaged_test name)
  xr_script_test(${name} SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/damaged/run_damaged.cmake LABELS reliability
                 TIMEOUT 90 DEFS -DWORK=${CMAKE_CURRENT_SOURCE_DIR} ${ARGN})
endfunction()
xr_damaged_test(inspect_damaged_vlen_heap_loop MODE file
                VARS FILE=fixtures/damaged/vlen_heap_loop.h5 "REGEX=xrank_format is damaged: libhdf5 did not finish")
xr_damaged_test(inspect_damaged_vlen_heap_crash MODE file
                VARS FILE=fixtures/damaged/vlen_heap_crash.h5 "REGEX=xrank_format is damaged: reading it crashed")
xr_damaged_test(inspect_damaged_extent MODE file
                VARS FILE=fixtures/damaged/extent_huge.h5 "REGEX=offsets claims 16777225 elements.*damaged file")
xr_damaged_test(inspect_damaged_root_attr MODE file
                VARS FILE=fixtures/damaged/root_attr_flip.h5 "REGEX=bad version number for attribute message")
xr_damaged_test(inspect_old_vlen_store_reads MODE file
                VARS FILE=fixtures/damaged/old_vlen_ok.h5 RC=0 "REGEX=rows \\[0, 8\\) of 8.*checks passed")
xr_damaged_test(inspect_model_without_tokenizer MODE model_no_tokenizer VARS "REGEX=PROBLEM: .*no tokenizer found")
# A full disk (2 MB tmpfs; skipped where mount is not allowed) under tokenize --overwrite and mine --overwrite.
foreach(cmd tokenize mine)
  xr_script_test(${cmd}_full_disk SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/damaged/run_fulldisk.cmake MODE ${cmd}
                 LABELS reliability TIMEOUT 180 DEFS -DWORK=${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(${cmd}_full_disk PROPERTIES SKIP_REGULAR_EXPRESSION "skipped: cannot mount")
endforeach()
# Outputs: mine --overwrite replaces only group files; eval --output needs --overwrite like every command.
xr_damaged_test(mine_overwrite_not_group_file MODE mine_overwrite_foreign VARS "REGEX=is not an xrank group file")
xr_damaged_test(eval_output_exists MODE eval_output_exists VARS "REGEX=exists \\(use --overwrite")
# The training output directory (launch/run_dir.h) under failures and real kill -9; train on a full disk (2 MB
# tmpfs; skipped where mount is not allowed) fails at its first metrics line or checkpoint, earlier run intact.
foreach(mode outdir full_disk)
  add_test(NAME train_${mode} COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/outdir/run_train_outdir.sh
           $<TARGET_FILE:xrank> ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/train_${mode}.out ${mode})
  set_tests_properties(train_${mode} PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77 LABELS "reliability;train"
                       ENVIRONMENT "${XR_MPI_TEST_ENV}")
endforeach()
# SIGINT / SIGTERM during tokenize (one process, and mpirun -np 2) leave no DIR.tmp.*; the next run removes the
# temporary directories of dead processes of this host and names the others.
add_test(NAME tokenize_interrupted COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/outdir/run_tokenize_signal.sh
         $<TARGET_FILE:xrank> ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/tokenize_interrupted.out)
set_tests_properties(tokenize_interrupted PROPERTIES TIMEOUT 180 LABELS "reliability;mpi" ENVIRONMENT "${XR_MPI_TEST_ENV}")
# tokenize --overwrite over a dataset holding a subfolder (mine's embeddings/ cache) replaces it whole, also when
# SIGTERM comes right after the exchange; symbolic links in the old copy are removed, never followed.
add_test(NAME tokenize_overwrite_tree COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/outdir/run_tokenize_overwrite_tree.sh
         $<TARGET_FILE:xrank> ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/tokenize_overwrite_tree.out)
set_tests_properties(tokenize_overwrite_tree PROPERTIES TIMEOUT 120 LABELS reliability)
# The same for the outputs of score, embed (also mpirun -np 2), mine (group file, jsonl, embedding cache) and export,
# paused by XR_TEST_PAUSE_AT with the temporary output present (their window is the final write only); the next
# score removes a dead process's temporary output.
add_test(NAME outputs_interrupted COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/outdir/run_output_signal.sh
         $<TARGET_FILE:xrank> ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/outputs_interrupted.out)
set_tests_properties(outputs_interrupted PROPERTIES TIMEOUT 180 LABELS "reliability;mpi" ENVIRONMENT "${XR_MPI_TEST_ENV}")
# score on a model whose safetensors file is truncated names the file (it said "not a sequence-classification model").
xr_damaged_test(score_truncated_model MODE score_truncated
                VARS "REGEX=model/model.safetensors: tensor '[^']+': data_offsets .* file truncated")
# mine, train and eval refuse a store tokenized with another tokenizer than the model's, naming both fingerprints.
xr_damaged_test(tokenizer_mismatch_refused MODE tokenizer_mismatch)
# The checksum record of every HDF5 file xrank writes (io/h5sum.c): a store / a group file with a byte flipped in
# its data, its superblock or its record, or cut short, is refused naming the file by inspect, mine, train and eval
# before libhdf5 reads it; the undamaged ones verify (h5dump still reads them); an old store without a record is
# read and said to have none.
find_program(XR_H5DUMP_BIN h5dump)
foreach(kind store groups legacy)
  add_test(NAME checksum_damaged_${kind} COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/damaged/run_checksum.sh
           $<TARGET_FILE:xrank> ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/checksum_${kind}.out ${kind}
           "${XR_H5DUMP_BIN}" ${MPIEXEC_EXECUTABLE})
  set_tests_properties(checksum_damaged_${kind} PROPERTIES TIMEOUT 180 LABELS reliability
                       ENVIRONMENT "${XR_MPI_TEST_ENV}")
endforeach()
