#!/usr/bin/env bash
# A two-node Slurm cluster on this one host, for the Slurm tests (run as root; `.ci/run` calls it).
# Installs Debian's slurm-wlm and munge only when missing, writes /etc/slurm/slurm.conf (nodes n1
# and n2: two slurmd on this host, ports 17001/17002, partition `debug`), creates the munge key if
# missing and starts munged, slurmctld, `slurmd -N n1` and `slurmd -N n2` when they are not running.
# Idempotent: with the cluster up it only checks and returns. Waits (bounded) until `sinfo -N`
# shows both nodes idle, resuming nodes that came up down or drained; exits 1 with the reason
# otherwise.
set -euo pipefail

WAIT_SECS=${SLURM_UP_WAIT_SECS:-60}
CONF=/etc/slurm/slurm.conf
NODES=(n1 n2)

say() { echo "slurm-up: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

# A process is alive when its pid file names a live process with the expected command name.
alive() { # alive PIDFILE NAME
  local pid
  [ -r "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

# Both nodes idle (allocated/mixed also count as up: the cluster is in use).
nodes_up() {
  local states
  states=$(timeout 10 sinfo -N -h -p debug -o '%N %t' 2>/dev/null) || return 1
  for n in "${NODES[@]}"; do
    grep -Eq "^$n (idle|alloc|mix|comp)" <<<"$states" || return 1
  done
}

# Fast path: everything up already.
if command -v sinfo >/dev/null 2>&1 && [ -f "$CONF" ] \
  && alive /run/slurmctld.pid slurmctld \
  && alive /run/slurmd-n1.pid slurmd && alive /run/slurmd-n2.pid slurmd && nodes_up; then
  say "cluster already up (n1, n2 in partition debug)"
  exit 0
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
  || ! command -v munged >/dev/null 2>&1 || ! command -v sinfo >/dev/null 2>&1; then
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
conf=$(
  cat <<CONF
# Written by stepgraph's .ci/slurm-up.sh: two slurmd (n1, n2) on this one host.
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmctldPidFile=/run/slurmctld.pid
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmdPidFile=/run/slurmd-%n.pid
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=17001 CPUs=1 RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=17002 CPUs=1 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
)
conf_changed=false
mkdir -p /etc/slurm
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$conf" ]; then
  say "writing $CONF"
  printf '%s\n' "$conf" >"$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
  conf_changed=true
fi

mkdir -p /var/spool/slurmctld /var/spool/slurmd/n1 /var/spool/slurmd/n2 /var/log/slurm \
  /run/munge /etc/munge /var/lib/munge /var/log/munge

if [ ! -s /etc/munge/munge.key ]; then
  say "creating the munge key"
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --force --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /run/munge /var/log/munge
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  rm -f /run/munge/munge.socket.2.lock
  su -s /bin/sh munge -c /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 1 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.25
  done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munge does not answer after starting munged"
fi

# A changed configuration needs the daemons restarted to take effect.
if $conf_changed; then
  for d in slurmd-n1:slurmd slurmd-n2:slurmd slurmctld:slurmctld; do
    pf=/run/${d%%:*}.pid
    if alive "$pf" "${d#*:}"; then
      say "stopping ${d%%:*} (the configuration changed)"
      kill "$(cat "$pf")" 2>/dev/null || true
      for _ in $(seq 1 40); do
        alive "$pf" "${d#*:}" || break
        sleep 0.25
      done
      alive "$pf" "${d#*:}" && die "${d%%:*} (pid $(cat "$pf")) did not stop within 10 s"
    fi
  done
fi

if ! alive /run/slurmctld.pid slurmctld; then
  say "starting slurmctld"
  slurmctld || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
  for _ in $(seq 1 40); do
    timeout 5 scontrol ping 2>/dev/null | grep -q UP && break
    sleep 0.25
  done
fi
for n in "${NODES[@]}"; do
  if ! alive "/run/slurmd-$n.pid" slurmd; then
    say "starting slurmd -N $n"
    slurmd -N "$n" || die "slurmd -N $n did not start (see /var/log/slurm/slurmd-$n.log)"
  fi
done

deadline=$((SECONDS + WAIT_SECS))
resumed=false
while ! nodes_up; do
  states=$(timeout 10 sinfo -N -h -p debug -o '%N %t' 2>&1 || true)
  if [ $SECONDS -ge $deadline ]; then
    die "nodes n1, n2 not idle after ${WAIT_SECS}s; sinfo -N says: ${states:-nothing}
  (logs: /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd-n1.log, /var/log/slurm/slurmd-n2.log)"
  fi
  if grep -Eq '(down|drain|drng|fail)' <<<"$states" && ! $resumed; then
    say "resuming nodes that came up down or drained: $(tr '\n' ' ' <<<"$states")"
    scontrol update nodename=n1,n2 state=resume >/dev/null 2>&1 || true
    resumed=true
  fi
  sleep 1
  # Resume again now and then: a node can be marked down once more while its slurmd registers.
  if $resumed && [ $((SECONDS % 10)) -eq 0 ]; then resumed=false; fi
done
say "cluster up: $(timeout 10 sinfo -N -h -p debug -o '%N %t' | tr '\n' ' ')"
