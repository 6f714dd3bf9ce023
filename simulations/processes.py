"""Flower processes on this machine that the runner and the tests start, and stop by PID.

:class:`FlowerProcesses` starts ``flower-superlink`` (and, for loopback deployment,
``flower-supernode``) on 127.0.0.1 with free ports, keeps a private ``FLWR_HOME``
whose ``config.toml`` names the SuperLink connection, runs ``flwr`` commands against
it, and on exit stops everything it started: each started process and all of its
descendants (found through ``/proc``, including those in the session it created),
first with SIGTERM and then, after a grace period, with SIGKILL. With :class:`TlsFiles`
the SuperLink serves HTTPS and can require SuperNode authentication; without, it runs
with ``--insecure``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nas.errors import ApfpError

logger = logging.getLogger(__name__)

CONNECTION = "apfp-local"
HOST = "127.0.0.1"


class FlowerProcessError(ApfpError, RuntimeError):
    """A Flower process failed to start, exited early, or a run did not finish."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS SuperLink: the CA certificate, and the server's certificate and private key."""

    ca_certificate: Path
    server_certificate: Path
    server_key: Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def executable(name: str) -> str:
    """Return the path of a console script of this Python environment (``flwr``, ``flower-superlink``)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FlowerProcessError(f"{name!r} not found; install flwr[simulation] in this environment")
    return found


def _stat(pid: int) -> tuple[int, int] | None:
    """Return ``(parent pid, session id)`` of ``pid`` from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[3])


def descendants(root: int) -> set[int]:
    """Return the PIDs of the live descendants of ``root`` and of every process in their sessions.

    Flower's SuperExec starts its own session, and Ray's processes join it. Taking
    whole sessions also finds a process whose parent has already exited. The
    caller's own session is never included.
    """
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            table[int(entry)] = info
    found, frontier = set(), {root}
    while frontier:
        children = {pid for pid, (ppid, _) in table.items() if ppid in frontier and pid not in found}
        found |= children
        frontier = children
    sessions = {table[pid][1] for pid in found} | {root}
    sessions.discard(os.getsid(0))
    found |= {pid for pid, (_, sid) in table.items() if sid in sessions}
    found.discard(root)
    found.discard(os.getpid())
    return found


def stop_tree(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop ``process`` and all its descendants: SIGTERM, wait up to ``grace_s``, then SIGKILL."""
    pids = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace_s)
    pids |= descendants(process.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in pids if _stat(pid) is not None]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline and any(_stat(pid) is not None for pid in alive):
            time.sleep(0.1)


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Return this process's environment with a private FLWR_HOME and telemetry and installs off.

    The folder of this Python's console scripts goes first on PATH, because the SuperLink
    starts ``flower-superexec`` by name and a test runner may be started without
    activating the virtual environment.
    """
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts] + [p for p in env.get("PATH", "").split(os.pathsep) if p != scripts])
    env.update(
        FLWR_HOME=str(flwr_home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
    )
    return env


class FlowerProcesses:
    """A SuperLink on a free local port, optional SuperNodes, and ``flwr`` commands aimed at them.

    Use as a context manager; everything started is stopped on exit, also after an
    error or KeyboardInterrupt. ``simulation`` starts the SuperLink with its
    simulation runtime (no SuperNodes needed). Process output goes to files in
    ``log_dir``.
    """

    def __init__(self, log_dir: Path, *, simulation: bool, tls: TlsFiles | None = None,
                 supernode_auth: bool = False) -> None:
        if supernode_auth and tls is None:
            raise FlowerProcessError("SuperNode authentication needs TLS; pass tls=TlsFiles(...)")
        self.log_dir = Path(log_dir)
        self.simulation = simulation
        self.tls, self.supernode_auth = tls, supernode_auth
        self.port = free_port()
        self.flwr_home = Path(tempfile.mkdtemp(prefix="apfp-flwr-home-"))
        self.env = flower_env(self.flwr_home)
        self.processes: list[subprocess.Popen] = []
        self._files: list[Any] = []

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def __enter__(self) -> "FlowerProcesses":
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            security = "insecure = true" if self.tls is None else (
                f'root-certificates = "{Path(self.tls.ca_certificate).resolve()}"')
            (self.flwr_home / "config.toml").write_text(
                f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                f'address = "{self.address}"\n{security}\n', encoding="utf-8")
            command = [executable("flower-superlink"), *self._superlink_security(), "--host", HOST,
                       "--port", str(self.port), "--disable-runtime-dependency-installation"]
            if self.simulation:
                command.append("--simulation")
            self.superlink = self.spawn(command, "superlink.log")
            self._wait_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def spawn(self, command: Sequence[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``command`` in a new session with output to ``log_dir/log_name``; it is stopped on exit."""
        handle = open(self.log_dir / log_name, "ab")
        self._files.append(handle)
        process = subprocess.Popen(list(command), stdout=handle, stderr=subprocess.STDOUT, env=env or self.env,
                                   cwd=self.log_dir, start_new_session=True)
        self.processes.append(process)
        logger.info("started %s (pid %d)", Path(command[0]).name, process.pid)
        return process

    def _superlink_security(self) -> list[str]:
        if self.tls is None:
            return ["--insecure"]
        files = ["--ssl-ca-certfile", str(self.tls.ca_certificate), "--ssl-certfile",
                 str(self.tls.server_certificate), "--ssl-keyfile", str(self.tls.server_key)]
        return files + (["--enable-supernode-auth"] if self.supernode_auth else [])

    def stop(self, process: subprocess.Popen) -> None:
        """Stop one process started here (and its descendants) before the others."""
        stop_tree(process)
        if process in self.processes:
            self.processes.remove(process)

    def start_supernode(self, node_config: str, log_name: str, private_key: Path | None = None) -> subprocess.Popen:
        """Start a SuperNode with ``--node-config node_config`` connected to this SuperLink.

        It trusts the SuperLink's CA under TLS (insecure otherwise) and authenticates with
        ``private_key`` (an OpenSSH EC private key) when given. Each SuperNode gets its own
        FLWR_HOME (where it installs the app) under this one.
        """
        home = Path(tempfile.mkdtemp(prefix="supernode-", dir=self.flwr_home))
        security = ["--insecure"] if self.tls is None else ["--root-certificates", str(self.tls.ca_certificate)]
        if private_key is not None:
            security += ["--auth-supernode-private-key", str(private_key)]
        return self.spawn([executable("flower-supernode"), *security, "--superlink", self.address,
                           "--port", str(free_port()), "--node-config", node_config], log_name,
                          env=flower_env(home))

    def _wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.superlink.poll() is not None:
                raise FlowerProcessError(f"flower-superlink exited with code {self.superlink.returncode}; see "
                                         f"{self.log_dir / 'superlink.log'}")
            scheme, context = "http", None
            if self.tls is not None:
                scheme, context = "https", ssl.create_default_context(cafile=str(self.tls.ca_certificate))
            try:
                with urllib.request.urlopen(f"{scheme}://{self.address}/health", timeout=1.0,
                                            context=context) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise FlowerProcessError(f"flower-superlink did not become ready on {self.address} within {timeout_s:g} s")

    def flwr(self, *args: str, log_name: str | None = None, timeout_s: float | None = 120.0) -> str:
        """Run ``flwr *args`` against this SuperLink; return its output (also appended to ``log_name``)."""
        command = [executable("flwr"), *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
                                   cwd=self.log_dir, start_new_session=True)
        self.processes.append(process)
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_tree(process)
            raise FlowerProcessError(f"`flwr {' '.join(args[:2])}` did not finish within {timeout_s:g} s") from None
        text = output.decode("utf-8", errors="replace")
        if log_name:
            with open(self.log_dir / log_name, "a", encoding="utf-8") as handle:
                handle.write(text)
        if process.returncode != 0:
            raise FlowerProcessError(f"`flwr {' '.join(args[:2])}` failed ({process.returncode}): {text[-2000:]}")
        return text

    def run_status(self, run_id: int) -> str:
        """Return the status of a run, for example ``finished:completed`` or ``finished:failed``."""
        text = self.flwr("list", CONNECTION, "--run-id", str(run_id), "--format", "json")
        data = json.loads(text[text.index("{"):])
        runs = data.get("runs", [])
        return str(runs[0].get("status", "unknown")) if runs else "unknown"

    def watch(self, processes: Sequence[subprocess.Popen], timeout_s: float | None) -> None:
        """Wait until every process in ``processes`` exits; raise if the SuperLink dies first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while any(p.poll() is None for p in processes):
            if self.superlink.poll() is not None:
                raise FlowerProcessError(f"flower-superlink exited with code {self.superlink.returncode}; see "
                                         f"{self.log_dir / 'superlink.log'}")
            if deadline is not None and time.monotonic() > deadline:
                raise FlowerProcessError(f"the run did not finish within {timeout_s:g} s")
            time.sleep(0.5)

    def close(self) -> None:
        """Stop every process started here (newest first), close the logs and delete FLWR_HOME."""
        for process in reversed(self.processes):
            stop_tree(process)
        self.processes.clear()
        for handle in self._files:
            handle.close()
        self._files.clear()
        shutil.rmtree(self.flwr_home, ignore_errors=True)
