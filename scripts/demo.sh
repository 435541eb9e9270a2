#!/usr/bin/env bash
# Starts nats-server (JetStream, its own store), the mock NewsAPI, data-streams and one worker,
# creates a demo job and prints its latest complete batch. Ctrl-C stops everything.
# DEMO_ONCE=1 exits after printing (used to check the demo itself).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
data=${DEMO_DATA_DIR:-./data}
mkdir -p "$data/logs"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo "$1"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

nats_bin=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
nats_port=4222
if port_busy "$nats_port"; then nats_port=$(free_port 14222); fi
http_port=3000
if port_busy "$http_port"; then http_port=$(free_port 13000); fi
mock_port=8081
if port_busy "$mock_port"; then mock_port=$(free_port 18081); fi

pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$data/nats" >"$data/logs/nats.log" 2>&1 & pids+=($!)
"$bin/newsapi-mock" --addr "127.0.0.1:$mock_port" --rotate-secs 20 >"$data/logs/mock.log" 2>&1 & pids+=($!)
export NATS_URL="nats://127.0.0.1:$nats_port"
for _ in $(seq 50); do port_busy "$nats_port" && break; sleep 0.1; done
"$bin/data-streams" --http-addr "127.0.0.1:$http_port" --data-dir "$data/data-streams" >"$data/logs/data-streams.out" 2>"$data/logs/data-streams.log" & pids+=($!)
NEWSAPI_URL="http://127.0.0.1:$mock_port" NEWSAPI_KEY=demo-key "$bin/worker" >"$data/logs/worker.out" 2>"$data/logs/worker.log" & pids+=($!)

api="http://127.0.0.1:$http_port"
for _ in $(seq 100); do curl -sf "$api/readyz" >/dev/null && break; sleep 0.1; done
echo "newsflow is up: API $api, NATS $NATS_URL, mock NewsAPI http://127.0.0.1:$mock_port (logs in $data/logs)"

curl -s -o /dev/null -X POST "$api/jobs" -H 'content-type: application/json' \
  -d '{"id":"demo","params":{"q":"bitcoin","language":"en"},"interval_secs":30,"max_pages":2,"page_size":10}' || true
curl -s -X POST "$api/jobs/demo/start" >/dev/null || true
echo "demo job created: GET $api/jobs/demo"

for _ in $(seq 100); do
  body=$(curl -s "$api/jobs/demo/articles")
  case "$body" in *'"status":"complete"'*) break ;; esac
  sleep 0.2
done
if command -v python3 >/dev/null; then
  printf '%s' "$body" | python3 -c "$(cat <<'PY'
import json, sys
page = json.load(sys.stdin)
batch = page.get("batch") or {}
print("latest complete batch %s: %s articles" % (batch.get("id"), batch.get("article_count")))
for a in page.get("articles", []):
    print("  %s  %s: %s" % (a.get("published_at"), (a.get("source") or {}).get("name"), a.get("title")))
PY
)"
else
  printf '%s\n' "$body"
fi
[ "${DEMO_ONCE:-0}" = 1 ] && exit 0
echo "running; new batches every 30 s. Try: curl $api/jobs/demo/batches   (Ctrl-C to stop)"
wait
