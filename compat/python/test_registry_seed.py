"""The schema seed examples of the design guide, run verbatim against Conflux (only the
addresses change, through CONFLUX_KAFKA / CONFLUX_REGISTRY)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from conflux_server import REPO, clean_env

SEEDS = REPO.parent / "shared" / "seed-examples"
NODE_MODULES = REPO / "compat" / "node" / "node_modules"
RUN_TIMEOUT_S = 90


def run_seed(conflux, command: list[str], extra_env: dict[str, str] | None = None):
    env = clean_env(
        {
            "CONFLUX_KAFKA": conflux.kafka,
            "CONFLUX_REGISTRY": f"http://{conflux.registry}",
            **(extra_env or {}),
        }
    )
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=SEEDS
    )


def test_schema_reject_seed_example(conflux):
    result = run_seed(conflux, [sys.executable, str(SEEDS / "schema_reject.py")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "serializer rejected" in result.stdout
    assert "broker answered: KafkaError" in result.stdout, result.stdout
    assert "INVALID_RECORD" in result.stdout, result.stdout
    assert "OK schema_reject" in result.stdout


def test_schema_registry_js_seed_example(conflux):
    result = run_seed(
        conflux,
        ["node", str(SEEDS / "schema_registry.js")],
        {
            "NODE_PATH": str(NODE_MODULES),
            "NODE_OPTIONS": f"--require {NODE_MODULES.parent / 'ajv-formats-preload.cjs'}",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK schema_registry" in result.stdout
