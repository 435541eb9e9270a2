# Shared by up.sh and cluster-up.sh (sourced): background processes with their logs and pids
# under $data, and waiting for them. The sourcing script sets `me` (its name, for messages),
# `data` and `run`.

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ready() { curl -s -f -o /dev/null --max-time 2 "$1"; }

# Refuses to start over processes an earlier start left running.
refuse_if_running() {
  if [ -s "$run/pids" ]; then
    while read -r name pid; do
      if kill -0 "$pid" 2>/dev/null; then
        echo "$me: $name (pid $pid) from an earlier start is still running; $1" >&2
        exit 1
      fi
    done <"$run/pids"
  fi
  : >"$run/pids"
}

# start NAME COMMAND...: runs it in the background, its own session, logs in $data/logs.
start() {
  local name=$1
  shift
  if command -v setsid >/dev/null; then set -- setsid "$@"; fi
  nohup "$@" >"$data/logs/$name.out" 2>"$data/logs/$name.log" </dev/null &
  echo "$name $!" >>"$run/pids"
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$me: $what did not happen within ${secs}s; logs in $data/logs (stop what started with its down recipe)" >&2
      exit 1
    fi
    sleep 0.2
  done
}
