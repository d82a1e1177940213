#!/usr/bin/env bash
# Start a local two-node Ray cluster by hand, on loopback only, and print its address.
#
#   cluster/start-local-cluster.sh [--port 6390] [--dir DIR] [--ip 127.0.0.2]
#                                  [--head-cpus 1] [--worker-cpus 1]
#
#   node A (head)    --resources '{"node_a": 1}'  --labels dwray-zone=zone-a   temp dir DIR/head
#   node B (worker)  --resources '{"node_b": 1}'  --labels dwray-zone=zone-b   temp dir DIR/worker
#
# stdout: the cluster address (host:port), one line, for `dwray.connect(address=...)`,
# `dw status --address ...` and `RAY_ADDRESS`; progress goes to stderr. DIR/cluster.env
# holds what a client needs (RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH):
#   set -a; . DIR/cluster.env; set +a
#
# Authentication: Ray's token authentication is on (RAY_AUTH_MODE=token on both nodes, as
# Ray requires it to be the same everywhere), with a token of this cluster's own in
# DIR/auth_token (mode 0600; ~/.ray/auth_token is neither read nor written). Ray turns
# token auth on by itself only for clusters it finds locally, never for an explicit
# address, so every client of this cluster needs RAY_AUTH_MODE=token and
# RAY_AUTH_TOKEN_PATH=DIR/auth_token in its environment (cluster.env has both).
#
# Ports: PORT is the head's GCS port; the other fixed ports of both nodes are PORT+1 ..
# PORT+15 (see below), worker ports are picked by the OS. So two clusters (or this one and
# a `ray start --head` on the default 6379) do not collide as long as their PORT ranges
# do not overlap.
#
# Loopback: the nodes listen on --ip only (default 127.0.0.2). Not 127.0.0.1: Ray rewrites
# "127.0.0.1"/"localhost" in an address to the machine's outward IP before connecting
# (ray-project/ray#59110), where a loopback-only node does not listen, so neither the
# second node nor a driver could join. Any other 127.x.y.z address is loopback as well.
#
# Isolation: each node has its own --temp-dir under DIR, so the "latest cluster" file
# Ray writes (<temp dir>/ray_current_cluster) is not /tmp/ray's and a plain `ray.init()`
# elsewhere on the machine never attaches to this cluster by accident. Stop it with
# cluster/stop-local-cluster.sh (never `ray stop`: that stops every Ray on the machine).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port=6390
ip=127.0.0.2
dir=""
head_cpus=1
worker_cpus=1
python="${PYTHON:-python3}"

usage() { sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --ip) ip="$2"; shift 2 ;;
    --head-cpus) head_cpus="$2"; shift 2 ;;
    --worker-cpus) worker_cpus="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "start-local-cluster: unknown argument $1" >&2; usage ;;
  esac
done

[[ "$port" =~ ^[0-9]+$ ]] && (( port >= 1024 && port + 15 <= 65535 )) \
  || { echo "start-local-cluster: --port must be a number in 1024..65520" >&2; exit 2; }
[[ "$ip" == 127.* ]] || { echo "start-local-cluster: --ip must be a loopback address (127.x.y.z)" >&2; exit 2; }
# Keep DIR short: Ray's unix sockets live under it and a socket path may not exceed ~107 bytes.
dir="${dir:-${TMPDIR:-/tmp}/dwray-cluster-$port}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd -P)"

if [[ -f "$dir/cluster.env" ]] && [[ -n "$("$python" "$here/local_cluster_procs.py" list "$dir")" ]]; then
  echo "start-local-cluster: a cluster from $dir is already running:" >&2
  cat "$dir/cluster.env" >&2
  exit 1
fi
mkdir -p "$dir/head" "$dir/worker"
address="$ip:$port"
echo "$address" >"$dir/address"  # local_cluster_procs.py finds the Ray Client server by it

# If anything below fails, take down whatever was started.
started=0
cleanup_on_error() {
  if [[ $started == 1 ]]; then
    echo "start-local-cluster: failed; stopping what was started" >&2
    "$python" "$here/local_cluster_procs.py" stop "$dir" >&2 || true
  fi
}
trap cleanup_on_error ERR

# Neither node may pick up another cluster's address or token from the environment.
unset RAY_ADDRESS RAY_AUTH_TOKEN
token="$dir/auth_token"
if [[ ! -s "$token" ]]; then
  (umask 077 && "$python" -c 'import secrets; print(secrets.token_hex(32))' >"$token")
fi
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$token"

common=(--node-ip-address="$ip" --min-worker-port=0 --max-worker-port=0 --disable-usage-stats)

echo "start-local-cluster: head node (node A) at $address, temp dir $dir/head" >&2
started=1
ray start --head "${common[@]}" \
  --port="$port" \
  --ray-client-server-port=$((port + 1)) \
  --node-manager-port=$((port + 2)) \
  --object-manager-port=$((port + 3)) \
  --dashboard-agent-listen-port=$((port + 4)) \
  --dashboard-agent-grpc-port=$((port + 5)) \
  --metrics-export-port=$((port + 6)) \
  --runtime-env-agent-port=$((port + 7)) \
  --include-dashboard=false --dashboard-host="$ip" --dashboard-port=$((port + 8)) \
  --num-cpus="$head_cpus" --resources='{"node_a": 1}' --labels=dwray-zone=zone-a \
  --temp-dir="$dir/head" >"$dir/head.log" 2>&1 \
  || { cat "$dir/head.log" >&2; false; }

echo "start-local-cluster: worker node (node B), temp dir $dir/worker" >&2
ray start --address="$address" "${common[@]}" \
  --node-manager-port=$((port + 10)) \
  --object-manager-port=$((port + 11)) \
  --dashboard-agent-listen-port=$((port + 12)) \
  --dashboard-agent-grpc-port=$((port + 13)) \
  --metrics-export-port=$((port + 14)) \
  --runtime-env-agent-port=$((port + 15)) \
  --num-cpus="$worker_cpus" --resources='{"node_b": 1}' --labels=dwray-zone=zone-b \
  --temp-dir="$dir/worker" >"$dir/worker.log" 2>&1 \
  || { cat "$dir/worker.log" >&2; false; }

"$python" "$here/local_cluster_procs.py" record "$dir"
# What a client needs, and nothing else (a DWRAY_* name here would be read as a dwray setting).
cat >"$dir/cluster.env" <<EOF
# dwray local cluster in $dir; load with: set -a; . $dir/cluster.env; set +a
RAY_ADDRESS=$address
RAY_AUTH_MODE=token
RAY_AUTH_TOKEN_PATH=$token
EOF
trap - ERR
echo "start-local-cluster: running. Clients: set -a; . $dir/cluster.env; set +a" \
  "then dwray.connect() (or dwray.connect(address=\"$address\")); stop with" \
  "cluster/stop-local-cluster.sh --dir $dir" >&2
echo "$address"
