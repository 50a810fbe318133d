#!/usr/bin/env bash
# SQS benchmark: starts a release `conflux` on ephemeral ports with a temporary data dir,
# runs crates/conflux-aws/examples/sqs_bench.rs against it, stops it by PID.
# Usage: bench/sqs.sh [clients] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -j2 --release -p conflux -p conflux-aws --example sqs_bench
data=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
target/release/conflux serve --data-dir "$data" --aws-listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0 \
  --amqp-listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --disable nats --disable registry \
  >"$data/conflux.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$data/ports.json" ] && break; sleep 0.1; done
aws=$(python3 -c "import json,sys; print(json.load(open('$data/ports.json'))['aws'])")
target/release/examples/sqs_bench "$aws" "${1:-32}" "${2:-10}"
