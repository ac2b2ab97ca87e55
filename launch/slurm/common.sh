# launch/slurm/common.sh: sourced by the sbatch scripts of launch/slurm/: find the xrank tree, and run a launch
# line with the preemption wiring that tests/fixtures/slurm/run_slurm.sh exercises on a real local Slurm:
#   - the job asks for SIGUSR1 on its batch shell before the time limit (#SBATCH --signal=B:USR1@SECONDS) and is
#     requeueable (#SBATCH --requeue; --open-mode=append keeps the log of every attempt);
#   - the batch shell forwards USR1 to the launcher (mpirun and srun both pass SIGUSR1 on to every rank); the
#     ranks agree to stop at the end of the step, write a checkpoint and exit 0;
#   - the shell then requeues the job (scontrol requeue), and the next attempt's `xrank train --resume auto`
#     continues from OUTPUT/latest.
# Why USR1 to the batch shell ("B:") and not to the steps: the shell must know the run was stopped to requeue it,
# and with the mpirun launch the step processes Slurm would signal are Open MPI's daemons, not the ranks. Why not
# SIGTERM: at a cancel or a preemption Slurm sends SIGTERM to every process of the job at once (ranks, srun,
# mpirun, the shell) and SIGKILL KillWait seconds later; a rank launched by srun then gets it twice (directly and
# forwarded by srun), and xrank takes a second stop signal as "die now". To stop a job cleanly by hand:
#   scancel --batch --signal=USR1 JOBID
XRANK_HOME=${XRANK_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
if [ ! -x "$XRANK_HOME/launch/xrank-run" ]; then
    echo "xrank slurm job: $XRANK_HOME is not an xrank tree (no launch/xrank-run): submit from the tree's root or" \
         "set XRANK_HOME" >&2
    exit 2
fi

# xr_slurm_args ARGS...: the xrank arguments of this attempt in XR_ARGS: `train` continues from its latest
# checkpoint when the output holds one (--resume auto), unless the arguments choose a --resume themselves.
xr_slurm_args() {
    XR_ARGS=("$@")
    [ "${1:-}" = train ] || return 0
    local a
    for a in "$@"; do case $a in --resume | --resume=*) return 0 ;; esac; done
    XR_ARGS+=(--resume auto)
}

# xr_slurm_run LAUNCH...: run the launch line, forward SIGUSR1 to it, requeue the job when the run stopped on
# the signal (exit 0 after the checkpoint). Returns the launcher's exit code.
xr_slurm_run() {
    local stopped=0 rc child
    echo "xrank slurm job $SLURM_JOB_ID (attempt $((${SLURM_RESTART_COUNT:-0} + 1))) on $SLURM_JOB_NODELIST," \
         "$SLURM_NTASKS tasks: $*"
    "$@" &
    child=$!
    trap 'stopped=1; echo "xrank slurm job $SLURM_JOB_ID: SIGUSR1: asking the ranks to checkpoint and stop"; kill -USR1 $child 2>/dev/null' USR1
    while :; do
        rc=0
        wait "$child" || rc=$?
        kill -0 "$child" 2>/dev/null || break # wait was interrupted by the trap: the run goes on
    done
    trap - USR1
    if [ "$stopped" = 1 ] && [ "$rc" = 0 ]; then
        echo "xrank slurm job $SLURM_JOB_ID: stopped with a checkpoint; requeueing"
        scontrol requeue "$SLURM_JOB_ID"
    fi
    return "$rc"
}
