# plot.cmake: `xrank plot` (cairo) on a written metrics.jsonl: PNG + SVG, the picture follows the data, refusals.
add_test(NAME cli_plot
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/plot/run_plot.sh $<TARGET_FILE:xrank>
                 ${CMAKE_CURRENT_BINARY_DIR}/cli_plot.out)
set_tests_properties(cli_plot PROPERTIES TIMEOUT 60 LABELS "cli;plot" SKIP_RETURN_CODE 77)
