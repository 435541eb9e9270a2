#!/usr/bin/env bash
# Runs the whole system on this machine: nats-server (JetStream), the mock NewsAPI, data-streams
# and one worker; creates the demo job unless it exists, waits for a batch that completes after
# this start and prints it, then runs until Ctrl-C, which stops everything and exits 0.
#
#   scripts/demo.sh           reuse ./data: jobs, batches and the stream of earlier runs are kept
#   scripts/demo.sh --fresh   delete what earlier runs left in ./data first
#
# DEMO_DATA_DIR moves ./data, DEMO_BIN_DIR the binaries (target/release); DEMO_ONCE=1 exits
# after printing the batch (to check the demo).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

fresh=0
for arg in "$@"; do
  case "$arg" in
    --fresh) fresh=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "demo: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

bin=${DEMO_BIN_DIR:-target/release}
data=${DEMO_DATA_DIR:-./data}
started=$(date -u +%Y-%m-%dT%H:%M:%S)
# Set when run through scripts/foreground.sh (as `just demo` does): the bash that `just` signals.
parent=${NEWSFLOW_FOREGROUND_PID:-}

# ./data is reused on purpose (the demo job and its history survive a restart, as they would
# in production); --fresh removes only what the demo itself writes there.
if [ "$fresh" = 1 ]; then
  rm -rf "$data/nats" "$data/data-streams" "$data/logs"
  data_note="deleted what earlier runs left in $data: starting clean"
elif [ -d "$data/data-streams" ]; then
  data_note="reusing $data"
else
  data_note="starting with an empty $data"
fi
mkdir -p "$data/logs"

# Every request has a deadline: a port held by something that accepts and never answers must
# not hang the demo (and bash runs no Ctrl-C trap while a command runs).
http() { curl -s --connect-timeout 2 --max-time 10 "$@"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints the default port when it is free, else the next free one above it, saying why on stderr.
pick_port() {
  local what=$1 default=$2 port
  if ! port_busy "$default"; then echo "$default"; return; fi
  for port in $(seq $((default + 1)) $((default + 200))); do
    if ! port_busy "$port"; then
      echo "port $default ($what) is taken by another program; using $port instead" >&2
      echo "$port"
      return
    fi
  done
  echo "demo: port $default ($what) and the 200 ports above it are taken" >&2
  return 1
}

nats_port=$(pick_port NATS 4222)
http_port=$(pick_port "data-streams API" 3000)
mock_port=$(pick_port "mock NewsAPI" 8081)

names=()
pids=()
logs=()
# Stops the services newest first, so data-streams and the worker finish what they hold while
# NATS is still up; one that ignores SIGTERM for 20 s is killed. A second Ctrl-C meanwhile is
# ignored: the services run in sessions of their own and would outlive this script.
stop_all() {
  local i deadline
  trap '' INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || continue
    deadline=$((SECONDS + 20))
    while kill -0 "${pids[$i]}" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  pids=()
}
on_signal() {
  trap - EXIT
  stop_all
  echo "stopped: nats-server, newsapi-mock, data-streams and worker are down ($data kept)"
  exit 0
}
on_exit() {
  local status=$?
  trap - EXIT
  stop_all
  exit "$status"
}
trap on_signal INT TERM
trap on_exit EXIT

# Starts a service in the background, in a session of its own when `setsid` exists so that
# Ctrl-C reaches only this script, which then stops the services in order.
start() {
  local name=$1 log=$2
  shift 2
  if command -v setsid >/dev/null; then set -- setsid "$@"; fi
  "$@" >"$data/logs/$log.out" 2>"$data/logs/$log.log" </dev/null &
  names+=("$name")
  pids+=($!)
  logs+=("$data/logs/$log")
}

# The name of a started process that has exited, if any, and its log tail.
check_alive() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "demo: ${names[$i]} exited; the end of ${logs[$i]}.log and .out:" >&2
      tail -n 20 "${logs[$i]}.log" "${logs[$i]}.out" >&2 || true
      return 1
    fi
  done
}

# Runs `$@` until it succeeds, for at most $1 seconds, failing early when a process died.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    check_alive || exit 1
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo: $what did not happen within ${secs}s (logs in $data/logs)" >&2
      exit 1
    fi
    sleep 0.2
  done
}

nats_bin=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
start nats-server nats "$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$data/nats"
start newsapi-mock mock "$bin/newsapi-mock" --addr "127.0.0.1:$mock_port" --rotate-secs 20
export NATS_URL="nats://127.0.0.1:$nats_port"
wait_until 20 "nats-server accepting connections" port_busy "$nats_port"
start data-streams data-streams "$bin/data-streams" --http-addr "127.0.0.1:$http_port" \
  --data-dir "$data/data-streams"
# The mock is not metered like NewsAPI's free plan (50 requests per 12 hours, the worker's
# default): the demo job's 30-second interval gets a budget it fits in, so `GET /quota` has
# something to show without runs being skipped.
start worker worker env NEWSAPI_URL="http://127.0.0.1:$mock_port" NEWSAPI_KEY=demo-key \
  NEWSAPI_REQUEST_BUDGET=1000 NEWSAPI_BUDGET_WINDOW_SECS=3600 "$bin/worker"

api="http://127.0.0.1:$http_port"
wait_until 60 "data-streams ready" http -f -o /dev/null "$api/readyz"

if [ "$data_note" = "reusing $data" ]; then
  jobs=$({ http "$api/jobs?limit=1000" || true; } | { grep -o '"state":"' || true; } | wc -l | tr -d ' ')
  if [ "$jobs" = 1 ]; then jobs="1 job"; else jobs="$jobs jobs"; fi
  data_note="reusing $data ($jobs kept from earlier runs); \`./dev demo --fresh\` starts clean"
fi
cat <<EOF
open the page: $api/
newsflow is up; $data_note
  API:          $api/jobs, $api/events (live), $api/openapi.json
  NATS:         $NATS_URL
  mock NewsAPI: http://127.0.0.1:$mock_port
  logs:         $data/logs
EOF

code=$(http -o "$data/logs/create-job.json" -w '%{http_code}' -X POST "$api/jobs" \
  -H 'content-type: application/json' \
  -d '{"id":"demo","params":{"q":"bitcoin","language":"en"},"interval_secs":30,"max_pages":2,"page_size":10}' || true)
case "$code" in
  201) echo "created the demo job: GET $api/jobs/demo" ;;
  409)
    if http "$api/jobs/demo" | grep -q '"state":"stopped"'; then
      http -f -o /dev/null -X POST "$api/jobs/demo/start" || {
        echo "demo: starting the stopped demo job failed (logs in $data/logs)" >&2
        exit 1
      }
      echo "the demo job already exists and was stopped; started it again: GET $api/jobs/demo"
    else
      echo "the demo job already exists; reusing it: GET $api/jobs/demo"
    fi
    ;;
  *)
    echo "demo: creating the demo job answered HTTP $code: $(cat "$data/logs/create-job.json")" >&2
    exit 1
    ;;
esac

# The first field "$1" of the latest complete batch in the articles page on stdin.
batch_field() { sed -n "s/.*\"batch\":{[^}]*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }

# A batch counts only when its run started after this demo did: a batch a previous run left
# behind is old news.
fresh_batch() {
  page=$(http "$api/jobs/demo/articles?limit=10") || return 1
  local batch_started
  batch_started=$(printf '%s' "$page" | batch_field started_at)
  [ -n "$batch_started" ] && [[ "$batch_started" > "$started" ]]
}

echo "waiting for a batch that starts and completes after this demo started ($started UTC)..."
wait_until 90 "a new complete batch of the demo job" fresh_batch
printf 'batch %s completed at %s: %s articles, the first ones:\n' \
  "$(printf '%s' "$page" | batch_field id)" "$(printf '%s' "$page" | batch_field completed_at)" \
  "$(printf '%s' "$page" | batch_field article_count)"
if command -v python3 >/dev/null; then
  printf '%s' "$page" | python3 -c '
import json, sys
for a in json.load(sys.stdin).get("articles", []):
    print("  %s  %s: %s" % (a.get("published_at"), (a.get("source") or {}).get("name"), a.get("title")))'
else
  echo "  GET $api/jobs/demo/articles to see them"
fi

[ "${DEMO_ONCE:-0}" = 1 ] && exit 0
watch="just watch"
if [ "$nats_port" != 4222 ]; then watch="NATS_URL=$NATS_URL just watch"; fi
echo "running; a new batch every 30 s. Try \`curl $api/jobs/demo/batches\` or \`$watch\` in another terminal. Ctrl-C stops."
# Runs until Ctrl-C; a service that dies ends the demo with its log tail. Run through
# scripts/foreground.sh, the demo also ends when that bash is gone: `just` forwards a SIGTERM
# to it, not to this one.
while [ -z "$parent" ] || kill -0 "$parent" 2>/dev/null; do
  check_alive || exit 1
  sleep 1
done
on_signal
