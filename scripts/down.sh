#!/usr/bin/env bash
# Stops what `just up` started, newest first (data-streams and the worker finish what they hold
# while NATS is still up); a process that ignores SIGTERM for 20 s is killed.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${UP_DATA_DIR:-./data}/run"
if [ ! -s "$run/pids" ]; then
  echo "down: nothing started by \`just up\` ($run/pids is empty)"
  exit 0
fi
mapfile -t entries <"$run/pids"
for ((i = ${#entries[@]} - 1; i >= 0; i--)); do
  read -r name pid <<<"${entries[$i]}"
  if ! kill -TERM "$pid" 2>/dev/null; then
    echo "  $name: already stopped"
    continue
  fi
  deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  if kill -KILL "$pid" 2>/dev/null; then echo "  $name: killed after 20 s"; else echo "  $name: stopped"; fi
done
: >"$run/pids"
echo "newsflow is down (data kept)"
