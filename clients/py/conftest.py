"""Starts the real Gatehouse binary (GATEHOUSE_BIN) on the shop for the suite:
SQLite in a temporary folder, or PostgreSQL when GATEHOUSE_DATABASE_URL names one."""

import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from supabase import ClientOptions, create_client

HERE = Path(__file__).parent


class Gatehouse:
    def __init__(self, config: Path):
        self.data_dir = Path(tempfile.mkdtemp(prefix="gatehouse-py-"))
        binary = os.environ.get("GATEHOUSE_BIN", "target/debug/gatehouse")
        env = {"PATH": os.environ["PATH"]}
        if os.environ.get("GATEHOUSE_DATABASE_URL"):
            env["GATEHOUSE_DATABASE_URL"] = os.environ["GATEHOUSE_DATABASE_URL"]
        self.process = subprocess.Popen(
            [binary, "--config", str(config), "--data-dir", str(self.data_dir),
             "serve", "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, text=True,
        )
        self.url = self._wait_for_listening(timeout=20)
        self.publishable_key = (self.data_dir / "publishable.key").read_text().strip()
        self.secret_key = (self.data_dir / "secret.key").read_text().strip()

    def _wait_for_listening(self, timeout: float) -> str:
        found: list[str] = []
        said: list[str] = []
        ready = threading.Event()

        def read():
            # Keeps draining stderr after start so the server never blocks on it.
            for line in self.process.stderr:
                said.append(line.rstrip())
                match = re.search(r"Listening on:\s+(\S+)", line)
                if match and not found:
                    found.append(f"http://{match.group(1)}")
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(timeout)
        if not found:
            self.stop()
            raise RuntimeError("gatehouse did not start:\n" + "\n".join(said))
        return found[0]

    def client(self, key: str | None = None):
        options = ClientOptions(auto_refresh_token=False, persist_session=False)
        return create_client(self.url, key or self.publishable_key, options)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def gatehouse():
    server = Gatehouse(HERE / "shop.toml")
    yield server
    server.stop()
