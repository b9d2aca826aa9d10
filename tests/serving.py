"""`mapper serve` for tests: a real uvicorn process on loopback over a fresh PostgreSQL database,
with two App Store apps (Basis, Plus) and the operator's password; its log kept for checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
MASTER = "serve-test-master-key-" + "m" * 32
ADMIN_PASSWORD = "operator-password-123"
APPS = {"basis": ("101", "appsecret-basis-" + "b" * 20), "plus": ("102", "appsecret-plus-" + "p" * 20)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen
    secrets: list[str] = field(default_factory=list)

    def app_urls(self, variant: str) -> tuple[str, str, str]:
        return tuple(f"{self.url}/ccv/{variant}/{step}" for step in ("handshake", "install", "uninstall"))

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def mapper(self, *args: str, ok: bool = True, extra: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], env={**self.env, **(extra or {})},
                              capture_output=True, text=True, timeout=300)
        if ok:
            assert proc.returncode == 0, f"mapper {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc


def hosted_env(tmp: Path, database: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCVSHOP_", "MAPPER_", "ASPERION_"))}
    env.update(MAPPER_DATABASE=database, MAPPER_MASTER_KEY=MASTER, MAPPER_OUTBOX=str(tmp / "outboxes"),
               MAPPER_PUBLIC_URL=f"http://127.0.0.1:{port}", MAPPER_ADMIN_PASSWORD=ADMIN_PASSWORD,
               MAPPER_CCV_APP_ID_BASIS=APPS["basis"][0], MAPPER_CCV_APP_SECRET_BASIS=APPS["basis"][1],
               MAPPER_CCV_APP_ID_PLUS=APPS["plus"][0], MAPPER_CCV_APP_SECRET_PLUS=APPS["plus"][1],
               PYTHONDONTWRITEBYTECODE="1")
    return env


def start_serve(tmp: Path, database: str) -> Served:
    port = free_port()
    env = hosted_env(tmp, database, port)
    upgrade = subprocess.run([sys.executable, "-m", "engine.cli", "db", "upgrade"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert upgrade.returncode == 0, upgrade.stderr
    log_path = tmp / "serve.log"
    log = open(log_path, "w", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"mapper serve did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    return Served(url, env, log_path, proc, [MASTER, ADMIN_PASSWORD, APPS["basis"][1], APPS["plus"][1]])


def stop_serve(served: Served) -> None:
    served.proc.terminate()
    try:
        served.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        served.proc.kill()
