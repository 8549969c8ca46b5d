#!/usr/bin/env bash
# Start a one-node Slurm cluster on localhost, by hand (no systemd), for tests/test_slurm.py and
# for trying `snakemake --profile slurm` on a laptop or CI machine.
#
#   tests/slurm/up.sh STATE_DIR      start; writes STATE_DIR/env (source it: SLURM_CONF=...)
#   tests/slurm/down.sh STATE_DIR    stop every daemon this started, by the PIDs in STATE_DIR/pids
#
# Needs Debian's slurm-wlm, munge, slurmdbd and mariadb-server (apt-get install -y ...), and root
# (slurmd runs jobs as their user). Daemons: munged, MariaDB, slurmdbd (accounting, so `sacct`
# works: without it the Snakemake executor waits forever unless told to use squeue), slurmctld,
# slurmd. The one node advertises a fake A100 (gres.conf: File=/dev/null), so jobs that ask for
# --gpus=a100:1 are scheduled and accounted exactly like on a GPU cluster, but see no GPU.
# Everything (config, state, logs, database) lives under STATE_DIR; ports come from
# THIGHCT_SLURM_PORT (default 6817: slurmctld, +1 slurmd, +2 slurmdbd, +3 MariaDB).
set -euo pipefail

DIR=${1:?usage: up.sh STATE_DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PORT=${THIGHCT_SLURM_PORT:-6817}
CLUSTER=thighct
ACCOUNT=thighct
PARTITION=debug
NODE=localhost
HOST=$(hostname -s)
PIDS="$DIR/pids"

for exe in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sacctmgr; do
    command -v "$exe" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
    command -v "$exe" >/dev/null || {
        echo "up.sh: $exe not found; install: apt-get install -y slurm-wlm munge slurmdbd mariadb-server" >&2
        exit 2
    }
done
if [ -s "$PIDS" ]; then
    echo "up.sh: $PIDS exists; run tests/slurm/down.sh $DIR first" >&2
    exit 2
fi
for p in $PORT $((PORT + 1)) $((PORT + 2)) $((PORT + 3)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "up.sh: port $p on 127.0.0.1 is taken (another Slurm?); set THIGHCT_SLURM_PORT" >&2
        exit 2
    fi
done

# A failed start stops what it has started so far.
trap 'status=$?; if [ $status -ne 0 ]; then echo "up.sh: start failed, stopping; logs in $DIR/log" >&2; "$(dirname "$0")/down.sh" "$DIR" || true; fi' EXIT

mkdir -p "$DIR"/{log,munge,mysql,run,spool/ctld,spool/d}
chmod 755 "$DIR/munge"
: >"$PIDS"

# Launch a daemon in the foreground of a background job, so its PID is known exactly.
start() {
    local name=$1
    shift
    "$@" >"$DIR/log/$name.out" 2>&1 </dev/null &
    echo "$name $!" >>"$PIDS"
}

# Wait up to $1 seconds for a command to succeed.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "up.sh: $what did not come up in ${seconds}s; see $DIR/log" >&2
            tail -n 20 "$DIR"/log/* >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# --- munge: the shared key authenticates every Slurm message ---
MUNGE_SOCKET="$DIR/munge/munge.socket"
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$DIR/munge/munge.key"
start munged munged --foreground --force --socket="$MUNGE_SOCKET" \
    --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
    --seed-file="$DIR/munge/munged.seed" --log-file="$DIR/log/munged.log"
wait_for 20 munged test -S "$MUNGE_SOCKET"

# --- MariaDB: the accounting database ---
MYSQL_SOCKET="$DIR/run/mysqld.sock"
mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" \
    --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.out" 2>&1
start mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/mysql" \
    --socket="$MYSQL_SOCKET" --port=$((PORT + 3)) --bind-address=127.0.0.1 \
    --pid-file="$DIR/run/mysqld.pid" --log-error="$DIR/log/mariadb.log" \
    --skip-name-resolve --innodb-buffer-pool-size=64M
wait_for 60 MariaDB mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" -u root ping
mariadb --no-defaults --socket="$MYSQL_SOCKET" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# --- Slurm configuration ---
CPUS=$(nproc)
MEM_MB=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))

cat >"$DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 "$DIR/slurmdbd.conf"

cat >"$DIR/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups here (containers, CI): track a job's processes by process group, so cancelling a
# job or its time limit kills every process it started, as cgroups do on a real cluster.
ProctrackType=proctrack/pgid
# Seconds between the SIGTERM and the SIGKILL of a cancelled or timed-out job; time limits
# enforced without grace, and checked every few seconds (TIMEOUT within a minute).
KillWait=5
OverTimeLimit=0
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
# For slurmdbd connections this names the munge socket.
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu,gres/gpu:a100
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue for a while (the executor may also use squeue).
MinJobAge=300
# Store the executor's --comment (rule and wildcards), so sacct names each job's rule.
AccountingStoreFlags=job_comment
SchedulerParameters=batch_sched_delay=0
MessageTimeout=30
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:a100:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

cat >"$DIR/gres.conf" <<CONF
# A pretend A100: Slurm schedules and accounts it; /dev/null is what the job "gets".
NodeName=$NODE Name=gpu Type=a100 File=/dev/null
CONF

# The Snakemake job step (snakemake-executor-plugin-slurm-jobstep) clears every SLURM_* variable,
# SLURM_CONF too, before its inner `srun`, which then only finds the default /etc/slurm/slurm.conf.
# So link ours there, unless a real cluster's file is in the way.
SYSTEM_CONF=/etc/slurm/slurm.conf
if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    if [ "$(readlink "$SYSTEM_CONF")" != "$DIR/slurm.conf" ]; then
        echo "up.sh: $SYSTEM_CONF exists and is not ours (a real cluster?); not touching it" >&2
        exit 2
    fi
else
    mkdir -p /etc/slurm
    ln -s "$DIR/slurm.conf" "$SYSTEM_CONF"
fi
echo "link $SYSTEM_CONF" >>"$PIDS"

export SLURM_CONF="$DIR/slurm.conf"
cat >"$DIR/env" <<CONF
export SLURM_CONF=$DIR/slurm.conf
CONF

# --- slurmdbd, then the cluster, account and user it knows ---
start slurmdbd slurmdbd -D
wait_for 60 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=thighct Organization=thighct >/dev/null
sacctmgr -i add user "$(id -un)" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null

# --- slurmctld and slurmd ---
start slurmctld slurmctld -D -i
wait_for 60 slurmctld scontrol ping
start slurmd slurmd -D -N "$NODE"
node_idle() { sinfo -h -n "$NODE" -o %t | grep -qx idle; }
wait_for 60 "node $NODE (idle)" node_idle

echo "up.sh: Slurm up in $DIR (partition $PARTITION, account $ACCOUNT, node $NODE: $CPUS CPUs, ${MEM_MB} MB, gpu:a100:1)"
