# h5.cmake: tests of `xrank tokenize` and `xrank inspect` through the built CLI: the same dataset (every file
# byte-identical, h5dump identical) from 1 (plain process), 2 and 3 MPI ranks for BEIR (BERT WordPiece and
# XLM-R SentencePiece), FlagEmbedding .gz and csv pairs; the BEIR stores equal the Hugging Face tokenizer's
# ids (test_dataset --check); the documented layout seen by h5ls / h5dump; every bad input failing with
# file:line and leaving no output; `xrank inspect` catching damaged datasets. Driver: fixtures/h5/run_h5.cmake.
find_program(XR_H5LS h5ls)
find_program(XR_H5DUMP h5dump)
# xr_h5_test(NAME MODE <mode> ARGS <xrank args> [VARS KEY=VALUE ...])
function(xr_h5_test name)
  xr_script_test(${name} SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/h5/run_h5.cmake LABELS cli mpi h5
                 DEFS -DWORK=${CMAKE_CURRENT_SOURCE_DIR} -DCHECKER=$<TARGET_FILE:test_dataset> -DH5LS=${XR_H5LS}
                      -DH5DUMP=${XR_H5DUMP}
                 ENV OMP_NUM_THREADS=2 ${ARGN})
  if(NOT XR_H5LS OR NOT XR_H5DUMP)
    set_tests_properties(${name} PROPERTIES DISABLED TRUE) # hdf5-tools missing
  endif()
endfunction()

set(XR_BERT --model fixtures/tok/bert)
set(XR_BEIR tokenize ${XR_BERT} --input fixtures/h5/beir)

# ---- the same bytes for 1, 2 and 3 ranks (small shards so that every rank writes some)
xr_h5_test(h5_tokenize_ranks_beir MODE ranks VARS CHECK=1 ARGS ${XR_BEIR} --shard-size 4K --threads 2)
xr_h5_test(h5_tokenize_ranks_beir_xlmr MODE ranks
           ARGS tokenize --model fixtures/tok/xlmr --input fixtures/h5/beir --shard-size 3K --threads 1)
xr_h5_test(h5_tokenize_ranks_flag_gz MODE ranks
           ARGS tokenize ${XR_BERT} --input fixtures/h5/flag.jsonl.gz --shard-size 2K --threads 1)
xr_h5_test(h5_tokenize_ranks_pairs_cut MODE ranks
           ARGS tokenize ${XR_BERT} --input fixtures/h5/pairs.csv,fixtures/h5/pairs.tsv --max-passage-tokens 16
                --max-query-tokens 6 --shard-size 1K --threads 3)

# ---- the documented layout, as h5ls and h5dump see it
xr_h5_test(h5_tokenize_layout MODE layout ARGS ${XR_BEIR} --shard-size 4K --quiet
           VARS "LAYOUT===== index.h5@@==== passages-00002.h5@@==== queries-00000.h5@@/passages/tokens +Dataset {[0-9]+/Inf}@@/passages/offsets +Dataset {[0-9]+/Inf}@@/passages/ids +Dataset@@/queries/tokens +Dataset@@/passages/shard_files +Dataset {3/Inf}@@/passages/shard_row_offsets +Dataset {4/Inf}@@/qrels/query +Dataset {16/Inf}@@/qrels/passage +Dataset@@/qrels/grade +Dataset@@/negatives/query +Dataset {0/Inf}@@/labels/label +Dataset@@ATTRIBUTE \"xrank_format\"@@\"xrank.dataset\"@@\"xrank.tokens\"@@ATTRIBUTE \"tokenizer_fingerprint\"@@ATTRIBUTE \"tokenizer_kind\"@@\"wordpiece\"@@ATTRIBUTE \"row_start\"@@ATTRIBUTE \"sources\"@@\"fixtures/h5/beir/corpus.jsonl\"@@ATTRIBUTE \"format_version\"")

# ---- bad input: file:line, non-zero exit, nothing left behind
function(xr_h5_fail name np input regex)
  xr_h5_test(${name} MODE fail VARS NP=${np} "REGEX=${regex}" ARGS tokenize ${XR_BERT} --input ${input} ${ARGN})
endfunction()
xr_h5_fail(h5_err_malformed_json 0 fixtures/h5/bad/malformed.jsonl "malformed.jsonl:3: malformed JSON")
xr_h5_fail(h5_err_malformed_json_np2 2 fixtures/h5/bad/malformed.jsonl "malformed.jsonl:3: malformed JSON")
xr_h5_fail(h5_err_not_object 0 fixtures/h5/bad/not_object.jsonl "not_object.jsonl:3: expected a JSON object")
xr_h5_fail(h5_err_missing_field 0 fixtures/h5/bad/missing_field.jsonl "missing_field.jsonl:2: missing field \"pos\"")
xr_h5_fail(h5_err_scores 0 fixtures/h5/bad/scores_mismatch.jsonl "scores_mismatch.jsonl:1: field \"pos_scores\"")
xr_h5_fail(h5_err_empty_text 0 fixtures/h5/bad/empty_text.csv "empty_text.csv:3: empty text in a positive")
xr_h5_fail(h5_err_ragged_csv_np3 3 fixtures/h5/bad/ragged.csv "ragged.csv:4: 2 fields, but the header has 3")
xr_h5_fail(h5_err_unterminated_csv 0 fixtures/h5/bad/unterminated.csv "unterminated.csv:3: unterminated quoted")
xr_h5_fail(h5_err_bad_quote 0 fixtures/h5/bad/bad_quote.csv "bad_quote.csv:2: unexpected character 'x'")
xr_h5_fail(h5_err_bad_label 0 fixtures/h5/bad/bad_label.csv "bad_label.csv:3: label \"high\"")
xr_h5_fail(h5_err_header_only 0 fixtures/h5/bad/header_only.csv "header_only.csv: no rows")
xr_h5_fail(h5_err_truncated_gz_np2 2 fixtures/h5/bad/truncated.jsonl.gz
           "truncated.jsonl.gz: truncated or corrupt gzip data after line [0-9]+")
xr_h5_fail(h5_err_beir_dangling 0 fixtures/h5/bad/beir_dangling "test.tsv:3: corpus id \"d999\" is not in")
xr_h5_fail(h5_err_beir_dangling_np2 2 fixtures/h5/bad/beir_dangling "test.tsv:3: corpus id \"d999\" is not in")
xr_h5_fail(h5_err_beir_unknown_query 0 fixtures/h5/bad/beir_unknown_query "test.tsv:3: query id \"q7\" is not in")
xr_h5_fail(h5_err_beir_dup_id 0 fixtures/h5/bad/beir_dup_id "corpus.jsonl:3: duplicate _id \"d1\"")
xr_h5_fail(h5_err_beir_bad_score 0 fixtures/h5/bad/beir_bad_score "test.tsv:3: score \"high\" is not an integer")
xr_h5_fail(h5_err_beir_empty_doc 0 fixtures/h5/bad/beir_empty_doc "corpus.jsonl:3: empty text in the document")
xr_h5_fail(h5_err_beir_short_qrels 0 fixtures/h5/bad/beir_short_qrels "test.tsv:3: 2 tab-separated fields")
xr_h5_fail(h5_err_no_input 0 fixtures/h5/none.jsonl "none.jsonl: cannot open")
xr_h5_fail(h5_err_bad_model 0 fixtures/h5/pairs.csv "error: .*fixtures/h5/no_model" --model fixtures/h5/no_model)
xr_h5_fail(h5_err_shard_size 0 fixtures/h5/pairs.csv "--shard-size 0: expected a positive size" --shard-size 0)
xr_h5_fail(h5_err_unknown_flag 0 fixtures/h5/pairs.csv "unknown flag '--bogus'" --bogus 1)
xr_h5_fail(h5_err_column 0 fixtures/h5/pairs.csv "pairs.csv: no column named \"q\" \\(from --query-column\\)"
           --query-column q --positive-column positive)
xr_h5_test(h5_err_output_exists MODE fail VARS NP=0 EXISTING=1 "REGEX=exists \\(use --overwrite"
           ARGS ${XR_BEIR})
xr_h5_test(h5_err_output_exists_np2 MODE fail VARS NP=2 EXISTING=1 "REGEX=exists \\(use --overwrite"
           ARGS ${XR_BEIR})
xr_h5_test(h5_err_overwrite_foreign_dir MODE fail VARS NP=0 EXISTING=1 "REGEX=not an xrank dataset"
           ARGS ${XR_BEIR} --overwrite)

# ---- xrank inspect finds what is wrong in damaged copies of a good dataset
xr_h5_test(h5_inspect_bad MODE inspect_bad ARGS ${XR_BEIR} --shard-size 4K --quiet
           VARS "REGEX_dangling_qrels=PROBLEM: qrels: 1 dangling"
                "REGEX_token_out_of_vocab=token id 40000 at /passages/tokens.5. is outside the vocabulary .0, 30522."
                "REGEX_offsets_backwards=passages-00000.h5: /passages/offsets not monotonic at row 2"
                "REGEX_shard_table=passages-00000.h5 holds rows .0, [0-9]+. but index.h5 lists .0, 3.")
