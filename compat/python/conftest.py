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

from conflux_server import ConfluxServer, conflux_bin as build_conflux_bin

_BIN: pathlib.Path | None = None


def pytest_sessionstart(session):
    # Built here, outside any test's timeout; a cold release build takes minutes.
    global _BIN
    _BIN = build_conflux_bin()


@pytest.fixture(scope="session")
def conflux_bin() -> pathlib.Path:
    assert _BIN is not None and _BIN.exists(), f"conflux binary missing: {_BIN}"
    return _BIN


def _serve(binary, tmp_dir: pathlib.Path, request, **kwargs):
    server = ConfluxServer(binary, tmp_dir / "data", tmp_dir / "conflux.log", **kwargs)
    try:
        yield server.start()
    finally:
        try:
            server.stop()
        finally:
            server.kill9()
            if getattr(request.node, "rep_failed", False):
                print(f"--- conflux log ({server.log_path}) ---\n{server.log_tail(80)}")


@pytest.fixture(scope="session")
def conflux(conflux_bin, tmp_path_factory, request):
    yield from _serve(conflux_bin, tmp_path_factory.mktemp("conflux"), request)


@pytest.fixture
def fresh_conflux(conflux_bin, tmp_path, request):
    yield from _serve(conflux_bin, tmp_path, request)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        item.rep_failed = True
    return report
