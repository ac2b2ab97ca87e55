# cli.cmake: tests that run the built `xrank` CLI: the same output from 1 (plain process), 2 and 3 MPI ranks,
# input on stdin under mpirun, and the error paths (file:line of a malformed line, missing field, unknown flag,
# existing output, wrong model kind, one rank failing mid-run aborting the whole job). The numbers themselves
# are checked against the reference by test_cli_reference.c. Driver: fixtures/cli/run_cli.cmake.
set(XR_CLI_WORK ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/cli)

# xr_cli_test(NAME MODE <mode> ARGS <xrank args> [VARS KEY=VALUE ...]: other run_cli.cmake variables)
function(xr_cli_test name)
  xr_script_test(${name} SCRIPT ${XR_CLI_WORK}/run_cli.cmake LABELS cli mpi DEFS -DWORK=${XR_CLI_WORK}
                 ENV OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ${ARGN})
endfunction()

# Small batches and windows so that every rank gets several windows of work.
set(XR_SMALL --batch-size 2 --bucket-batches 2 --threads 1 --quiet)
xr_cli_test(cli_score_ranks_bert MODE ranks VARS EXT=jsonl
            ARGS score --model bert_seqcls --input score_in.jsonl ${XR_SMALL})
xr_cli_test(cli_score_ranks_xlmr MODE ranks VARS EXT=jsonl
            ARGS score --model xlmr_seqcls --input score_in.jsonl --activation sigmoid ${XR_SMALL})
# Default window (one window: ranks 1 and 2 have nothing to do).
xr_cli_test(cli_score_ranks_idle MODE ranks VARS EXT=jsonl
            ARGS score --model bert_seqcls --input score_in.jsonl --threads 1 --quiet)
xr_cli_test(cli_score_ranks_empty MODE ranks VARS EXT=jsonl ALLOW_EMPTY=1
            ARGS score --model bert_seqcls --input empty.jsonl --threads 1 --quiet)
xr_cli_test(cli_embed_ranks_jsonl MODE ranks VARS EXT=jsonl
            ARGS embed --model bert_st --input embed_in.jsonl --batch-size 3 --bucket-batches 1 --threads 1 --quiet)
xr_cli_test(cli_embed_ranks_npy MODE ranks VARS EXT=npy
            ARGS embed --model bert_st --input embed_in.jsonl --pooling cls --normalize 0 ${XR_SMALL})
xr_cli_test(cli_embed_ranks_stdin MODE ranks VARS EXT=jsonl STDIN=embed_in.txt
            ARGS embed --model bert_st --input - --input-format text ${XR_SMALL})

xr_cli_test(cli_err_malformed_line MODE fail VARS NP=0 "REGEX=bad_json.jsonl:3: invalid JSON"
            ARGS score --model bert_seqcls --input bad_json.jsonl)
xr_cli_test(cli_err_malformed_line_np2 MODE fail VARS NP=2 "REGEX=bad_json.jsonl:3: invalid JSON"
            ARGS score --model bert_seqcls --input bad_json.jsonl --threads 1)
xr_cli_test(cli_err_missing_field MODE fail VARS NP=0 "REGEX=bad_missing.jsonl:3: missing \"query\""
            ARGS score --model bert_seqcls --input bad_missing.jsonl)
xr_cli_test(cli_err_unknown_flag MODE fail VARS NP=0 "REGEX=unknown flag '--bogus'"
            ARGS score --model bert_seqcls --input score_in.jsonl --bogus 1)
xr_cli_test(cli_err_bad_value MODE fail VARS NP=0 "REGEX=--batch-size: must be at least 1"
            ARGS embed --model bert_st --input embed_in.jsonl --batch-size 0)
xr_cli_test(cli_err_output_exists MODE fail VARS NP=0 EXISTING=1 "REGEX=exists \\(use --overwrite"
            ARGS score --model bert_seqcls --input score_in.jsonl)
xr_cli_test(cli_err_output_exists_np2 MODE fail VARS NP=2 EXISTING=1 "REGEX=exists \\(use --overwrite"
            ARGS embed --model bert_st --input embed_in.jsonl --threads 1)
xr_cli_test(cli_err_not_seqcls MODE fail VARS NP=0 "REGEX=not a sequence-classification model"
            ARGS score --model bert_st --input score_in.jsonl)
xr_cli_test(cli_err_precision MODE fail VARS NP=0 "REGEX=--precision bf16 needs --device cuda"
            ARGS score --model bert_seqcls --input score_in.jsonl --precision bf16)
xr_cli_test(cli_err_no_model MODE fail VARS NP=0 "REGEX=no_such_model"
            ARGS score --model ./no_such_model --input score_in.jsonl)
# Rank 1 meets a token id the model does not have, mid-run: the job must stop with the message (MPI_Abort),
# not hang with rank 0 waiting in the gather, and leave no output file.
xr_cli_test(cli_err_rank_abort MODE fail VARS NP=2 "REGEX=token id 1996 is outside the vocabulary"
            ARGS score --model bert_badvocab --input badvocab_in.jsonl --batch-size 1 --bucket-batches 1 --threads 1)
set_tests_properties(cli_err_rank_abort PROPERTIES TIMEOUT 60)
xr_cli_test(cli_help MODE ok VARS NP=0 "REGEX=--activation none\\|sigmoid.*examples:"
            ARGS score --help)
xr_cli_test(cli_err_config_key MODE fail VARS NP=0 "REGEX=bad_config.json: section \"score\": unknown key \"bach-size\""
            ARGS score --config bad_config.json --model bert_seqcls --input score_in.jsonl)
xr_cli_test(cli_err_max_length MODE fail VARS NP=0 "REGEX=--max-length 41 exceeds what the model can take \\(40 tokens"
            ARGS score --model xlmr_seqcls --input score_in.jsonl --max-length 41)

# The one setup path (issue 9): the same mistake gives the same message on every command, --device / --precision
# are accepted by every computing command and what cannot run is refused up front with the reason, config files
# and flags take both spellings and refuse unknown keys, and the user-found bugs stay fixed. Driver:
# fixtures/cli/run_cli_checks.cmake (one MODE per check).
foreach(check max_length threads device output_exists config hyperparameters version inspect_groups)
  xr_script_test(cli_setup_${check} SCRIPT ${XR_CLI_WORK}/run_cli_checks.cmake MODE ${check} LABELS cli
                 DEFS -DTESTS=${CMAKE_CURRENT_SOURCE_DIR} -DROOT=${CMAKE_SOURCE_DIR}
                 ENV OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)
endforeach()
# Invalid UTF-8 in the input of score and embed: refused naming file:line and the byte (1 and 2 ranks, stdin), or
# read as U+FFFD with --utf8-errors replace, counted, and scored like the text without the bad bytes.
add_test(NAME cli_utf8_errors COMMAND bash ${XR_CLI_WORK}/run_utf8.sh $<TARGET_FILE:xrank> ${MPIEXEC_EXECUTABLE}
         ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/cli_utf8_errors.out)
set_tests_properties(cli_utf8_errors PROPERTIES TIMEOUT 120 LABELS "cli;mpi;reliability" ENVIRONMENT "${XR_MPI_TEST_ENV}")
