#!/usr/bin/env bash
# A real single-node Slurm (Debian slurm-wlm + munge) for tests/slurm/: this host is the only node, with two fake
# GPUs (gres backed by device nodes of our own, so jobs get SLURM_JOB_GPUS / CUDA_VISIBLE_DEVICES like on a GPU node;
# nvidia-smi still sees none). Idempotent: installs what is missing, writes the config, starts the daemons that are
# not running, and returns once `srun --gres=gpu:1` runs. Root only. Logs: /var/log/slurm/.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
LOG=/var/log/slurm
FAKE_GPUS=/var/spool/slurm-fake-gpus   # outside /dev on purpose: nothing else may mistake them for NVIDIA devices
fail() { echo "error: .ci/slurm.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts slurmctld/slurmd)"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null \
        || fail "apt-get install slurm-wlm munge failed"
fi

# munge: a key (the package may ship one; made once otherwise), then the daemon
mkdir -p /etc/munge /var/run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /var/run/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 || runuser -u munge -- munged --force \
    || fail "munged did not start (see /var/log/munge/munged.log)"

# the node's description: this host, its CPUs and memory, two fake GPUs
host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(free -m | awk '/^Mem:/ {print $2}') * 9 / 10 ))
mkdir -p "$FAKE_GPUS" "$LOG" /var/spool/slurmctld /var/spool/slurmd /etc/slurm
for i in 0 1; do [ -c "$FAKE_GPUS/gpu$i" ] || mknod "$FAKE_GPUS/gpu$i" c 1 3; done   # 1,3 = /dev/null's numbers
chown slurm:slurm /var/spool/slurmctld "$LOG"
cat >/etc/slurm/slurm.conf.new <<EOF
ClusterName=arbench
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/var/run/slurmctld.pid
SlurmdPidFile=/var/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$memory Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cat >/etc/slurm/gres.conf.new <<EOF
AutoDetect=off
NodeName=$host Name=gpu File=$FAKE_GPUS/gpu[0-1]
EOF
# a changed config (new host name, CPUs) restarts the daemons; an unchanged one leaves running ones alone
changed=0
for f in slurm.conf gres.conf; do
    cmp -s "/etc/slurm/$f.new" "/etc/slurm/$f" || { mv "/etc/slurm/$f.new" "/etc/slurm/$f"; changed=1; }
    rm -f "/etc/slurm/$f.new"
done
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ $changed = 1 ]; then
    for pidfile in /var/run/slurmd.pid /var/run/slurmctld.pid; do
        if running $pidfile; then kill "$(cat $pidfile)"; sleep 2; fi
    done
fi
running /var/run/slurmctld.pid || slurmctld || fail "slurmctld did not start (see $LOG/slurmctld.log)"
running /var/run/slurmd.pid || slurmd || fail "slurmd did not start (see $LOG/slurmd.log)"

# ready: the node idle (or mixed/allocated by jobs already running) and a GPU job runs
for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
    case "$state" in idle|mixed|allocated) break ;; down*|drain*) scontrol update nodename="$host" state=resume ;; esac
    sleep 1
done
case "$state" in idle|mixed|allocated) ;; *) fail "node $host is '${state:-absent}' in sinfo, not idle (see $LOG/)" ;; esac
timeout 60 srun -N1 --gres=gpu:1 -t 1 true || fail "srun -N1 --gres=gpu:1 true failed (see $LOG/)"
echo "slurm: node $host idle with 2 fake GPUs (partition debug)"
