# comm.cmake: the buffer collectives (tests/test_comm.c) under real mpirun: MPI on host memory and the staged
# communicator (host copies of the CPU backend's buffers) on 2 and 3 ranks (3: parts not dividing evenly);
# on a GPU also the staged communicator on CUDA memory with 2 ranks sharing the GPU (NCCL at one rank is the
# plain test_comm_nccl1 below). And a dead or stopped peer: rank 1 of 2 SIGKILLs / SIGSTOPs itself in a loop of
# all-reduces (mpi) or of node-shared-memory flag waits (shm, the trainer's default exchange on one node); the job
# must end non-zero within the timeout, naming rank 1 (run_comm_stall.cmake). And a slow peer: rank 1 computes for
# 10.5 s (3.5x --comm-timeout 3; alive) and the job must finish (comm_slow_peer*), or with --comm-stall-timeout 6
# below that it must stop naming rank 1 as alive but late (comm_stalled_peer*). And a peer that left: rank 1 ends
# (exit 0 / 1 through comm_leave and the teardown) instead of an exchange; rank 0 must stop within seconds naming it
# (comm_left_peer_ok / _fail, comm_left_peer_shm_ok / _fail); or exits without any teardown (comm_left_peer_exit*:
# rank 0's message from the atexit mark, or mpirun's report, whichever is first). And an MPI below MPI_THREAD_FUNNELED (faked by
# XR_TEST_MPI_THREAD_LEVEL=single) is refused with the level named (comm_thread_level_refused).
function(xr_comm_test name np)
  add_test(NAME ${name} COMMAND ${MPIEXEC_EXECUTABLE} -np ${np} --oversubscribe $<TARGET_FILE:test_comm> ${ARGN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77 LABELS "mpi;comm"
                       ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1")
endfunction()
xr_comm_test(comm_mpi_2 2 --impl mpi)
xr_comm_test(comm_mpi_3 3 --impl mpi)
xr_comm_test(comm_staged_cpu_2 2 --impl staged)
xr_comm_test(comm_staged_cpu_3 3 --impl staged)
xr_comm_test(comm_staged_cuda_2 2 --impl staged --device cuda)
add_test(NAME test_comm_nccl1 COMMAND test_comm --impl nccl)
set_tests_properties(test_comm_nccl1 PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120 LABELS "comm;gpu")
foreach(impl mpi shm)
  foreach(how kill stop leave-ok leave-fail leave-exit)
    string(REPLACE "-" "_" tag ${how})
    if(how MATCHES "^leave")
      string(REPLACE "leave_" "" tag ${tag})
      set(name comm_left_peer_${tag})
    else()
      set(name comm_dead_peer_${tag})
    endif()
    if(impl STREQUAL "shm")
      string(REPLACE "_peer_" "_peer_shm_" name ${name})
    endif()
    add_test(NAME ${name}
             COMMAND ${CMAKE_COMMAND} -DMPIEXEC=${MPIEXEC_EXECUTABLE} -DTEST_COMM=$<TARGET_FILE:test_comm> -DHOW=${how}
                     -DIMPL=${impl} -P ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/comm/run_comm_stall.cmake)
    set_tests_properties(${name} PROPERTIES TIMEOUT 120 LABELS "mpi;comm"
                         ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1")
  endforeach()
endforeach()
foreach(impl mpi shm)
  set(sfx "")
  if(impl STREQUAL "shm")
    set(sfx "_shm")
  endif()
  add_test(NAME comm_slow_peer${sfx}
           COMMAND ${CMAKE_COMMAND} -DMPIEXEC=${MPIEXEC_EXECUTABLE} -DTEST_COMM=$<TARGET_FILE:test_comm> -DHOW=busy
                   -DBUSY=10.5 -DIMPL=${impl} -P ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/comm/run_comm_stall.cmake)
  add_test(NAME comm_stalled_peer${sfx}
           COMMAND ${CMAKE_COMMAND} -DMPIEXEC=${MPIEXEC_EXECUTABLE} -DTEST_COMM=$<TARGET_FILE:test_comm> -DHOW=busy
                   -DBUSY=60 -DSTALL=6 -DIMPL=${impl} -P ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/comm/run_comm_stall.cmake)
  set_tests_properties(comm_slow_peer${sfx} comm_stalled_peer${sfx} PROPERTIES TIMEOUT 120 LABELS "mpi;comm"
                       ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1")
endforeach()
# Ranks on other nodes, faked on this machine (XR_TEST_NODE_SPLIT: "rank", each rank its own node, or 2 ranks per
# node), only rank 0 judging: killed, mpirun ends the job; stopped (rank 3 of 4, not its node's leader: relayed by
# rank 2's UDP heartbeat), rank 0 stops the job after --comm-timeout naming it; ended early (exit 0 / 1), rank 0 stops
# within seconds naming it; busy 10.5 s (3.5x --comm-timeout 3) on another node, not stopped; with the UDP relay
# off (XR_TEST_NO_UDP), a stopped one is caught by --comm-stall-timeout (4 s here) only, named dead or hung. Leaders
# with one host name on different machines (faked: XR_TEST_HBNET_APART, each leader its own network stack id and
# a socket loopback does not reach): the stopped rank is still named through the relay (comm_remote_peer_stop_apart).
# The same over IPv6 alone (XR_TEST_HBNET_V6): on ::1, and apart on the machine's own IPv6 address (_v6, _v6_apart).
function(xr_comm_remote_test name how np split)
  add_test(NAME ${name}
           COMMAND ${CMAKE_COMMAND} -DMPIEXEC=${MPIEXEC_EXECUTABLE} -DTEST_COMM=$<TARGET_FILE:test_comm> -DHOW=${how}
                   -DIMPL=mpi -DREMOTE=1 -DNP=${np} -DSPLIT=${split} ${ARGN}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/comm/run_comm_stall.cmake)
  set_tests_properties(${name} PROPERTIES TIMEOUT 120 LABELS "mpi;comm"
                       ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1")
endfunction()
xr_comm_remote_test(comm_remote_peer_kill kill 2 rank)
xr_comm_remote_test(comm_remote_peer_stop stop 4 2)
xr_comm_remote_test(comm_remote_peer_left_ok leave-ok 2 rank)
xr_comm_remote_test(comm_remote_peer_left_fail leave-fail 2 rank)
xr_comm_remote_test(comm_remote_peer_busy busy 4 2 -DBUSY=10.5)
xr_comm_remote_test(comm_remote_peer_stop_no_udp stop 2 rank -DNOUDP=1 -DSTALL=4)
xr_comm_remote_test(comm_remote_peer_stop_apart stop 4 2 -DAPART=1 -DSTALL=30)
xr_comm_remote_test(comm_remote_peer_stop_v6 stop 4 2 -DV6=1 -DSTALL=30)
xr_comm_remote_test(comm_remote_peer_stop_v6_apart stop 4 2 -DV6=1 -DAPART=1 -DSTALL=30)
# A peer that left after its part, with 3 ranks (run_comm_left_after.cmake): rank 1 takes part in a gather to rank 0
# (or a broadcast from it) and leaves, rank 2 is busy 6 s (2x --comm-timeout 3) before it: rank 0 must wait for rank 2,
# not name rank 1, and complete (comm_left_after_gather / _gather_fail / _bcast); with --comm-stall-timeout 4 below
# rank 2's 30 s, rank 0 must stop naming rank 2 as not having reached the gather (comm_left_after_gather_stall).
foreach(what gather gather-fail bcast)
  string(REPLACE "-" "_" tag ${what})
  add_test(NAME comm_left_after_${tag}
           COMMAND ${CMAKE_COMMAND} -DMPIEXEC=${MPIEXEC_EXECUTABLE} -DTEST_COMM=$<TARGET_FILE:test_comm> -DWHAT=${what}
                   -DBUSY=6 -P ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/comm/run_comm_left_after.cmake)
endforeach()
add_test(NAME comm_left_after_gather_stall
         COMMAND ${CMAKE_COMMAND} -DMPIEXEC=${MPIEXEC_EXECUTABLE} -DTEST_COMM=$<TARGET_FILE:test_comm> -DWHAT=gather
                 -DBUSY=30 -DSTALL=4 -P ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/comm/run_comm_left_after.cmake)
set_tests_properties(comm_left_after_gather comm_left_after_gather_fail comm_left_after_bcast
                     comm_left_after_gather_stall PROPERTIES TIMEOUT 120 LABELS "mpi;comm"
                     ENVIRONMENT "${XR_MPI_TEST_ENV};OMP_NUM_THREADS=1")
add_test(NAME comm_thread_level_refused COMMAND test_comm --impl mpi)
set_tests_properties(comm_thread_level_refused PROPERTIES TIMEOUT 60 LABELS "comm"
                     ENVIRONMENT "${XR_MPI_TEST_ENV};XR_TEST_MPI_THREAD_LEVEL=single"
                     PASS_REGULAR_EXPRESSION "MPI provides the thread level MPI_THREAD_SINGLE, xrank needs MPI_THREAD_FUNNELED")
# The same through the trainer: rank 1 of `xrank train` on mpirun -np 2 SIGSTOPped after its first logged step.
add_test(NAME train_dead_peer_stop COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/comm/run_train_dead_peer.sh
         $<TARGET_FILE:xrank> ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/train_dead_peer_stop.out)
set_tests_properties(train_dead_peer_stop PROPERTIES TIMEOUT 120 LABELS "mpi;comm;train"
                     ENVIRONMENT "${XR_MPI_TEST_ENV}")
# A peer that left, through the trainer: XR_TEST_LEAVE=ok / fail makes rank 1 of `xrank train` on mpirun -np 2 skip
# training and end with exit 0 / 1 (tc_finish / tc_fail: comm_leave, then the node-shared data's collective free);
# rank 0 must stop within 15 s of rank 1's note, naming it. A healthy 2-rank run first: exit 0, no such message.
add_test(NAME train_left_peer_stop COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/comm/run_train_left_peer.sh
         $<TARGET_FILE:xrank> ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/train_left_peer_stop.out)
set_tests_properties(train_left_peer_stop PROPERTIES TIMEOUT 180 LABELS "mpi;comm;train"
                     ENVIRONMENT "${XR_MPI_TEST_ENV}")
