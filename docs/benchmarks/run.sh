#!/bin/sh
# Runs one recorded benchmark and prints its record: date, machine, the command and its output.
# Usage (from the repository's root, as root: the lab binds port 22 of 127.0.x.y):
#   docs/benchmarks/run.sh zero-loss|zero-loss-500|steady-load|gate-lag|upload|waves|events|lab-30|lab-waves|closure-copy|fanout >docs/benchmarks/raw/NAME.txt
# CIMDEPLOY_BENCH_RATE (zero-loss, steady-load), CIMDEPLOY_BENCH_UPLOAD_MIB (upload),
# CIMDEPLOY_BENCH_LAB_{NODES,CLUSTERS,CLUSTER_SIZE} (lab-30, lab-waves: 30, 3, 3),
# CIMDEPLOY_BENCH_MAX_PARALLEL (lab-waves: 8),
# CIMDEPLOY_BENCH_CLOSURE_PATHS and CIMDEPLOY_BENCH_CLOSURE_MIB (closure-copy, fanout) and
# CIMDEPLOY_BENCH_FANOUT_NODES (fanout) pass through.
# The figures depend on the machine and on what else runs on it: the load average is recorded with them.
set -eu
case ${1:-} in
zero-loss) cmd="go test ./fixtures/lab/load -run ^\$ -bench ZeroLoss -benchtime 1x -timeout 30m -v" ;;
zero-loss-500)
	CIMDEPLOY_BENCH_RATE=500
	export CIMDEPLOY_BENCH_RATE
	cmd="go test ./fixtures/lab/load -run ^\$ -bench ZeroLoss -benchtime 1x -timeout 30m -v"
	;;
steady-load) cmd="go test ./fixtures/lab/load -run ^\$ -bench SteadyLoad -benchtime 1x -v" ;;
gate-lag) cmd="go test ./fixtures/lab/load -run ^\$ -bench GateLag -benchtime 5x -timeout 30m -v" ;;
upload) cmd="go test ./remote -run ^\$ -bench Upload -benchtime 1x -timeout 30m" ;;
waves) cmd="go test ./rollout -run ^\$ -bench FakeWaves30 -benchtime 5x" ;;
events) cmd="go test ./gitops/topology -run ^\$ -bench History -benchtime 3x" ;;
lab-30)
	# One Nix (the one on PATH): the lab's start is measured, not Nix versions against each other.
	CIMDEPLOY_TEST_NIX=$(command -v nix)
	export CIMDEPLOY_TEST_NIX
	cmd="go test ./fixtures/lab -run ^\$ -bench LabScale -benchtime 1x -timeout 30m -v"
	;;
lab-waves)
	CIMDEPLOY_TEST_NIX=$(command -v nix)
	export CIMDEPLOY_TEST_NIX
	cmd="go test ./rollout -run ^\$ -bench LabWaves -benchtime 1x -timeout 45m -v"
	;;
closure-copy) cmd="go test ./remote -run ^\$ -bench ClosureCopy -benchtime 1x -timeout 60m" ;;
fanout) cmd="go test ./remote -run ^\$ -bench Fanout -benchtime 1x -timeout 60m" ;;
*)
	echo "usage: $0 zero-loss|zero-loss-500|steady-load|gate-lag|upload|waves|events|lab-30|lab-waves|closure-copy|fanout" >&2
	exit 2
	;;
esac
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- . ':!docs' 2>/dev/null || echo ' (with uncommitted changes)')"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "go: $(go version | cut -d' ' -f3-)"
echo "nix: $(nix --version 2>/dev/null || echo none)"
echo "nats-server: $(nats-server --version 2>/dev/null || echo none)"
echo "openssh: $(ssh -V 2>&1)"
echo "CIMDEPLOY_BENCH_RATE: ${CIMDEPLOY_BENCH_RATE:-unset}"
echo "CIMDEPLOY_BENCH_FANOUT_NODES: ${CIMDEPLOY_BENCH_FANOUT_NODES:-unset}"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: $cmd"
echo
# The lab's and the rollout's info lines are left out, and so are the load's warnings, which an
# overloaded cluster writes by the hundred thousand; their count by message is printed instead.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
$cmd >"$out" 2>&1 || true
# The lab's temporary directory is this machine's, not the record's.
grep -v -e 'level=INFO' -e 'level=WARN' -e 'level=DEBUG' "$out" | sed -E 's#lab /[^ ]+ up on#lab (a temporary directory) up on#' || true
echo
echo "warnings left out, by message:"
grep 'level=WARN' "$out" | sed 's/.* msg="\([^"]*\)".*/\1/' | sort | uniq -c | sort -rn || true
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
