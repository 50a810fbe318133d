# Conflux build and test entry points. `make test` installs what the tests need and runs them all.
CARGO ?= cargo
JOBS ?= 2

.PHONY: test test-rust lint build
test: lint test-rust

build:
	$(CARGO) build --release -j$(JOBS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets -- -D warnings

test-rust:
	$(CARGO) test -j$(JOBS) --workspace

# Short libFuzzer run of every fuzz/ target (FUZZ_SECONDS each, default 20); see the script.
.PHONY: fuzz-smoke
fuzz-smoke:
	scripts/fuzz-smoke.sh
