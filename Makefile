# Conflux build and test entry points. `make test` installs what the tests need and runs them all.
CARGO ?= cargo
JOBS ?= 2
PYTHON ?= python3
VENV ?= .venv
NODE_DIR := compat/node
# The compat suites run the debug binary `cargo test` already built (dependencies are
# optimised in the dev profile), which saves CI a whole release build.
CONFLUX_BIN ?= $(CURDIR)/target/debug/conflux
# Bounds on the compatibility suites as a whole; each test also bounds itself.
COMPAT_TIMEOUT_S ?= 1200
PYTEST_TEST_TIMEOUT_S ?= 120

.PHONY: test test-rust test-compat test-python test-node compat-deps lint build
test: lint test-rust test-compat fuzz-smoke

build:
	$(CARGO) build --release -j$(JOBS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets -- -D warnings

test-rust:
	$(CARGO) test -j$(JOBS) --workspace

# Real clients against the binary, started on 127.0.0.1 ephemeral ports.
test-compat: test-python test-node

test-python: compat-deps build-conflux
	CONFLUX_BIN=$(CONFLUX_BIN) timeout $(COMPAT_TIMEOUT_S) $(VENV)/bin/pytest compat/python \
		--timeout=$(PYTEST_TEST_TIMEOUT_S)

test-node: compat-deps build-conflux
	cd $(NODE_DIR) && CONFLUX_BIN=$(CONFLUX_BIN) timeout $(COMPAT_TIMEOUT_S) node --test

.PHONY: build-conflux
build-conflux:
	$(CARGO) build -j$(JOBS) -p conflux

compat-deps: $(VENV)/.installed $(NODE_DIR)/node_modules/.installed kcat promtool

# Stamp files make re-runs instant; they are newer than the pins they were installed from.
$(VENV)/.installed: compat/requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r compat/requirements.txt
	touch $@

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: kcat
kcat:
	@command -v kcat >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing kcat"; \
			apt-get update -qq >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; \
		else \
			echo "kcat missing and not root: install it (apt-get install kcat)" >&2; exit 1; \
		fi; \
	}

# Prometheus' promtool checks the /metrics exposition (compat/python/test_ops_metrics.py).
.PHONY: promtool
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing promtool (Debian package prometheus)"; \
			apt-get update -qq >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		else \
			echo "promtool missing and not root: install it (apt-get install prometheus)" >&2; exit 1; \
		fi; \
	}

# Short libFuzzer run of every fuzz/ target (FUZZ_SECONDS each, default 20); see the script.
.PHONY: fuzz-smoke
fuzz-smoke:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-10} scripts/fuzz-smoke.sh
