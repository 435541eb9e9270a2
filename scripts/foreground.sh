#!/usr/bin/env bash
# Runs a command as the terminal's foreground job, in a process group of its own, and exits
# with its status: `bash scripts/foreground.sh cmd args...`.
#
# Why: Ctrl-C signals the terminal's whole foreground process group. Run straight from a just
# recipe, `just` gets the SIGINT too, and then reports "interrupted" and exits 130 however
# cleanly the command stops. With job control on, bash gives the terminal to the command's own
# group, so only the command sees Ctrl-C and the recipe ends with the command's own status.
#
# A SIGTERM to `just` is forwarded to this bash only, which dies without passing it on (bash
# runs no trap while a foreground job runs); the command finds this bash's pid in
# NEWSFLOW_FOREGROUND_PID to notice that and stop.
set -uo pipefail
if [ -t 0 ]; then set -m; fi
NEWSFLOW_FOREGROUND_PID=$$ "$@"
