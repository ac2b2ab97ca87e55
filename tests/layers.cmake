# layers.cmake: the build holds the layers (docs/DESIGN.md, "Layers"). Each layers_up_* test compiles one
# scratch file with the include path of a layer's own sources and passes only when the compiler stops because an
# include that points upward (or into a backend, a private header, a library kept by another layer) names no
# file it can see; layers_down_* compile downward includes that must work, so the probes prove the rule and not
# a broken probe. layers_system_includes scans the sources for library headers that sit on the compiler's default
# path (cblas.h, nccl.h), which include directories cannot hide. Probes are built on demand (not in `all`).
set(XR_PROBE_DIR ${CMAKE_CURRENT_BINARY_DIR}/layer_probes)

# xr_layer_probe(<test name> <target whose sources' include path is used> <expect: up|down> <headers..>)
function(xr_layer_probe name target expect)
  set(src ${XR_PROBE_DIR}/${name}.c)
  set(text "/* ${name}: written by tests/layers.cmake. */\n")
  foreach(h ${ARGN})
    string(APPEND text "#include ${h}\n")
  endforeach()
  string(APPEND text "int ${name}_probe(void);\nint ${name}_probe(void) { return 0; }\n")
  file(WRITE ${src} "${text}")
  add_library(${name} OBJECT EXCLUDE_FROM_ALL ${src})
  target_include_directories(${name} PRIVATE $<TARGET_PROPERTY:${target},INCLUDE_DIRECTORIES>)
  target_compile_definitions(${name} PRIVATE $<TARGET_PROPERTY:${target},COMPILE_DEFINITIONS>)
  add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target ${name})
  # one build at a time in this tree; the probes share nothing else with the suite
  set_tests_properties(${name} PROPERTIES LABELS layers RESOURCE_LOCK xr_build_tree TIMEOUT 120)
  if(expect STREQUAL "up")
    list(GET ARGN 0 first)
    string(REGEX REPLACE "^[<\"](.*)[>\"]$" "\\1" file ${first})
    string(REPLACE "." "\\." file ${file})
    # gcc: "x.h: No such file or directory"; clang: "'x.h' file not found"
    set_tests_properties(${name} PROPERTIES PASS_REGULAR_EXPRESSION "${file}'?:? (No such file or directory|file not found)")
  endif()
endfunction()

# upward: a layer including a header of a layer above it
xr_layer_probe(layers_up_base_io       xrank_base   up "\"tokenizer.h\"")
xr_layer_probe(layers_up_io_core       xrank_io     up "\"ops.h\"")
xr_layer_probe(layers_up_core_dist     xrank_core   up "\"trainer.h\"")
xr_layer_probe(layers_up_core_mining   xrank_core   up "\"mine.h\"")
xr_layer_probe(layers_up_dist_mining   xrank_dist   up "\"mine.h\"")
xr_layer_probe(layers_up_mining_launch xrank_mining up "\"cli_common.h\"")
# into core's backends from above core, into io's private headers from above io
xr_layer_probe(layers_up_mining_cpu    xrank_mining up "\"cpu/cpu_ops.h\"")
xr_layer_probe(layers_up_launch_cuda   xrank        up "\"cuda/ops_cuda.h\"")
xr_layer_probe(layers_up_core_io_private xrank_core up "\"tok_internal.h\"")
xr_layer_probe(layers_up_mining_dist_private xrank_mining up "\"comm_impl.h\"")
xr_layer_probe(layers_up_core_io_internal xrank_core up "\"h5_internal.h\"")
# a library another layer keeps: MPI is dist's, HDF5 io's
xr_layer_probe(layers_up_launch_mpi    xrank        up "<mpi.h>")
xr_layer_probe(layers_up_core_hdf5     xrank_core   up "<hdf5.h>")
# downward: every layer below is visible
xr_layer_probe(layers_down_mining      xrank_mining down "\"xr_common.h\"" "\"tokenizer.h\"" "\"ops.h\"" "\"trainer.h\""
               "\"mine.h\"")
xr_layer_probe(layers_down_launch      xrank        down "\"xr_common.h\"" "\"h5store.h\"" "\"model.h\"" "\"comm.h\""
               "\"knn.h\"" "\"cli_common.h\"")
xr_layer_probe(layers_down_core_cpu    xrank_core   down "\"cpu/cpu_ops.h\"")

add_test(NAME layers_system_includes
         COMMAND ${CMAKE_COMMAND} -DROOT=${CMAKE_SOURCE_DIR} -P ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/layers/run_scan.cmake)
set_tests_properties(layers_system_includes PROPERTIES LABELS layers)
