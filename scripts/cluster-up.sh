#!/usr/bin/env bash
# Starts a local newsflow on a 3-node nats-server cluster in the background, for trying
# failover by hand: nodes n1..n3 (JetStream, routes on loopback), the mock NewsAPI, a worker on
# each node and two data-streams (each with its own consumer and data dir; one holds the
# control lease, the other serves reads and forwards control requests). Every program is given
# all three URLs and `NEWS` has 3 replicas. `just cluster-down` stops it all.
#
# CLUSTER_DATA_DIR moves ./data-cluster, UP_BIN_DIR the binaries (target/release). Ports:
# CLUSTER_NATS_PORT (4250: nodes on 4250-4252, routes on +2000), CLUSTER_HTTP_PORT (3100:
# data-streams on 3100 and 3101), CLUSTER_MOCK_PORT (8181). A taken port is refused.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${UP_BIN_DIR:-target/release}
data=${CLUSTER_DATA_DIR:-./data-cluster}
run="$data/run"
mkdir -p "$data/logs" "$run"

me=cluster-up
# shellcheck source=scripts/procs.sh
source scripts/procs.sh
refuse_if_running '`just cluster-down` first'

nats_port=${CLUSTER_NATS_PORT:-4250}
http_port=${CLUSTER_HTTP_PORT:-3100}
mock_port=${CLUSTER_MOCK_PORT:-8181}
nodes=(1 2 3)
client_port() { echo $((nats_port + $1 - 1)); }
route_port() { echo $((nats_port + 2000 + $1 - 1)); }
for port in $(for n in "${nodes[@]}"; do client_port "$n"; route_port "$n"; done) \
  "$http_port" $((http_port + 1)) "$mock_port"; do
  if port_busy "$port"; then
    echo "cluster-up: port $port is taken by another program; stop it first, or set CLUSTER_*_PORT" >&2
    exit 1
  fi
done

routes=$(for n in "${nodes[@]}"; do printf 'nats-route://127.0.0.1:%s, ' "$(route_port "$n")"; done)
nats_bin=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
urls=""
for n in "${nodes[@]}"; do
  mkdir -p "$data/n$n"
  cat >"$data/n$n/nats.conf" <<CONF
server_name: n$n
cluster {
  name: newsflow
  listen: 127.0.0.1:$(route_port "$n")
  routes: [${routes%, }]
}
CONF
  start "nats-n$n" "$nats_bin" -c "$data/n$n/nats.conf" -a 127.0.0.1 -p "$(client_port "$n")" -js -sd "$data/n$n/store"
  urls="$urls${urls:+,}nats://127.0.0.1:$(client_port "$n")"
done
for n in "${nodes[@]}"; do wait_until 20 "node n$n accepting connections" port_busy "$(client_port "$n")"; done
start newsapi-mock "$bin/newsapi-mock" --addr "127.0.0.1:$mock_port" --rotate-secs 20

export NATS_URL="$urls" NEWS_STREAM_REPLICAS=3
for d in 1 2; do
  start "data-streams-$d" "$bin/data-streams" --http-addr "127.0.0.1:$((http_port + d - 1))" \
    --data-dir "$data/data-streams-$d" --consumer-name "data-streams-$d"
done
for n in "${nodes[@]}"; do
  start "worker-n$n" env NEWSAPI_URL="http://127.0.0.1:$mock_port" NEWSAPI_KEY=demo-key \
    "$bin/worker" --worker-id "worker-n$n"
done
for d in 1 2; do wait_until 90 "data-streams-$d ready" ready "http://127.0.0.1:$((http_port + d - 1))/readyz"; done
printf 'API=%s\nNATS_URL=%s\n' "http://127.0.0.1:$http_port" "$NATS_URL" >"$run/env"

cat <<MSG
newsflow is up on a 3-node cluster in the background (pids in $run/pids)
  NATS nodes:    $NATS_URL
  data-streams:  http://127.0.0.1:$http_port/ and http://127.0.0.1:$((http_port + 1))/
  workers:       worker-n1, worker-n2, worker-n3
  mock NewsAPI:  http://127.0.0.1:$mock_port
  logs:          $data/logs    stop: \`just cluster-down\`
  try: kill -9 one node's pid (see $run/pids), watch both data-streams keep answering
MSG
