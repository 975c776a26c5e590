"""A local Prefect server for schedules: ``prefect server start`` on the loopback interface.

Prefect's temporary server (what a flow starts when PREFECT_API_URL is unset) runs flows but
never fires schedules; served deployments need a real server. ``LocalServer`` starts one as a
child process (SQLite database under PREFECT_HOME, UI at ``ui_url``), waits until it answers,
and stops it, with everything it started, on exit:

    with LocalServer(port=4200) as server:
        os.environ["PREFECT_API_URL"] = server.api_url
        ...
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

OFFLINE_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
# The temporary server's first start creates its database; on 2 busy cores that can take longer
# than Prefect's default wait of 20 s.
EPHEMERAL_STARTUP_TIMEOUT_S = "120"


def offline_defaults(root: str | os.PathLike = ".") -> None:
    """Set Prefect's environment defaults of this project, before Prefect is imported: home in
    ROOT/.state/prefect (not the user's home; created), telemetry off, a patient wait for the
    temporary server. Values already set are kept."""
    os.environ.setdefault("PREFECT_HOME", str(Path(root).resolve() / ".state" / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # SQLite does not create folders
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


class LocalServer:
    """``prefect server start --host HOST --port PORT`` as a child process (its own process group).

    home: PREFECT_HOME of the server (database, logs); None keeps the environment's.
    env: extra environment variables for the server (e.g. the scheduler's loop interval).
    log: file that receives the server's output (None: discarded).
    watch_parent: run it under ``python -m wsss.lifetime`` so that it stops when this process
    ends in any way, SIGKILL included.
    """

    def __init__(self, port: int = 4200, host: str = "127.0.0.1", home: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, log: str | os.PathLike | None = None, timeout: float = 120.0,
                 watch_parent: bool = True):
        self.host, self.port, self.timeout, self.watch_parent = host, port, timeout, watch_parent
        self.env = {**os.environ, **OFFLINE_ENV, **(env or {})}
        self.env.pop("PREFECT_API_URL", None)
        if home is not None:
            self.env["PREFECT_HOME"] = str(home)
        self.log = Path(log) if log is not None else None
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def __enter__(self) -> "LocalServer":
        if self.healthy():
            raise RuntimeError(f"a server already answers at {self.ui_url}; stop it or choose another port")
        output = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        try:
            command = [sys.executable, "-m", "prefect", "server", "start",
                       "--host", self.host, "--port", str(self.port)]
            if self.watch_parent:  # ends with this process, even when it is killed with SIGKILL
                command = [sys.executable, "-m", "wsss.lifetime", str(os.getpid()), "--", *command]
            self.process = subprocess.Popen(
                command,
                env=self.env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if self.log is not None:
                output.close()
        deadline = time.monotonic() + self.timeout
        while not self.healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited with status {self.process.returncode}"
                                   + (f"; see {self.log}" if self.log else ""))
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"prefect server did not answer at {self.api_url} within {self.timeout:.0f} s")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        """Stop the server and its process group: SIGTERM, then SIGKILL after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever of the group is left
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ensure_api_server(log: str | os.PathLike | None = None) -> str:
    """The Prefect API for this process: PREFECT_API_URL (or Prefect's setting) when one is
    set, else a ``LocalServer`` on a free loopback port, whose URL is put in the environment
    (call this before Prefect is imported). Returns the API URL.

    Unlike Prefect's own temporary server it runs in its own session (Ctrl-C reaches the flow,
    which can still report to it). It stops at interpreter exit, registered before Prefect is
    imported: atexit runs the last registered first, so Prefect's exit handlers (which send the
    last logs and events) run before it stops. A killed process: the server watches its pid."""
    configured = os.environ.get("PREFECT_API_URL")
    if not configured and "prefect" in sys.modules:  # already imported: its settings may name a server
        from prefect.settings import PREFECT_API_URL

        configured = PREFECT_API_URL.value()
    if configured:
        return configured
    server = LocalServer(port=free_port(), log=log).__enter__()
    atexit.register(server.stop)
    os.environ["PREFECT_API_URL"] = server.api_url
    print(f"Prefect server for this run: {server.ui_url} (stops when the run ends)")
    return server.api_url
