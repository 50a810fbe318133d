#!/usr/bin/env bash
# Runs tests of librdkafka's own suite against a fresh Conflux node, one test at a time, each
# against its own node (temp data dir, ephemeral port on 127.0.0.1) and bounded in time.
#
# Needs a built librdkafka checkout (`./configure && make libs && make -C tests build`); the
# checkout stays outside this repository.
#
#   scripts/librdkafka-tests.sh /path/to/librdkafka 0092 0030 0103
#   RDK_GROUP_DELAY_MS=3000 RDK_PARTITIONS=4 scripts/librdkafka-tests.sh ~/librdkafka 0089
#   SUBTESTS=n_wildcard scripts/librdkafka-tests.sh ~/librdkafka 0113
#
# Env: CONFLUX_BIN (target/debug/conflux), RDK_TIMEOUT_S (120), RDK_GROUP_DELAY_MS (3000, as
# Kafka's group.initial.rebalance.delay.ms, which several tests expect), RDK_PARTITIONS (4),
# RDK_KAFKA_VERSION (3.9.0), RDK_LOG_DIR (/tmp/rdk-logs).
# Prints one "NNNN passed|failed|timed out" line per test and ends with "N passed, N failed".
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
rdk="$(cd "${1:?librdkafka checkout}" && pwd)"
shift
bin="${CONFLUX_BIN:-$root/target/debug/conflux}"
log_dir="${RDK_LOG_DIR:-/tmp/rdk-logs}"
mkdir -p "$log_dir"
passed=0
failed=0

run_one() {
    local test="$1" data pid port rc
    data="$(mktemp -d)"
    env -u RUST_LOG \
        CONFLUX_KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="${RDK_GROUP_DELAY_MS:-3000}" \
        CONFLUX_KAFKA_NUM_PARTITIONS="${RDK_PARTITIONS:-4}" \
        "$bin" serve --data-dir "$data" --kafka-listen 127.0.0.1:0 \
        --disable amqp --disable nats --disable aws --disable registry --disable http \
        >"$log_dir/$test.conflux.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        grep -q '"kafka"' "$data/ports.json" 2>/dev/null && break
        sleep 0.1
    done
    port="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['kafka'])" "$data/ports.json")"
    printf 'bootstrap.servers=%s\n' "$port" >"$rdk/tests/test.conf"
    (
        cd "$rdk/tests" &&
            LD_LIBRARY_PATH="../src:../src-cpp" TESTS="$test" \
                TEST_KAFKA_VERSION="${RDK_KAFKA_VERSION:-3.9.0}" \
                timeout "${RDK_TIMEOUT_S:-120}" ./test-runner -S -L
    ) >"$log_dir/$test.log" 2>&1
    rc=$?
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -rf "$data"
    case "$rc" in
        0) echo "$test passed"; passed=$((passed + 1)) ;;
        124) echo "$test timed out"; failed=$((failed + 1)) ;;
        *) echo "$test failed (see $log_dir/$test.log)"; failed=$((failed + 1)) ;;
    esac
}

for test in "$@"; do
    run_one "$test"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
