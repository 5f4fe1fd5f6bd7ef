#!/usr/bin/env bash
# Brings up a REAL single-node Slurm cluster on this machine for the
# integration tests: Debian's slurm-wlm + munge (installed if absent), one node
# named after `hostname -s` in partition `gpu` (the default partition), with 8
# fake GPUs as GRES (gpu:h100:4 and gpu:mi300x:4, plus 7 MIG instances
# gpu:h100-1g.10gb:7 and 8 shards, backed by character devices
# with /dev/null's numbers, or plain files where mknod is not allowed), and job
# accounting through slurmdbd + a private MariaDB server so that `sacct` works.
# Everything (configs, state, spool, logs, pid files, munge key and socket, the
# database, the verification jobs' output) lives under one directory; nothing
# under /etc is changed: the clients find the cluster through $SLURM_CONF.
#
# Usage (as root; Debian 12):
#   bash .ci/slurm.sh                # = start: install, configure, start, verify
#   eval "$(bash .ci/slurm.sh env)"  # exports SLURM_CONF, GIGAFAB_TEST_SLURM=1, ...
#   bash .ci/slurm.sh restart-ctld   # stop slurmctld (SIGTERM, it saves its state;
#                                    # --hard: SIGKILL) and start it again, waiting
#                                    # until it answers and the node is up
#   bash .ci/slurm.sh status         # daemons, sinfo, squeue (stdout)
#   bash .ci/slurm.sh verify         # srun with 2 fake H100s + an sbatch job (+ sacct)
#   bash .ci/slurm.sh logs           # tails of every log
#   bash .ci/slurm.sh stop           # cancel all jobs, stop every daemon (keeps the directory)
#   bash .ci/slurm.sh purge          # stop, then delete the directory
#
# Typical CI / test use:
#   bash .ci/slurm.sh && eval "$(bash .ci/slurm.sh env)"
#   sbatch --parsable --gres=gpu:h100:2 --wrap '...'   # partition gpu is the default
#   squeue -h -j ID -o %T; scontrol -o show job ID; sacct -n -X -P -j ID -o State,ExitCode
#   bash .ci/slurm.sh restart-ctld   # a controller restart mid-run; jobs keep running
#
# `start` is idempotent: when every daemon runs, the generated configs are
# unchanged and the node answers (idle/mixed/allocated), it does nothing. It
# starts only what is not running; if the configuration changed (environment
# below), it stops the cluster (cancelling all jobs) and starts it anew. Jobs
# and job ids survive stop/start (the state directory is kept; `purge` drops it).
# Finished jobs stay in `squeue -t all` / `scontrol show job` for an hour
# (MinJobAge=3600); every finished job is also appended to $DIR/log/jobcomp.txt
# (jobcomp/filetxt: "JobId=.. JobState=COMPLETED .. ExitCode=0:0 ..." per line).
#
# Environment (set the same values for every subcommand):
#   GIGAFAB_SLURM_DIR         state directory                        [/tmp/gigafab-slurm]
#   GIGAFAB_SLURM_ACCOUNTING  1: slurmdbd + MariaDB (sacct works);
#                             0: AccountingStorageType=accounting_storage/none,
#                             sacct fails ("Slurm accounting storage is disabled":
#                             Slurm 22.05 has no file-based accounting storage) [1]
#   GIGAFAB_SLURM_CPUS        CPUs of the node (more than nproc is allowed) [nproc]
#   GIGAFAB_SLURM_MEMORY_MB   RealMemory of the node                 [90% of MemTotal]
#   GIGAFAB_SLURM_PORT        slurmctld port; slurmd +1, slurmdbd +2 [6817]
#   GIGAFAB_SLURM_DB_PORT     MariaDB port on 127.0.0.1              [53306]
#   GIGAFAB_SLURM_WAIT        seconds to wait for each daemon / the node [60]
#
# Progress and errors go to stderr (with the tails of the relevant logs on
# failure); only `env` and `status` write to stdout. Exit status 0 = success.
set -euo pipefail

SELF=$(readlink -f "$0")
DIR="${GIGAFAB_SLURM_DIR:-/tmp/gigafab-slurm}"
ACCOUNTING="${GIGAFAB_SLURM_ACCOUNTING:-1}"
PORT="${GIGAFAB_SLURM_PORT:-6817}"
DB_PORT="${GIGAFAB_SLURM_DB_PORT:-53306}"
WAIT="${GIGAFAB_SLURM_WAIT:-60}"
CLUSTER=gigafab
PARTITION=gpu
ETC="$DIR/etc"
LOG="$DIR/log"
RUN="$DIR/run"
CONF="$ETC/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket.2"
MUNGE_KEY="$DIR/munge/key/munge.key"
DB_SOCKET="$RUN/mysqld.sock"
DB_USER=slurm
DB_PASS=gigafab-slurm
export SLURM_CONF="$CONF"
for _v in PORT DB_PORT WAIT; do
    case "${!_v}" in '' | *[!0-9]*) echo "slurm.sh: ERROR: GIGAFAB_SLURM_$_v must be a number, not '${!_v}'" >&2; exit 2 ;; esac
done
for _v in GIGAFAB_SLURM_CPUS GIGAFAB_SLURM_MEMORY_MB; do
    case "${!_v-1}" in '' | *[!0-9]* | 0) echo "slurm.sh: ERROR: $_v must be a positive number, not '${!_v}'" >&2; exit 2 ;; esac
done
case "$ACCOUNTING" in 0 | 1) ;; *) echo "slurm.sh: ERROR: GIGAFAB_SLURM_ACCOUNTING must be 0 or 1, not '$ACCOUNTING'" >&2; exit 2 ;; esac
# Client commands must not pick up settings from the caller's environment.
unset SLURM_JOB_ID SLURM_JOBID SLURM_NODELIST SLURM_PARTITION 2>/dev/null || true

say() { echo "slurm.sh: $*" >&2; }

# log_tails [NAME...]: the last lines of the named logs (in $LOG), or of all of them.
log_tails() {
    local f files=() n=20
    if [ "$#" -gt 0 ]; then
        n=40
        for f in "$@"; do files+=("$LOG/$f"); done
    else
        for f in "$LOG"/*.log "$LOG"/*.stdout; do
            [ "$f" = "$LOG/mariadb-install.stdout" ] || files+=("$f")
        done
    fi
    for f in "${files[@]}"; do
        [ -s "$f" ] || continue
        echo "----- last $n lines of $f -----" >&2
        tail -n "$n" "$f" >&2 || true
    done
}

# die MESSAGE [LOGNAME...]: print the error, the tails of the logs, exit 1.
die() {
    local msg="$1"
    shift
    echo "slurm.sh: ERROR: $msg" >&2
    log_tails "$@"
    echo "slurm.sh: ERROR: $msg (logs: $LOG)" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//' >&2
}

node_name() { hostname -s; }

# ---------------------------------------------------------------- processes

# read_pid PIDFILE: the pid in PIDFILE (empty if none).
read_pid() { { tr -dc '0-9' <"$1"; } 2>/dev/null || true; }

# proc_alive PID COMM: PID runs a process named COMM that is not a zombie.
proc_alive() {
    local pid="$1" comm="$2" state
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# pid_alive PIDFILE COMM: the pid in PIDFILE runs COMM.
pid_alive() { proc_alive "$(read_pid "$1")" "$2"; }

pid_of() { read_pid "$1"; }

# stop_pidfile NAME PIDFILE COMM [SIGNAL]: signal the daemon and wait until it is gone.
stop_pidfile() {
    local name="$1" pidfile="$2" comm="$3" sig="${4:-TERM}" pid i
    pid=$(read_pid "$pidfile")
    if ! proc_alive "$pid" "$comm"; then
        rm -f "$pidfile"
        return 0
    fi
    say "stopping $name (pid $pid, SIG$sig)"
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 1 $((WAIT * 5))); do
        proc_alive "$pid" "$comm" || { rm -f "$pidfile"; return 0; }
        if [ "$i" = $((WAIT * 4)) ]; then
            say "$name still running after $((WAIT * 4 / 5))s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.2
    done
    die "$name (pid $pid) did not stop"
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds;
# on timeout print its last output and return 1.
wait_until() {
    local secs="$1" what="$2" end
    shift 2
    end=$((SECONDS + secs))
    while ! "$@" >"$DIR/.wait.out" 2>&1; do
        if [ "$SECONDS" -ge "$end" ]; then
            echo "slurm.sh: gave up after ${secs}s waiting for: $what; last output of '$*':" >&2
            sed 's/^/    /' "$DIR/.wait.out" >&2 || true
            return 1
        fi
        sleep 0.5
    done
    say "$what"
}

# wait_daemon SECONDS DESCRIPTION PIDFILE COMM COMMAND...: like wait_until, but
# gives up at once when the daemon has exited (or wrote no pid file in 15 s).
wait_daemon() {
    local secs="$1" what="$2" pidfile="$3" comm="$4" end start=$SECONDS
    shift 4
    end=$((SECONDS + secs))
    while ! "$@" >"$DIR/.wait.out" 2>&1; do
        if [ -s "$pidfile" ] || [ $((SECONDS - start)) -ge 15 ]; then
            if ! pid_alive "$pidfile" "$comm"; then
                echo "slurm.sh: $comm exited (or never wrote $pidfile) while waiting for: $what" >&2
                sed 's/^/    /' "$DIR/.wait.out" >&2 || true
                return 1
            fi
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            echo "slurm.sh: gave up after ${secs}s waiting for: $what; last output of '$*':" >&2
            sed 's/^/    /' "$DIR/.wait.out" >&2 || true
            return 1
        fi
        sleep 0.5
    done
    say "$what"
}

# ---------------------------------------------------------------- install

need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" = 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "need root to install ${missing[*]} (apt-get)"
    say "installing ${missing[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    {
        apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
    } >"$DIR/apt.log" 2>&1 || {
        tail -n 30 "$DIR/apt.log" >&2
        die "apt-get install ${missing[*]} failed (full log: $DIR/apt.log)"
    }
}

install_packages() {
    mkdir -p "$DIR"
    need_pkgs slurm-wlm slurmctld slurmd slurm-client munge
    if [ "$ACCOUNTING" = 1 ]; then
        need_pkgs slurmdbd slurm-wlm-mysql-plugin mariadb-server
    fi
    local b
    for b in munged mungekey slurmctld slurmd sinfo srun sbatch scontrol squeue; do
        command -v "$b" >/dev/null 2>&1 || die "$b not found after installing the packages"
    done
}

# ---------------------------------------------------------------- configuration

write_configs() { # $1: target directory
    local out="$1" node cpus mem_total mem i
    node=$(node_name)
    cpus="${GIGAFAB_SLURM_CPUS:-$(nproc)}"
    mem_total=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mem="${GIGAFAB_SLURM_MEMORY_MB:-$((mem_total * 9 / 10))}"
    mkdir -p "$out"
    local overrides=""
    if [ "$cpus" != "$(nproc)" ] || [ "$mem" -gt "$mem_total" ]; then
        overrides="SlurmdParameters=config_overrides"
    fi
    local acct
    if [ "$ACCOUNTING" = 1 ]; then
        acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
# For accounting_storage/slurmdbd this is the munge socket to use.
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu,gres/gpu:h100,gres/gpu:mi300x
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
    else
        acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
    fi

    cat >"$out/slurm.conf" <<EOF
# Generated by .ci/slurm.sh -- single-node test cluster for gigafab.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
# Start batch jobs at once (default: up to 3 s after the last scheduling pass).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
ReturnToService=2
# Finished jobs stay visible to squeue / scontrol show job for an hour.
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=120
MessageTimeout=10
$acct
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.txt
$overrides
GresTypes=gpu,shard
NodeName=$node NodeHostname=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:h100:4,gpu:mi300x:4,gpu:h100-1g.10gb:7,shard:8 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    cat >"$out/gres.conf" <<EOF
# Generated by .ci/slurm.sh -- fake GPUs backed by plain files.
AutoDetect=off
Name=gpu Type=h100 File=$DIR/dev/fakegpu[0-3]
Name=gpu Type=mi300x File=$DIR/dev/fakegpu[4-7]
# Sharing: 4 shards on each of the first two h100s (a gigafab pool with
# fractions = 4 runs its slices as one shard each).
Name=shard Count=8 File=$DIR/dev/fakegpu[0-1]
# MIG: one more h100 in 7 1g.10gb instances, each its own GRES of the
# slice type gigafab names (h100-1g.10gb), backed by a stand-in for the
# instance's capability file (Slurm 22.05 has no MultipleFiles).
Name=gpu Type=h100-1g.10gb File=$DIR/dev/fakemig[0-6]
EOF

    # No cgroup plugin is configured; this only keeps slurmd from touching cgroups
    # should it read the file anyway.
    cat >"$out/cgroup.conf" <<EOF
# Generated by .ci/slurm.sh -- no cgroup plugin is used by this cluster.
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF

    if [ "$ACCOUNTING" = 1 ]; then
        cat >"$out/slurmdbd.conf" <<EOF
# Generated by .ci/slurm.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
        chmod 600 "$out/slurmdbd.conf"
    fi
}

# Creates the directories and the fake GPU files; installs the generated configs.
# Sets CHANGED=1 if the configs changed (or are new), CHANGED=0 if not.
CHANGED=0
prepare_dir() {
    mkdir -p "$DIR" "$LOG" "$RUN" "$DIR/state/ctld" "$DIR/state/slurmd" "$DIR/dev" "$DIR/jobs"
    # Fake GPUs: character devices with /dev/null's numbers where mknod works
    # (slurmd then also sets CUDA_VISIBLE_DEVICES etc.), else plain files
    # (slurmd logs "not a valid character or block device" but still counts them).
    local f
    for f in fakegpu0 fakegpu1 fakegpu2 fakegpu3 fakegpu4 fakegpu5 fakegpu6 fakegpu7 \
        fakemig0 fakemig1 fakemig2 fakemig3 fakemig4 fakemig5 fakemig6; do
        [ -c "$DIR/dev/$f" ] && continue
        rm -f "$DIR/dev/$f"
        mknod -m 666 "$DIR/dev/$f" c 1 3 2>/dev/null || : >"$DIR/dev/$f"
    done
    rm -rf "$DIR/etc.new"
    write_configs "$DIR/etc.new"
    if [ -d "$ETC" ] && diff -r -q "$ETC" "$DIR/etc.new" >/dev/null 2>&1; then
        rm -rf "$DIR/etc.new"
        CHANGED=0
        return 0
    fi
    rm -rf "$ETC"
    mv "$DIR/etc.new" "$ETC"
    CHANGED=1
}

# ---------------------------------------------------------------- munge

start_munge() {
    if pid_alive "$RUN/munged.pid" munged; then return 0; fi
    # munged checks permissions: socket dir must be searchable by all,
    # key dir and key private to the user munged runs as (root here).
    mkdir -p "$DIR/munge/key"
    chmod 755 "$DIR/munge"
    chmod 700 "$DIR/munge/key"
    if [ ! -s "$MUNGE_KEY" ]; then
        say "creating munge key $MUNGE_KEY"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" --bits=1024 --force >/dev/null 2>&1 ||
                dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown root:root "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$RUN/munged.pid"
    say "starting munged"
    munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --log-file="$LOG/munged.log" --pid-file="$RUN/munged.pid" \
        --seed-file="$DIR/munge/key/munged.seed" >"$LOG/munged.stdout" 2>&1 9>&- ||
        die "munged failed to start" munged.log munged.stdout
    wait_daemon "$WAIT" "munged is up" "$RUN/munged.pid" munged munge_ok || die "munged does not answer on $MUNGE_SOCKET" munged.log munged.stdout
}

munge_ok() { munge -n -S "$MUNGE_SOCKET" </dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null; }

# ---------------------------------------------------------------- MariaDB + slurmdbd

db_bin() { # mariadbd (bookworm) or mysqld
    local b
    for b in /usr/sbin/mariadbd /usr/sbin/mysqld; do
        [ -x "$b" ] && { echo "$b"; return 0; }
    done
    return 1
}

db_sql() { mariadb --no-defaults -uroot --socket="$DB_SOCKET" -N -B -e "$1"; }

db_alive() { proc_alive "$(read_pid "$RUN/mysqld.pid")" mariadbd || proc_alive "$(read_pid "$RUN/mysqld.pid")" mysqld; }

start_db() {
    local bin
    bin=$(db_bin) || die "mariadbd not found (is mariadb-server installed?)"
    if db_alive; then
        wait_until "$WAIT" "MariaDB answers" db_sql 'SELECT 1' && return 0
        die "MariaDB (pid $(read_pid "$RUN/mysqld.pid")) runs but does not answer on $DB_SOCKET" mariadb.log
    fi
    if [ ! -d "$DIR/mysql/mysql" ]; then
        say "initialising MariaDB in $DIR/mysql"
        rm -rf "$DIR/mysql"
        mkdir -p "$DIR/mysql"
        mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$LOG/mariadb-install.stdout" 2>&1 || die "mariadb-install-db failed" mariadb-install.stdout
    fi
    say "starting MariaDB on 127.0.0.1:$DB_PORT"
    rm -f "$DB_SOCKET" "$RUN/mysqld.pid"
    # setsid + nohup: the server must outlive this script and its session.
    setsid nohup "$bin" --no-defaults --user=root --datadir="$DIR/mysql" \
        --socket="$DB_SOCKET" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --pid-file="$RUN/mysqld.pid" --log-error="$LOG/mariadb.log" \
        --skip-log-bin --innodb-buffer-pool-size=1G --innodb-log-file-size=64M \
        --innodb-lock-wait-timeout=900 --max-connections=100 \
        </dev/null >"$LOG/mariadb.stdout" 2>&1 9>&- &
    wait_daemon "$WAIT" "MariaDB is up" "$RUN/mysqld.pid" "$(basename "$bin")" db_sql 'SELECT 1' || die "MariaDB did not start" mariadb.log mariadb.stdout
    db_sql "CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
            CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'127.0.0.1';
            GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost';
            FLUSH PRIVILEGES;" || die "could not create the slurm database user" mariadb.log
}

stop_db() {
    if proc_alive "$(read_pid "$RUN/mysqld.pid")" mysqld; then
        stop_pidfile MariaDB "$RUN/mysqld.pid" mysqld
    else
        stop_pidfile MariaDB "$RUN/mysqld.pid" mariadbd
    fi
}

dbd_ok() { timeout 15 sacctmgr -n -P show cluster format=cluster; }

start_dbd() {
    if pid_alive "$RUN/slurmdbd.pid" slurmdbd && dbd_ok >/dev/null 2>&1; then return 0; fi
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid" slurmdbd
    rm -f "$RUN/slurmdbd.pid"
    say "starting slurmdbd on port $((PORT + 2))"
    # slurmdbd finds slurmdbd.conf beside $SLURM_CONF.
    slurmdbd >"$LOG/slurmdbd.stdout" 2>&1 9>&- || die "slurmdbd failed to start" slurmdbd.log slurmdbd.stdout
    wait_daemon "$WAIT" "slurmdbd is up" "$RUN/slurmdbd.pid" slurmdbd dbd_ok || die "slurmdbd does not answer (sacctmgr fails)" slurmdbd.log slurmdbd.stdout
    if ! timeout 15 sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        timeout 30 sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed" slurmdbd.log
        say "registered cluster $CLUSTER in slurmdbd"
    fi
}

# ---------------------------------------------------------------- slurmctld / slurmd

ctld_ok() {
    local out
    out=$(timeout 15 scontrol ping 2>&1) || true
    echo "$out"
    case "$out" in *"is UP"*) return 0 ;; *) return 1 ;; esac
}

start_ctld() {
    if pid_alive "$RUN/slurmctld.pid" slurmctld; then return 0; fi
    rm -f "$RUN/slurmctld.pid"
    say "starting slurmctld on port $PORT"
    # Without -c, slurmctld recovers its saved state (jobs survive a restart).
    slurmctld -f "$CONF" >"$LOG/slurmctld.stdout" 2>&1 9>&- || die "slurmctld failed to start" slurmctld.log slurmctld.stdout
    wait_daemon "$WAIT" "slurmctld answers" "$RUN/slurmctld.pid" slurmctld ctld_ok || die "slurmctld is not up" slurmctld.log slurmctld.stdout
}

start_slurmd() {
    if pid_alive "$RUN/slurmd.pid" slurmd; then return 0; fi
    rm -f "$RUN/slurmd.pid"
    say "starting slurmd for node $(node_name)"
    slurmd -f "$CONF" -N "$(node_name)" >"$LOG/slurmd.stdout" 2>&1 9>&- || die "slurmd failed to start" slurmd.log slurmd.stdout
}

node_state() { timeout 15 sinfo -h -N -n "$(node_name)" -o '%T' 2>/dev/null | head -n 1; }

node_usable() {
    case "$(node_state)" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
    esac
}

wait_node() {
    local end=$((SECONDS + WAIT)) st resumed=0
    while :; do
        st=$(node_state || true)
        case "$st" in
        idle | mixed | allocated | completing)
            say "node $(node_name) is $st"
            return 0
            ;;
        down* | drain* | fail* | inval*)
            if [ "$resumed" = 0 ]; then
                say "node $(node_name) is $st ($(timeout 10 sinfo -h -R -o '%E' 2>/dev/null | head -n 1)); resuming it"
                timeout 15 scontrol update NodeName="$(node_name)" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi
            ;;
        esac
        if ! pid_alive "$RUN/slurmd.pid" slurmd && [ -s "$RUN/slurmd.pid" ]; then
            die "slurmd exited" slurmd.log slurmd.stdout
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            timeout 10 sinfo -N -l >&2 || true
            timeout 10 sinfo -R >&2 || true
            die "node $(node_name) is not idle after ${WAIT}s (state: '${st:-no answer}')" slurmd.log slurmd.stdout slurmctld.log
        fi
        sleep 1
    done
}

# ---------------------------------------------------------------- verification

verify() {
    local out id st i
    say "verifying: srun --gres=gpu:h100:2 env"
    out=$(cd "$DIR/jobs" && timeout 120 srun -J gigafab-verify -t 2 --gres=gpu:h100:2 env 2>&1) ||
        { echo "$out" >&2; die "srun --gres=gpu:h100:2 failed" slurmctld.log slurmd.log; }
    local gpus
    gpus=$(echo "$out" | sed -n 's/^SLURM_GPUS_ON_NODE=//p' | head -n 1)
    [ "$gpus" = 2 ] || { echo "$out" | grep -E '^(SLURM_|CUDA|GPU)' >&2; die "srun: SLURM_GPUS_ON_NODE='$gpus', expected 2" slurmd.log; }
    say "srun: SLURM_GPUS_ON_NODE=$gpus CUDA_VISIBLE_DEVICES=$(echo "$out" | sed -n 's/^CUDA_VISIBLE_DEVICES=//p' | head -n 1)"

    say "verifying: sbatch --wrap 'echo hi'"
    id=$(cd "$DIR/jobs" && timeout 30 sbatch --parsable -J gigafab-verify -t 2 -o "$DIR/jobs/verify-%j.out" --wrap 'echo hi') ||
        die "sbatch failed" slurmctld.log
    id=${id%%;*}
    for i in $(seq 1 $((WAIT * 2))); do
        st=$(timeout 15 scontrol show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -n 1 || true)
        case "$st" in
        COMPLETED) break ;;
        PENDING | CONFIGURING | RUNNING | COMPLETING | "") sleep 0.5 ;;
        *)
            timeout 15 scontrol show job "$id" >&2 || true
            die "sbatch job $id ended $st" slurmctld.log slurmd.log
            ;;
        esac
    done
    [ "$st" = COMPLETED ] || { timeout 15 scontrol show job "$id" >&2 || true; die "sbatch job $id not completed after ${WAIT}s (state $st)" slurmctld.log slurmd.log; }
    grep -qx hi "$DIR/jobs/verify-$id.out" || die "sbatch job $id output is not 'hi': $(cat "$DIR/jobs/verify-$id.out" 2>&1)" slurmd.log
    say "sbatch: job $id COMPLETED, output 'hi'"
    if [ "$ACCOUNTING" = 1 ]; then
        # slurmctld sends job records to slurmdbd asynchronously.
        for i in $(seq 1 $((WAIT * 2))); do
            st=$(timeout 15 sacct -n -X -P -j "$id" -o State 2>/dev/null | head -n 1 || true)
            [ "$st" = COMPLETED ] && break
            sleep 0.5
        done
        [ "$st" = COMPLETED ] || die "sacct -j $id does not show COMPLETED (got '$st')" slurmdbd.log slurmctld.log
        say "sacct: job $id $st"
    fi
}

# ---------------------------------------------------------------- commands

daemons_alive() {
    pid_alive "$RUN/munged.pid" munged || return 1
    pid_alive "$RUN/slurmctld.pid" slurmctld || return 1
    pid_alive "$RUN/slurmd.pid" slurmd || return 1
    if [ "$ACCOUNTING" = 1 ]; then
        db_alive || return 1
        pid_alive "$RUN/slurmdbd.pid" slurmdbd || return 1
    fi
}

any_daemon_alive() {
    pid_alive "$RUN/munged.pid" munged || pid_alive "$RUN/slurmctld.pid" slurmctld ||
        pid_alive "$RUN/slurmd.pid" slurmd || pid_alive "$RUN/slurmdbd.pid" slurmdbd || db_alive
}

# Serialises start/stop/restart-ctld. Every daemon is started with fd 9 closed
# (9>&-) so that it does not inherit, and hold forever, the lock.
lock() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock -w 300 9 || die "another .ci/slurm.sh holds $DIR/.lock"
}

cmd_start() {
    [ "$(id -u)" = 0 ] || die "must run as root (SlurmUser=root)"
    lock
    cd "$DIR" # the daemons inherit this working directory
    install_packages
    prepare_dir
    if [ "$CHANGED" = 0 ] && daemons_alive && ctld_ok >/dev/null 2>&1 && node_usable; then
        say "cluster already up ($(node_name) is $(node_state)); nothing to do"
        return 0
    fi
    if [ "$CHANGED" = 1 ] && any_daemon_alive; then
        say "configuration changed: restarting the cluster"
        do_stop
    fi
    start_munge
    if [ "$ACCOUNTING" = 1 ]; then
        start_db
        start_dbd
    fi
    start_ctld
    start_slurmd
    wait_node
    verify
    say "cluster up: $(timeout 10 sinfo -h -o '%P %a %D %T %G' | head -n 1)"
    say "use it with: eval \"\$(bash $SELF env)\""
}

do_stop() {
    if pid_alive "$RUN/slurmctld.pid" slurmctld && ctld_ok >/dev/null 2>&1; then
        local ids
        ids=$(timeout 15 squeue -h -o '%i' 2>/dev/null || true)
        if [ -n "$ids" ]; then
            say "cancelling jobs: $(echo "$ids" | tr '\n' ' ')"
            # shellcheck disable=SC2086 # one argument per job id
            timeout 15 scancel $ids >/dev/null 2>&1 || true
            # shellcheck disable=SC2016 # expanded by sh -c
            wait_until 30 "all jobs ended" sh -c '[ -z "$(timeout 10 squeue -h -t running,completing,configuring -o %i 2>/dev/null)" ]' ||
                say "warning: some jobs still running"
        fi
    fi
    stop_pidfile slurmd "$RUN/slurmd.pid" slurmd
    stop_pidfile slurmctld "$RUN/slurmctld.pid" slurmctld
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid" slurmdbd
    stop_db
    stop_pidfile munged "$RUN/munged.pid" munged
}

cmd_stop() {
    lock
    do_stop
    say "stopped (state kept in $DIR)"
}

cmd_purge() {
    lock
    do_stop
    case "$DIR" in
    / | /tmp | /tmp/ | "$HOME" | "") die "refusing to delete '$DIR'" ;;
    esac
    rm -rf "$DIR"
    say "removed $DIR"
}

cmd_restart_ctld() {
    local sig=TERM
    [ "${1:-}" = --hard ] && sig=KILL
    lock
    [ -s "$CONF" ] || die "no cluster configured in $DIR (run: bash $SELF)"
    cd "$DIR"
    stop_pidfile slurmctld "$RUN/slurmctld.pid" slurmctld "$sig"
    start_ctld
    wait_node
    say "slurmctld restarted"
}

cmd_env() {
    [ -s "$CONF" ] || say "warning: $CONF does not exist yet (run: bash $SELF)"
    if ! { pid_alive "$RUN/slurmctld.pid" slurmctld && pid_alive "$RUN/slurmd.pid" slurmd; }; then
        say "warning: the cluster is not running (run: bash $SELF)"
    fi
    echo "export SLURM_CONF=$CONF"
    echo "export GIGAFAB_TEST_SLURM=1"
    echo "export GIGAFAB_SLURM_DIR=$DIR"
    echo "export GIGAFAB_TEST_SLURM_PARTITION=$PARTITION"
    # What the running cluster was configured with (sacct works iff 1).
    local acct=$ACCOUNTING
    if [ -s "$CONF" ]; then
        if grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$CONF"; then acct=1; else acct=0; fi
    fi
    echo "export GIGAFAB_TEST_SLURM_ACCOUNTING=$acct"
}

cmd_status() {
    local d
    for d in munged:munged slurmdbd:slurmdbd slurmctld:slurmctld slurmd:slurmd; do
        if pid_alive "$RUN/${d%%:*}.pid" "${d##*:}"; then
            echo "${d%%:*}: running (pid $(pid_of "$RUN/${d%%:*}.pid"))"
        else
            echo "${d%%:*}: not running"
        fi
    done
    if db_alive; then echo "mariadb: running (pid $(pid_of "$RUN/mysqld.pid"))"; else echo "mariadb: not running"; fi
    [ -s "$CONF" ] || return 0
    timeout 15 sinfo -N -o '%N %P %T %c %m %G' || true
    timeout 15 squeue -o '%i %P %j %T %M %R' || true
}

case "${1:-start}" in
start) cmd_start ;;
env) cmd_env ;;
restart-ctld) shift; cmd_restart_ctld "$@" ;;
stop) cmd_stop ;;
purge) cmd_purge ;;
status) cmd_status ;;
verify) lock; verify ;;
logs) log_tails ;;
-h | --help | help) usage ;;
*)
    usage
    die "unknown command '$1'"
    ;;
esac
