"""Run the real service processes (uvicorn API, consumer) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from assessment_refresh.local_servers import free_port
from shared.settings import Settings


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def _spawn(name: str, command: str, settings: Settings, log_dir: Path, env: dict[str, str] | None) -> ServiceProcess:
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **settings.to_env(), **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "assessment_refresh.cli", command],
        env=full_env,
        stdout=open(log_path, "ab"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
    )
    return ServiceProcess(name, process, log_path)


def start_consumer(settings: Settings, log_dir: Path, name: str = "consumer", env: dict[str, str] | None = None) -> ServiceProcess:
    return _spawn(name, "consumer", settings, log_dir, env)


def start_api(settings: Settings, log_dir: Path, name: str = "api", wait_ready: bool = True,
              env: dict[str, str] | None = None) -> ServiceProcess:
    port = free_port()
    settings = Settings(**{**settings.__dict__, "api_host": "127.0.0.1", "api_port": port})
    api = _spawn(name, "api", settings, log_dir, env)
    api.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    ready_path = "/readyz" if wait_ready else "/healthz"
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{api.log()}")
        try:
            if httpx.get(api.url + ready_path, timeout=1).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    api.stop()
    raise TimeoutError(f"{name} not ready after 30 s:\n{api.log()}")
