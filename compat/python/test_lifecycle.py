"""Black-box tests of `conflux serve`: start-up, health endpoints, config errors, shutdown."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
import requests

from conflux_server import ConfluxServer, clean_env

RUN_TIMEOUT_S = 30


def run_serve(binary, args, env=None):
    """Runs `conflux serve ARGS` expecting it to fail fast (bad config); returns the result."""
    return subprocess.run(
        [str(binary), "serve", *args],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def test_health_live_answers_200(conflux):
    response = requests.get(f"{conflux.http_url}/health/live", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"] == "application/json"


def test_health_ready_answers_200_when_started(conflux):
    response = requests.get(f"{conflux.http_url}/health/ready", timeout=5)
    assert response.status_code == 200


def test_health_over_raw_tcp(conflux):
    host, port = conflux.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    assert data.endswith(b'{"status":"ok"}'), data


def test_unknown_path_is_404(conflux):
    assert requests.get(f"{conflux.http_url}/nope", timeout=5).status_code == 404


def test_startup_logs_each_bound_listener(conflux):
    lines = [line for line in conflux.log_text().splitlines() if "listening" in line]
    assert any(conflux.http in line and "http" in line for line in lines), lines


def test_unknown_config_key_is_rejected(conflux_bin, tmp_path):
    config = tmp_path / "conflux.toml"
    config.write_text('[kafka]\nlisten_adress = "127.0.0.1:0"\n')
    result = run_serve(conflux_bin, ["--config", str(config), "--data-dir", str(tmp_path)])
    assert result.returncode == 2, result.stderr
    assert "listen_adress" in result.stderr


def test_unknown_section_is_rejected(conflux_bin, tmp_path):
    config = tmp_path / "conflux.toml"
    config.write_text("[kafak]\nenabled = false\n")
    result = run_serve(conflux_bin, ["--config", str(config), "--data-dir", str(tmp_path)])
    assert result.returncode == 2
    assert "kafak" in result.stderr


def test_unknown_env_var_is_rejected(conflux_bin, tmp_path):
    result = run_serve(
        conflux_bin, ["--data-dir", str(tmp_path)], env={"CONFLUX_KAFKA_LISTN": "127.0.0.1:0"}
    )
    assert result.returncode == 2
    assert "CONFLUX_KAFKA_LISTN" in result.stderr


def test_bad_env_value_names_key_and_value(conflux_bin, tmp_path):
    result = run_serve(
        conflux_bin, ["--data-dir", str(tmp_path)], env={"CONFLUX_KAFKA_ENABLED": "perhaps"}
    )
    assert result.returncode == 2
    assert "CONFLUX_KAFKA_ENABLED" in result.stderr
    assert "kafka.enabled" in result.stderr
    assert "perhaps" in result.stderr


def test_invalid_value_is_rejected(conflux_bin, tmp_path):
    config = tmp_path / "conflux.toml"
    config.write_text("[kafka]\nnum_partitions = 0\n")
    result = run_serve(conflux_bin, ["--config", str(config), "--data-dir", str(tmp_path)])
    assert result.returncode == 2
    assert "kafka.num_partitions" in result.stderr


def test_sigterm_exits_zero_within_bound(fresh_conflux):
    started = time.monotonic()
    assert fresh_conflux.stop(timeout_s=12) == 0
    assert time.monotonic() - started < 12
    assert not (fresh_conflux.data_dir / "ports.json").exists()
    assert "stopped" in fresh_conflux.log_text()


def test_restart_keeps_data_dir_and_ports(fresh_conflux):
    before = dict(fresh_conflux.addrs)
    fresh_conflux.restart()
    assert fresh_conflux.addrs == before
    response = requests.get(f"{fresh_conflux.http_url}/health/live", timeout=5)
    assert response.status_code == 200


def test_kill9_then_start(fresh_conflux):
    fresh_conflux.kill9()
    # A SIGKILLed node leaves its ports.json behind; start-up must replace it.
    assert (fresh_conflux.data_dir / "ports.json").exists()
    fresh_conflux.start()
    assert requests.get(f"{fresh_conflux.http_url}/health/live", timeout=5).status_code == 200


def test_port_in_use_fails_naming_the_listener(conflux, conflux_bin, tmp_path):
    result = run_serve(
        conflux_bin,
        ["--data-dir", str(tmp_path), "--http-listen", conflux.http, "--disable",
         "kafka,amqp,nats,aws,registry"],
    )
    assert result.returncode == 1
    assert "http.listen" in result.stderr


def test_json_log_format(conflux_bin, tmp_path):
    server = ConfluxServer(
        conflux_bin, tmp_path / "data", tmp_path / "conflux.log", args=["--log-format", "json"]
    )
    try:
        server.start()
    finally:
        assert server.stop() == 0
    lines = [line for line in server.log_text().splitlines() if not line.startswith("===")]
    events = [json.loads(line) for line in lines]
    listening = [e for e in events if e["fields"].get("message") == "listening"]
    assert any(e["fields"]["addr"] == server.http for e in listening), events


@pytest.mark.parametrize("variable", ["CONFLUX_LOG_LEVEL", "RUST_LOG"])
def test_log_level_from_env(conflux_bin, tmp_path, variable):
    # `warn` hides the info-level lines (`listening`, `ready`).
    server = ConfluxServer(
        conflux_bin, tmp_path / "data", tmp_path / "conflux.log", env={variable: "warn"}
    )
    try:
        server.start()
    finally:
        assert server.stop() == 0
    assert " INFO " not in server.log_text()


def test_client_address_variables_are_not_config_errors(conflux, conflux_bin, tmp_path):
    # Users export CONFLUX_KAFKA etc. for the example scripts in the shell they start from.
    env = conflux.client_env()
    assert env["CONFLUX_HTTP"] == conflux.http_url
    server = ConfluxServer(conflux_bin, tmp_path / "data", tmp_path / "conflux.log", env=env)
    try:
        server.start()
    finally:
        assert server.stop() == 0
