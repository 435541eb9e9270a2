#!/usr/bin/env bash
# Starts newsflow in the background and returns: nats-server (JetStream), the mock NewsAPI,
# data-streams and one worker (with its ops address), as the demo does but without a job and
# without holding the terminal. `just down` stops them; `just logs` follows their logs;
# `just status` shows jobs, workers, lag and budget.
#
# UP_DATA_DIR moves ./data (the same directory the demo uses), UP_BIN_DIR the binaries
# (target/release). Ports: UP_NATS_PORT (4222), UP_HTTP_PORT (3000), UP_MOCK_PORT (8081),
# UP_OPS_PORT (9464, the worker's ops address); a taken port is refused, not moved. The
# addresses go to ./data/run/env, where `just status` reads them.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${UP_BIN_DIR:-target/release}
data=${UP_DATA_DIR:-./data}
run="$data/run"
mkdir -p "$data/logs" "$run"

me=up
# shellcheck source=scripts/procs.sh
source scripts/procs.sh
refuse_if_running '`just down` first'

nats_port=${UP_NATS_PORT:-4222}
http_port=${UP_HTTP_PORT:-3000}
mock_port=${UP_MOCK_PORT:-8081}
ops_port=${UP_OPS_PORT:-9464}
for port in "$nats_port" "$http_port" "$mock_port" "$ops_port"; do
  if port_busy "$port"; then
    echo "up: port $port is taken by another program; stop it (or the demo) first, or set UP_*_PORT" >&2
    exit 1
  fi
done

nats_bin=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
start nats-server "$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$data/nats"
start newsapi-mock "$bin/newsapi-mock" --addr "127.0.0.1:$mock_port" --rotate-secs 20
export NATS_URL="nats://127.0.0.1:$nats_port"
api="http://127.0.0.1:$http_port"
ops="http://127.0.0.1:$ops_port"
printf 'API=%s\nWORKER_OPS=%s\nNATS_URL=%s\n' "$api" "$ops" "$NATS_URL" >"$run/env"
wait_until 20 "nats-server accepting connections" port_busy "$nats_port"
start data-streams "$bin/data-streams" --http-addr "127.0.0.1:$http_port" --data-dir "$data/data-streams"
start worker env NEWSAPI_URL="http://127.0.0.1:$mock_port" NEWSAPI_KEY=demo-key \
  "$bin/worker" --metrics-addr "127.0.0.1:$ops_port"
wait_until 60 "data-streams ready" ready "$api/readyz"
wait_until 60 "the worker ready" ready "$ops/readyz"

cat <<MSG
newsflow is up in the background (pids in $run/pids)
  API:           $api/   (metrics: /metrics)
  worker ops:    $ops/metrics, /healthz, /readyz
  NATS:          $NATS_URL
  mock NewsAPI:  http://127.0.0.1:$mock_port
  logs:          $data/logs (\`just logs\`)   status: \`just status\`   stop: \`just down\`
MSG
