#!/usr/bin/env bash
# Stop the local cluster that start-local-cluster.sh started, and nothing else.
#
#   cluster/stop-local-cluster.sh [--port 6390 | --dir DIR] [--grace 10] [--clean]
#
# The cluster is found by its state folder DIR (default ${TMPDIR:-/tmp}/dwray-cluster-PORT,
# as the start script chose): its processes are those whose command line names a session
# folder under DIR/head or DIR/worker, their children (the Ray workers) and the processes
# recorded in DIR/pids at start (see cluster/local_cluster_procs.py). They get SIGTERM,
# then SIGKILL after --grace seconds. `ray stop` is NOT used: it stops every Ray process
# on the machine, including other clusters and other users' test sessions.
#
# Drivers connected to the cluster (your Python session) are not stopped; they lose
# the cluster. --clean also removes DIR (logs included); by default it is kept, minus
# cluster.env. Exit status: 0 when nothing of the cluster is left running.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port=6390
dir=""
grace=10
clean=0
python="${PYTHON:-python3}"

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --grace) grace="$2"; shift 2 ;;
    --clean) clean=1; shift ;;
    -h|--help) usage ;;
    *) echo "stop-local-cluster: unknown argument $1" >&2; usage ;;
  esac
done

dir="${dir:-${TMPDIR:-/tmp}/dwray-cluster-$port}"
if [[ ! -d "$dir" ]]; then
  echo "stop-local-cluster: no cluster folder $dir" >&2
  exit 0
fi
dir="$(cd "$dir" && pwd -P)"

status=0
"$python" "$here/local_cluster_procs.py" stop "$dir" --grace "$grace" || status=$?
if [[ $status == 0 ]]; then
  rm -f "$dir/cluster.env"
  if [[ $clean == 1 ]]; then
    rm -rf "$dir"
  fi
fi
exit $status
