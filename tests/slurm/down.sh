#!/usr/bin/env bash
# Stop the Slurm cluster that tests/slurm/up.sh STATE_DIR started: cancel its jobs, then end each
# daemon by the PID recorded in STATE_DIR/pids (newest first), waiting for each to exit.
set -uo pipefail

DIR=${1:?usage: down.sh STATE_DIR}
PIDS="$DIR/pids"
[ -f "$PIDS" ] || exit 0

if [ -f "$DIR/slurm.conf" ] && grep -q '^slurmctld ' "$PIDS"; then
    export SLURM_CONF="$DIR/slurm.conf"
    timeout 10 scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
fi

alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; }

tac "$PIDS" | while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    if [ "$name" = link ]; then
        # The /etc/slurm/slurm.conf link up.sh made, only while it still points at our config.
        [ "$(readlink "$pid")" = "$DIR/slurm.conf" ] && rm -f "$pid"
        continue
    fi
    alive "$pid" || continue
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        echo "down.sh: $name ($pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
done
rm -f "$PIDS"
