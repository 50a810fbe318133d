#!/usr/bin/env bash
# SQS benchmark: starts a release `conflux` on ephemeral ports with a temporary data dir,
# runs crates/conflux-aws/examples/sqs_bench.rs against it, prints the server's CPU time,
# stops it by PID.
# Usage: bench/sqs.sh [clients] [seconds]   (clients producers + clients consumers; default 128)
# CONFLUX=<path> runs another conflux binary (e.g. an older build, for before/after figures).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -j2 --release -p conflux --bin conflux
cargo build -j2 --release -p conflux-aws --example sqs_bench
data=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
"${CONFLUX:-target/release/conflux}" serve --data-dir "$data" --aws-listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0 \
  --amqp-listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --disable nats --disable registry \
  >"$data/conflux.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -qs '"aws"' "$data/ports.json" && break; sleep 0.1; done
aws=$(python3 -c "import json,sys; print(json.load(open('$data/ports.json'))['aws'])")
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(ticks)
target/release/examples/sqs_bench "$aws" "${1:-128}" "${2:-10}"
after=$(ticks)
hz=$(getconf CLK_TCK)
echo "server CPU (whole run, incl. the long-poll samples): $(( (after - before) / hz )).$(( (after - before) % hz * 100 / hz )) s"
