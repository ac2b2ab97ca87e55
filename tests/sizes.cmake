# sizes.cmake: sizes that come from files, checked for overflow before use (issue 15; docs/RELIABILITY.md rows
# "sizes_*"). One ctest per crafted case of tests/sizes_crafted.c: tiny files whose claims lie (safetensors shape
# products and byte ranges past 2^31 and 2^63, offsets near 2^53 and 2^64; config.json sizes past int and past
# what the weights hold; vocab.txt / tokenizer.json / config.json of several GiB as sparse files; HDF5 shards,
# dataset indexes and group files whose extents, offsets, row counts and group size pass 2^31; unfiltered
# datasets storing fewer bytes than their extent). Each must be
# refused naming the file and the field, with the resident size staying under 200 MB.
add_executable(sizes_crafted ${CMAKE_CURRENT_SOURCE_DIR}/sizes_crafted.c)
target_link_libraries(sizes_crafted PRIVATE xrank_testutil)
foreach(c st_shape_2p31 st_shape_2p63 st_offsets_overflow config_sizes tokenizer_files h5_tokens_2p31
          h5_offsets_2p31 h5_index_rows groups_huge h5_unfiltered_short)
  add_test(NAME sizes_${c} COMMAND sizes_crafted ${c} WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(sizes_${c} PROPERTIES TIMEOUT 120 LABELS reliability)
endforeach()
