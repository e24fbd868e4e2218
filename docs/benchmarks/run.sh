#!/bin/sh
# Runs one recorded benchmark and prints its record: date, machine, the command and its whole output.
# Usage (from the repository's root, as root: the lab binds port 22 of 127.0.x.y):
#   docs/benchmarks/run.sh zero-loss|zero-loss-500|steady-load|gate-lag|upload|rollout >docs/benchmarks/raw/NAME.txt
# The figures depend on the machine and on what else runs on it: record the load average with them.
set -eu
case ${1:-} in
zero-loss) cmd="go test ./fixtures/lab/load -run ^\$ -bench ZeroLoss -benchtime 1x -timeout 30m -v" ;;
zero-loss-500) cmd="env CIMDEPLOY_BENCH_RATE=500 go test ./fixtures/lab/load -run ^\$ -bench ZeroLoss -benchtime 1x -timeout 30m -v" ;;
steady-load) cmd="go test ./fixtures/lab/load -run ^\$ -bench SteadyLoad -benchtime 1x -v" ;;
gate-lag) cmd="go test ./fixtures/lab/load -run ^\$ -bench GateLag -benchtime 5x -timeout 30m -v" ;;
upload) cmd="go test ./remote -run ^\$ -bench Upload -benchtime 1x -timeout 30m" ;;
rollout) cmd="go test ./rollout -run ^\$ -bench LabRollingDeploy -benchtime 4x -timeout 30m" ;;
*) echo "usage: $0 zero-loss|zero-loss-500|steady-load|gate-lag|upload|rollout" >&2; exit 2 ;;
esac
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "go: $(go version | cut -d' ' -f3-)"
echo "nix: $(nix --version 2>/dev/null || echo none)"
echo "nats-server: $(nats-server --version 2>/dev/null || echo none)"
echo "openssh: $(ssh -V 2>&1)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: $cmd"
echo
# Info-level log lines of the lab and the rollout are left out; warnings and the benchmarks' own lines stay.
$cmd 2>&1 | grep -v 'level=INFO' || true
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
