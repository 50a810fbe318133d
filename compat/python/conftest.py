"""pytest fixtures for the compatibility suites: a real Conflux node on 127.0.0.1.

- `conflux`: one node shared by the whole session (tests must use unique topic/queue names).
- `fresh_conflux`: a node of the test's own, for tests that restart, kill or reconfigure it.
- `conflux_bin`: path of the binary, for tests that run it themselves.

Each server is stopped by PID when its scope ends, whatever the outcome. Set CONFLUX_BIN to
test a prebuilt binary; otherwise a release build of this checkout is made once.
"""

from __future__ import annotations

import pathlib

import pytest

from conflux_server import conflux_bin as build_conflux_bin, serving

_BIN: pathlib.Path | None = None


def pytest_sessionstart(session):
    # Built here, outside any test's timeout; a cold release build takes minutes.
    global _BIN
    _BIN = build_conflux_bin()


@pytest.fixture(scope="session")
def conflux_bin() -> pathlib.Path:
    assert _BIN is not None and _BIN.exists(), f"conflux binary missing: {_BIN}"
    return _BIN


@pytest.fixture(scope="session")
def conflux(conflux_bin, tmp_path_factory, request):
    yield from serving(conflux_bin, tmp_path_factory.mktemp("conflux"), request)


@pytest.fixture
def fresh_conflux(conflux_bin, tmp_path, request):
    yield from serving(conflux_bin, tmp_path, request)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        item.rep_failed = True
    return report
