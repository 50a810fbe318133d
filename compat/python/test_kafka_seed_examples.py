"""The shared Kafka seed examples, run verbatim as subprocesses against a test server."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from conflux_server import REPO, clean_env

SHARED = REPO.parent / "shared"
SEED_DIR = SHARED / "seed-examples"
EXAMPLE_TIMEOUT_S = 90


def seed_examples() -> list[pathlib.Path]:
    return sorted(SEED_DIR.glob("kafka_*.py"))


def test_seed_examples_are_present():
    assert SEED_DIR.is_dir(), (
        f"seed examples not found at {SEED_DIR}: the suite expects the shared directory "
        "next to the repository root (<repo>/../shared/seed-examples)"
    )
    assert seed_examples(), f"no kafka_*.py seed examples in {SEED_DIR}"


@pytest.mark.parametrize(
    "example", seed_examples() or [SEED_DIR / "kafka_*.py"], ids=lambda p: p.stem
)
@pytest.mark.timeout(EXAMPLE_TIMEOUT_S + 10)
def test_seed_example_runs_verbatim(conflux, example):
    assert example.is_file(), f"seed example missing: {example} (is {SHARED} present?)"
    result = subprocess.run(
        [sys.executable, str(example)],
        env=clean_env({"CONFLUX_KAFKA": conflux.kafka}),
        cwd=example.parent,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
    )
    detail = f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, detail
    assert f"OK {example.stem}" in result.stdout.splitlines(), detail
