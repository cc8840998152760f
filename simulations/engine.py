"""Run the Flower app on Flower's simulation engine, behind a SuperLink we own.

``flwr run`` against the built-in ``:local:`` connection leaves a detached
SuperLink behind on fixed ports. Here each simulation starts its own
``flower-superlink --simulation`` on free loopback ports with a private
``FLWR_HOME``, and stops it (and its children) when done.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

__all__ = ["run_simulation", "free_ports", "flwr_env", "wait_healthy", "stop", "last_run_status",
           "APP_DIR"]

APP_DIR = Path(__file__).resolve().parent.parent  # the folder with pyproject.toml
_BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def flwr_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every flwr process: our venv's tools, private home, no runtime
    installs, own Ray dir."""
    ray_dir = Path(tempfile.gettempdir()) / f"ray-{os.getpid()}"  # Ray wants short paths
    ray_dir.mkdir(exist_ok=True)
    # Flower starts helpers (flower-superexec, flwr-serverapp...) by name: they must be
    # found next to this interpreter even when its virtual environment is not activated.
    path = f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return os.environ | {"PATH": path, "FLWR_HOME": str(flwr_home), "RAY_TMPDIR": str(ray_dir),
                         "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                         "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 60.0, *,
                 scheme: str = "http", ca: str | os.PathLike | None = None) -> None:
    """Wait until a SuperLink answers ``/health`` with 200 (or fail if it died)."""
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/health", timeout=1,
                                        context=context) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"SuperLink on port {port} not healthy after {timeout:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """End a process we started and everything it spawned.

    Some Flower children (e.g. ``flwr-serverapp``) start sessions of their own,
    so the descendants are collected by parentage before anything is signalled.
    """
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    # The group outlives its leader: children of a process that already exited are still in it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers that ignored SIGTERM


@contextlib.contextmanager
def _exit_on_sigterm():
    """Turn SIGTERM into ``SystemExit`` while a run is in flight.

    Python's default SIGTERM ends the process without running ``finally`` blocks, which
    left the SuperLink (its own session), its ServerApp and Ray running.
    """
    if threading.current_thread() is not threading.main_thread():  # signals need the main thread
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_simulation(run_config: dict, *, num_supernodes: int, cpus_per_client: float = 1.0,
                   cache_dir: str | os.PathLike | None = None,
                   app_dir: str | os.PathLike = APP_DIR, workdir: str | os.PathLike | None = None,
                   stream=None, timeout: float = 3600) -> int:
    """Run the app once on the simulation engine; returns ``flwr run``'s exit code.

    ``run_config`` overrides ``[tool.flwr.app.config]``; ``cache_dir`` is where
    the simulated nodes cache their prepared data; logs go to ``stream``
    (default: this process's stdout).
    """
    with _exit_on_sigterm(), tempfile.TemporaryDirectory(prefix="flwr-home-", dir=workdir) as home:
        home = Path(home)
        (http_port,) = free_ports(1)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "sim"\n\n[superlink.sim]\n'
            f'address = "127.0.0.1:{http_port}"\ninsecure = true\n')
        cpus = int(cpus_per_client) if float(cpus_per_client).is_integer() else cpus_per_client
        federation = f"num-supernodes={int(num_supernodes)} client-resources-num-cpus={cpus}"
        overrides = home / "run-config.toml"
        overrides.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in run_config.items()))
        env = flwr_env(home)
        if cache_dir is not None:
            env["DEID_CACHE_DIR"] = str(Path(cache_dir).resolve())
        superlink = subprocess.Popen(
            [str(_BIN / "flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
             "--port", str(http_port),
             "--database", str(home / "state.db")],
            env=env, stdout=subprocess.DEVNULL, stderr=(home / "superlink.log").open("wb"),
            start_new_session=True)
        try:
            wait_healthy(http_port, superlink)
            run = subprocess.run(
                [str(_BIN / "flwr"), "run", str(app_dir), "sim", "--stream",
                 "--run-config", str(overrides), "--federation-config", federation],
                env=env, stdout=stream or sys.stdout, stderr=subprocess.STDOUT, timeout=timeout)
            if run.returncode != 0:
                return run.returncode
            status = last_run_status("sim", env)
            if status != "finished:completed":  # `flwr run --stream` exits 0 whatever the run did
                print(f"the run ended {status}; see the log above", file=stream or sys.stdout)
                return 1
            return 0
        finally:
            stop(superlink)


def last_run_status(superlink: str, env: dict[str, str]) -> str:
    """Status of the newest run on ``superlink`` (``flwr ls``), e.g. ``finished:failed``."""
    listed = subprocess.run([str(_BIN / "flwr"), "ls", superlink, "--format", "json"], env=env,
                            capture_output=True, text=True, timeout=60)
    try:
        runs = json.loads(listed.stdout)["runs"]
    except (ValueError, KeyError):
        return f"unknown ({listed.stdout.strip()[-200:] or listed.stderr.strip()[-200:]})"
    return max(runs, key=lambda r: int(r["run-id"]))["status"] if runs else "unknown (no runs)"


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
