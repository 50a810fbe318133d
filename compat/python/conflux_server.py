"""Runs a real `conflux serve` process for the compatibility tests.

The server listens on 127.0.0.1 only. The first start uses port 0 for every listener and
learns the real ports from `<data_dir>/ports.json`; later starts (restart, kill9 + start)
reuse those ports and the same data directory, as clients reconnecting expect.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
# The design guide's examples (acceptance checks), in the shared folder beside the checkout.
SEED_EXAMPLES = REPO.parent / "shared" / "seed-examples"
NODE_MODULES = REPO / "compat" / "node" / "node_modules"
# "management" is the RabbitMQ management HTTP API (bound with amqp; RabbitMQ's 15672).
PROTOCOLS = ("kafka", "amqp", "management", "nats", "aws", "registry", "http")
START_TIMEOUT_S = 30.0
# Above the server's default shutdown_timeout_ms (10 s), so a slow drain is seen as such.
STOP_TIMEOUT_S = 15.0


def conflux_bin() -> pathlib.Path:
    """The binary under test: $CONFLUX_BIN, else a release build of this checkout."""
    explicit = os.environ.get("CONFLUX_BIN")
    if explicit:
        return pathlib.Path(explicit)
    subprocess.run(
        ["cargo", "build", "--release", "-j2", "-p", "conflux"],
        cwd=REPO,
        check=True,
        timeout=1800,
    )
    return REPO / "target" / "release" / "conflux"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without CONFLUX_* or RUST_LOG, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CONFLUX_") and k != "RUST_LOG"
    }
    env.update(extra or {})
    return env


class ConfluxServer:
    """One broker node. Addresses are "127.0.0.1:PORT" strings, None when not listening."""

    def __init__(
        self,
        binary: pathlib.Path,
        data_dir: pathlib.Path,
        log_path: pathlib.Path,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.binary = pathlib.Path(binary)
        self.data_dir = pathlib.Path(data_dir)
        self.log_path = pathlib.Path(log_path)
        self.args = list(args or [])
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.addrs: dict[str, str] = {}

    # -- addresses -------------------------------------------------------------------------

    kafka = property(lambda self: self.addrs.get("kafka"))
    amqp = property(lambda self: self.addrs.get("amqp"))
    nats = property(lambda self: self.addrs.get("nats"))
    aws = property(lambda self: self.addrs.get("aws"))
    registry = property(lambda self: self.addrs.get("registry"))
    http = property(lambda self: self.addrs.get("http"))
    management = property(lambda self: self.addrs.get("management"))

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    def client_env(self) -> dict[str, str]:
        """Addresses in the variables the seed examples read (CONFLUX_KAFKA, ...)."""
        forms = {
            "kafka": "{}",
            "amqp": "amqp://{}",
            "nats": "nats://{}",
            "aws": "http://{}",
            "registry": "http://{}",
            "http": "http://{}",
        }
        return {
            f"CONFLUX_{protocol.upper()}": form.format(self.addrs[protocol])
            for protocol, form in forms.items()
            if protocol in self.addrs
        }

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- lifecycle -------------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [str(self.binary), "serve", "--data-dir", str(self.data_dir)]
        for protocol in PROTOCOLS:
            cmd += [f"--{protocol}-listen", self.addrs.get(protocol, "127.0.0.1:0")]
        return cmd + self.args

    def start(self) -> "ConfluxServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "ports.json").unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"=== start {' '.join(self.command())}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(self.env),
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        ports_file = self.data_dir / "ports.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"conflux exited with {self.proc.returncode} during start-up:\n{self.log_tail()}"
                )
            ports = self._read_ports(ports_file)
            if ports is not None and self._ready(ports):
                self.addrs.update(ports)
                return
            time.sleep(0.05)
        self.kill9()
        raise TimeoutError(f"conflux not ready after {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def _read_ports(self, ports_file: pathlib.Path) -> dict[str, str] | None:
        try:
            ports = json.loads(ports_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if ports.pop("pid", None) != self.proc.pid:
            return None
        return ports

    @staticmethod
    def _ready(ports: dict[str, str]) -> bool:
        if "http" not in ports:
            return True
        try:
            url = f"http://{ports['http']}/health/ready"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait at most `timeout_s`; returns the exit code (SIGKILLs on timeout)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise TimeoutError(
                f"conflux ignored SIGTERM for {timeout_s} s:\n{self.log_tail()}"
            ) from None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def restart(self) -> "ConfluxServer":
        """Graceful stop (must exit 0), then start on the same data dir and ports."""
        code = self.stop()
        if code != 0:
            raise RuntimeError(f"conflux exited with {code} on SIGTERM:\n{self.log_tail()}")
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def serving(binary, tmp_dir: pathlib.Path, request, **kwargs):
    """Generator for pytest fixtures: a node with its data and log under `tmp_dir` (extra
    `ConfluxServer` arguments such as `env=` or `args=` pass through), stopped afterwards —
    killed if it does not stop — and its log tail printed when the test failed."""
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


def run_seed_example(
    server: ConfluxServer, name: str, timeout_s: float = 120
) -> subprocess.CompletedProcess:
    """Runs shared/seed-examples/NAME unmodified against `server`; returns the result.

    Python examples run with this venv's interpreter, JavaScript ones with node and the
    pinned packages of compat/node. Callers assert `returncode == 0`.
    """
    script = SEED_EXAMPLES / name
    if script.suffix == ".py":
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["node", str(script)]
    env = clean_env({**server.client_env(), "NODE_PATH": str(NODE_MODULES)})
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=script.parent
    )
