#!/usr/bin/env bash
# One screen: jobs (state, owner, latest batch), workers, consumer lag and NewsAPI budget, read
# from data-streams (API, default http://127.0.0.1:3000) and a worker's ops address (WORKER_OPS,
# default http://127.0.0.1:9464); what `just up` started is found through ./data/run/env.
# DS_API_TOKEN is sent when set.
set -uo pipefail
cd "$(dirname "$0")/.."
env_file="${UP_DATA_DIR:-./data}/run/env"
if [ -f "$env_file" ]; then
  API=${API:-$(sed -n 's/^API=//p' "$env_file")}
  WORKER_OPS=${WORKER_OPS:-$(sed -n 's/^WORKER_OPS=//p' "$env_file")}
fi
api=${API:-http://127.0.0.1:3000}
ops=${WORKER_OPS:-http://127.0.0.1:9464}
auth=()
if [ -n "${DS_API_TOKEN:-}" ]; then auth=(-H "Authorization: Bearer $DS_API_TOKEN"); fi
get() { curl -s --max-time 5 "${auth[@]}" "$@"; }

# The value of one unlabelled sample (or the sum of a labelled family) in a metrics text.
metric() { awk -v name="$1" '$1 == name || index($1, name "{") == 1 { sum += $NF; seen = 1 } END { if (seen) print sum; else print "-" }'; }

ready=$(get -o /dev/null -w '%{http_code}' "$api/readyz")
echo "data-streams $api: readyz $ready"
ds_metrics=$(get "$api/metrics" || true)
jobs=$(get "$api/jobs?limit=1000" || true)
echo
echo "jobs:"
if command -v python3 >/dev/null && [ -n "$jobs" ]; then
  printf '%s' "$jobs" | python3 -c '
import json, sys
try:
    jobs = json.load(sys.stdin).get("jobs", [])
except ValueError:
    jobs = []
if not jobs:
    print("  (none)")
for j in jobs:
    worker = (j.get("worker") or {}).get("id") or "-"
    latest = j.get("latest_batch") or {}
    print("  %-24s %-8s worker %-16s every %5ss  latest %s" % (
        j.get("id"), j.get("state"), worker, j.get("interval_secs"),
        latest.get("completed_at") or latest.get("id") or "-"))'
else
  printf '  %s\n' "$jobs"
fi
echo
echo "workers alive:      $(printf '%s\n' "$ds_metrics" | metric newsflow_workers_alive)"
echo "consumer lag:       pending $(printf '%s\n' "$ds_metrics" | metric newsflow_consumer_pending), ack pending $(printf '%s\n' "$ds_metrics" | metric newsflow_consumer_ack_pending), redelivering $(printf '%s\n' "$ds_metrics" | metric newsflow_consumer_redelivered)"
echo "dead letters:       $(printf '%s\n' "$ds_metrics" | metric newsflow_poison_messages_total)"
worker_metrics=$(curl -s --max-time 5 "$ops/metrics" || true)
echo
if [ -z "$worker_metrics" ]; then
  echo "worker $ops: no answer (start workers with --metrics-addr)"
else
  echo "worker $ops: readyz $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$ops/readyz")"
  echo "  jobs owned:       $(printf '%s\n' "$worker_metrics" | metric newsflow_worker_jobs_owned)"
  echo "  runs:             $(printf '%s\n' "$worker_metrics" | metric newsflow_worker_runs_total)"
  echo "  NewsAPI requests: $(printf '%s\n' "$worker_metrics" | metric newsflow_worker_newsapi_requests_total)"
  echo "  budget:           used $(printf '%s\n' "$worker_metrics" | metric newsflow_worker_budget_used), left $(printf '%s\n' "$worker_metrics" | metric newsflow_worker_budget_left)"
fi
