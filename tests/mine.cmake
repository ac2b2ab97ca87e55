# mine.cmake: `xrank mine` through the built CLI on datasets tokenized by `xrank tokenize`: the same group file
# (and jsonl) byte for byte from 1 (plain process), 2 and 4 MPI ranks for several option sets (cross-encoder
# rescoring included); an embedding cache written by 4 ranks and read by 1; jsonl with text checked against
# the stores; and the bad inputs: a store of another tokenizer, num_negatives beyond the window, a group file
# re-exported against another dataset, text that does not match the stores. The mined values themselves are
# checked against a brute-force reference by test_mine.c. Driver: fixtures/mine/run_mine.cmake.
# xr_mine_test(NAME MODE <mode> DATA <input> ARGS <mine args> [VARS KEY=VALUE ...])
function(xr_mine_test name)
  cmake_parse_arguments(M "" "DATA" "" ${ARGN})
  xr_script_test(${name} SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/mine/run_mine.cmake LABELS cli mpi mine
                 DEFS -DWORK=${CMAKE_CURRENT_SOURCE_DIR} -DDATA=${M_DATA}
                 ENV OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ${M_UNPARSED_ARGUMENTS})
endfunction()

# Small batches, windows and blocks so that every rank embeds, searches, rescores and selects something.
set(XR_MINE_BASE --model fixtures/cli/bert_st --threads 1 --batch-size 2 --bucket-batches 2 --query-block 3 --quiet)
set(XR_BEIR fixtures/h5/beir)
set(XR_DUP fixtures/mine/dup)

# ---- identical groups for 1, 2 and 4 ranks
xr_mine_test(mine_ranks_default MODE ranks DATA ${XR_BEIR} ARGS ${XR_MINE_BASE} VARS JSONL=1)
xr_mine_test(mine_ranks_margin_random MODE ranks DATA ${XR_BEIR}
             ARGS ${XR_MINE_BASE} --num-negatives 4 --relative-margin 0.002 --sampling-strategy random --seed 3
                  --range-min 1 --passage-tile 5 --jsonl-format n-tuple --output-scores VARS JSONL=1)
xr_mine_test(mine_ranks_cross_encoder MODE ranks DATA ${XR_BEIR}
             ARGS ${XR_MINE_BASE} --cross-encoder fixtures/cli/bert_seqcls --ce-batch-size 3 --ce-max-score 0.47
                  --absolute-margin 0 --jsonl-format labeled-list --output-scores VARS JSONL=1)
xr_mine_test(mine_ranks_flag_duplicates MODE ranks DATA ${XR_DUP}
             ARGS ${XR_MINE_BASE} --range-for-sampling 0-10 --negative-number 4 --fill-from-corpus
                  --jsonl-format flagembedding VARS JSONL=1)
xr_mine_test(mine_ranks_flag_file MODE ranks DATA fixtures/h5/flag.jsonl.gz
             ARGS ${XR_MINE_BASE} --num-negatives 2 --query-prompt "query: " --corpus-prompt "passage: "
                  --pooling cls --jsonl-format labeled-pair VARS JSONL=1)

# ---- the default window (batch 32 x 64 rows) on a 50-passage corpus: both ranks still embed a part
xr_mine_test(mine_split_small_corpus MODE split DATA ${XR_BEIR} ARGS --model fixtures/cli/bert_st --threads 1
             VARS ROWS=50)

# ---- the embedding cache: written by 4 ranks in place, read by 1, same groups as without it
xr_mine_test(mine_cache MODE cache DATA ${XR_BEIR} ARGS --model fixtures/cli/bert_st --threads 1 --batch-size 2
             --bucket-batches 2)

# ---- jsonl with the original text, every text checked against the stored tokens
xr_mine_test(mine_jsonl_text MODE jsonl DATA ${XR_DUP}
             ARGS ${XR_MINE_BASE} --num-negatives 2 --text-from fixtures/mine/dup
             VARS "REGEX=\\{\"anchor\": \"how are rust programs compiled\", \"positive\": \"Rust programs are compiled ahead of time into native code.\", \"negative\": \"" LINES=12)
xr_mine_test(mine_jsonl_ids MODE jsonl DATA ${XR_DUP} ARGS ${XR_MINE_BASE} --num-negatives 2 --jsonl-format flagembedding
             VARS "REGEX=.\"query_id\": \"q1\", \"pos_ids\": .\"p1\", \"p2\"., \"neg_ids\": .\"p" LINES=4)

# ---- bad input: a clear message, a non-zero exit, nothing written
xr_mine_test(mine_err_tokenizer MODE fail DATA ${XR_DUP} ARGS ${XR_MINE_BASE}
             VARS NP=2 TOKMODEL=fixtures/tok/bert "REGEX=was tokenized with another tokenizer \\(wordpiece [0-9a-f]+\\) than the bi-encoder's")
xr_mine_test(mine_err_window MODE fail DATA ${XR_DUP} ARGS ${XR_MINE_BASE} --num-negatives 5 --range-max 4
             VARS NP=0 "REGEX=cannot mine 5 negatives per query: only 4 candidates remain")
xr_mine_test(mine_err_window_np2 MODE fail DATA ${XR_DUP} ARGS ${XR_MINE_BASE} --num-negatives 5 --range-max 4
             VARS NP=2 "REGEX=cannot mine 5 negatives per query")
xr_mine_test(mine_err_text_mismatch MODE fail DATA ${XR_BEIR}
             ARGS ${XR_MINE_BASE} --jsonl out.jsonl --text-from fixtures/h5/beir --title-sep " / "
             VARS NP=0 "REGEX=does not tokenize to the stored tokens")
xr_mine_test(mine_err_no_positive MODE fail DATA fixtures/h5/labeled.jsonl ARGS ${XR_MINE_BASE}
             VARS NP=0 "REGEX=no query has a positive")
xr_mine_test(mine_err_flag_options MODE fail DATA ${XR_DUP} ARGS ${XR_MINE_BASE} --range-for-sampling 5-3
             VARS NP=0 "REGEX=--range-for-sampling 5-3: expected A-B")
xr_mine_test(mine_err_ce_not_classifier MODE fail DATA ${XR_DUP} ARGS ${XR_MINE_BASE} --cross-encoder fixtures/cli/bert_st
             VARS NP=0 "REGEX=expected a sequence-classification model with one label")
xr_mine_test(mine_err_groups_other_dataset MODE regroup DATA ${XR_DUP} ARGS ${XR_MINE_BASE}
             VARS DATA2=${XR_BEIR} "REGEX=mined from a dataset of 4 queries and 16 passages .* but this one has 13 and 50")

# ---- at scale, on a synthetic corpus (tools/synth_corpus.sh; benchmarks/bench_mine_ranks.sh runs it with 200k
# passages): 1, 2 and 4 ranks, and the device search driver on the CPU backend resident and streamed under a
# --search-memory bound smaller than a rank's shard: byte-identical group files. mine_synth_cuda: the GPU search
# (fp32 and bf16 screening, resident, streamed, 2 ranks on one GPU) = the CPU search over the same embeddings;
# skipped (77) without a GPU.
foreach(mode cpu cuda)
  if(mode STREQUAL "cpu")
    set(sizes 8000 800)
  else()
    set(sizes 30000 1000)
  endif()
  add_test(NAME mine_synth_${mode}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/mine/run_mine_synth.sh $<TARGET_FILE:xrank>
                   ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/mine_synth_${mode}.out
                   ${mode} ${sizes})
  set_tests_properties(mine_synth_${mode} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 LABELS "cli;mpi;mine"
                       ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endforeach()
