#!/usr/bin/env bash
# AMQP benchmark, Conflux side by side with RabbitMQ: runs the load generator
# crates/conflux-amqp/examples/amqp_bench.rs (one publisher, one consumer) against a release
# `conflux` started on ephemeral 127.0.0.1 ports with a temporary data dir, and, when
# RabbitMQ is installed (Debian's rabbitmq-server), against a RabbitMQ node started in the
# foreground on 127.0.0.1:${RABBITMQ_PORT:-15679} with its own epmd (port 14369) and a
# temporary data dir. Every process started here is stopped by PID on exit.
#
# Usage: bench/amqp.sh [runs] [messages] [size] [window]
#   runs alternate Conflux and RabbitMQ, each mode (persistent+confirms, transient) per run.
# Environment: NO_RABBITMQ=1 skips RabbitMQ; BASELINE_BIN=path also runs that conflux binary
# (e.g. a build of an older commit) in the same rotation, for before/after figures taken under
# the same load; PERF=1 records `perf record -g` of conflux during the persistent runs into
# $BENCH_OUT/perf.data.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
messages=${2:-100000}
size=${3:-1024}
window=${4:-1000}
out=${BENCH_OUT:-$(mktemp -d)}
cargo build -j2 --release -p conflux
cargo build -j2 --release -p conflux-amqp --example amqp_bench
bench=target/release/examples/amqp_bench

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# start_conflux BINARY NAME: starts a node; sets $amqp_addr and $node_pid.
start_conflux() {
  local data="$out/$2"
  mkdir -p "$data"
  env -u RUST_LOG "$1" serve --data-dir "$data" --amqp-listen 127.0.0.1:0 \
    --management-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --disable kafka,nats,aws,registry --log-level warn >"$out/$2.log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  for _ in $(seq 100); do [ -s "$data/ports.json" ] && break; sleep 0.1; done
  amqp_addr=$(python3 -c "import json; print(json.load(open('$data/ports.json'))['amqp'])")
}
start_conflux target/release/conflux conflux
conflux=$amqp_addr
conflux_pid=$node_pid
baseline=""
if [ -n "${BASELINE_BIN:-}" ]; then
  start_conflux "$BASELINE_BIN" baseline
  baseline=$amqp_addr
  baseline_pid=$node_pid
fi

rabbit=""
if [ -z "${NO_RABBITMQ:-}" ] && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  r="$out/rabbitmq"
  mkdir -p "$r"
  echo "[]." >"$r/enabled_plugins"
  epmd -port 14369 >"$r/epmd.log" 2>&1 &
  pids+=("$!")
  sleep 0.5
  port=${RABBITMQ_PORT:-15679}
  env ERL_EPMD_PORT=14369 HOME="$r" RABBITMQ_NODENAME="bench$$@localhost" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$port" \
    RABBITMQ_DIST_PORT=$((port + 1)) RABBITMQ_MNESIA_BASE="$r/mnesia" \
    RABBITMQ_LOG_BASE="$r/log" RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$r/rabbitmq" RABBITMQ_ADVANCED_CONFIG_FILE="$r/advanced.config" \
    RABBITMQ_PLUGINS_EXPAND_DIR="$r/expand" \
    /usr/lib/rabbitmq/bin/rabbitmq-server >"$r/server.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 120); do
    grep -q "completed with" "$r/server.log" 2>/dev/null && break
    sleep 0.5
  done
  rabbit="127.0.0.1:$port"
  # The Erlang VM the start script runs (the script itself forwards SIGTERM to it).
  rabbit_pid=$(pgrep -P "${pids[-1]}" beam.smp | head -1)
fi

# CPU seconds (user + system) a process has used: compared per message, this stays
# meaningful when other work on a shared machine slows the wall clock down.
cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
# run_one LABEL ADDR PID MODE: one amqp_bench run with the server's CPU per message.
run_one() {
  local before after line
  before=$(cpu_s "$3")
  line=$($bench "$2" "$4" "$messages" "$size" "$window")
  after=$(cpu_s "$3")
  echo "$1 $line server_cpu=$(awk -v a="$after" -v b="$before" -v n="$messages" \
    'BEGIN { printf "%.1f us/msg", (a - b) * 1e6 / n }')"
}

echo "machine: $(nproc) cores, $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "conflux=$conflux baseline=${baseline:-none} rabbitmq=${rabbit:-none}"
for run in $(seq "$runs"); do
  for mode in persistent transient; do
    if [ -n "$baseline" ]; then
      run_one "run $run baseline" "$baseline" "$baseline_pid" "$mode"
    fi
    if [ -n "${PERF:-}" ] && [ "$mode" = persistent ]; then
      perf record -g -p "$conflux_pid" -o "$out/perf.data" >/dev/null 2>&1 &
      perf_pid=$!
    fi
    run_one "run $run conflux " "$conflux" "$conflux_pid" "$mode"
    if [ -n "${perf_pid:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; perf_pid=""; fi
    if [ -n "$rabbit" ]; then
      run_one "run $run rabbitmq" "$rabbit" "$rabbit_pid" "$mode"
    fi
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); output in $out"
