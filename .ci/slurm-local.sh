#!/usr/bin/env bash
# A real single-node Slurm on localhost for the tests: munged, slurmctld and slurmd from
# Debian's packages, started without systemd, with fake GPUs (GRES) so GPU requests schedule.
#
#   .ci/slurm-local.sh up      install if needed, configure, start, wait until the node is idle
#   .ci/slurm-local.sh down    cancel every job, stop only the daemons this script started
#   .ci/slurm-local.sh status
#
# Idempotent: `up` leaves daemons it already started alone. State, logs and pid files live
# under $SLURM_LOCAL_DIR (default /var/spool/unet-slurm); the config goes to /etc/slurm,
# where every Slurm client looks. No accounting database: sacct does not work here, so
# Snakemake's Slurm executor must query job status with squeue (profiles/slurm-squeue).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/var/spool/unet-slurm}
CPUS=${SLURM_LOCAL_CPUS:-8}        # more than the cores: several small jobs at once
GPUS=${SLURM_LOCAL_GPUS:-2}        # fake GPU devices behind the gpu GRES
CONF=/etc/slurm/slurm.conf
MARK="# written by unet-pipeline .ci/slurm-local.sh"
HOST=$(hostname -s)

say() { echo "[slurm-local] $*" >&2; }

running() {  # running NAME: the pid in our pid file is alive and is that program
  local file=$DIR/run/$1.pid pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]]
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  say "installing slurm-wlm and munge"
  local policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then  # keep the packages from starting services themselves
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
  if ((policy)); then rm -f /usr/sbin/policy-rc.d; fi
}

configure() {
  mkdir -p "$DIR"/{ctld,d,log,run} /etc/slurm
  if [[ -f $CONF ]] && ! grep -q "$MARK" "$CONF"; then
    cp "$CONF" "$CONF.before-unet-pipeline"
  fi
  local memory
  memory=$(( $(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1) * 9 / 10 ))
  local gres="" devices=""
  if ((GPUS > 0)); then
    for ((i = 0; i < GPUS; i++)); do
      [[ -e /dev/unet-fakegpu$i ]] || mknod -m 0666 "/dev/unet-fakegpu$i" c 1 3
    done
    gres=" Gres=gpu:$GPUS"
    devices="NodeName=$HOST Name=gpu File=/dev/unet-fakegpu[0-$((GPUS - 1))]"
  fi
  cat >"$CONF.new" <<EOF
$MARK
ClusterName=unetci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=900
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$CPUS RealMemory=$memory$gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  printf '%s\nAutoDetect=off\n%s\n' "$MARK" "$devices" >/etc/slurm/gres.conf
  if ! cmp -s "$CONF.new" "$CONF"; then
    mv "$CONF.new" "$CONF"
    return 0  # changed
  fi
  rm -f "$CONF.new"
  return 1
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown -R munge:munge /etc/munge && chmod 0700 /etc/munge && chmod 0600 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && cp /run/munge/munged.pid "$DIR/run/munged.pid" && return
    sleep 0.1
  done
  say "munged did not come up"; exit 1
}

start_daemon() {  # start_daemon NAME ARGS...: foreground daemon in its own session (nothing here reaps zombies)
  local name=$1; shift
  running "$name" && return
  setsid "$name" -D "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
  for _ in $(seq 100); do running "$name" && return; sleep 0.1; done
  say "$name did not start; see $DIR/log"; exit 1
}

stop_daemon() {
  local name=$1 pid
  running "$name" || return 0
  pid=$(<"$DIR/run/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}

up() {
  install_packages
  mkdir -p "$DIR/run"
  if configure; then  # a changed config: restart what we run
    stop_daemon slurmd; stop_daemon slurmctld
  fi
  start_munge
  start_daemon slurmctld
  start_daemon slurmd -N "$HOST"
  for _ in $(seq 300); do
    case $(sinfo -h -n "$HOST" -o %T 2>/dev/null) in
      idle*|mixed*|allocated*) say "node $HOST is up: $(sinfo -h -o '%P %D %T %c %G')"; return ;;
      drain*|down*|invalid*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
  done
  say "the node did not become idle"; sinfo -N -l || true; exit 1
}

down() {
  if running slurmctld; then
    scancel --full --quiet --user root 2>/dev/null || true
    for _ in $(seq 100); do [[ -z $(squeue -h -t PD,R,CG 2>/dev/null) ]] && break; sleep 0.2; done
  fi
  stop_daemon slurmd
  stop_daemon slurmctld
  if [[ -s $DIR/run/munged.pid ]]; then
    kill -TERM "$(<"$DIR/run/munged.pid")" 2>/dev/null || true
    rm -f "$DIR/run/munged.pid"
  fi
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  status) for d in munged slurmctld slurmd; do running "$d" && echo "$d running" || echo "$d stopped"; done
          sinfo 2>/dev/null || true; squeue 2>/dev/null || true ;;
  *) echo "usage: $0 [up|down|status]" >&2; exit 2 ;;
esac
