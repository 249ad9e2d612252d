"""A real ledgerd for the SDK's tests: a process on 127.0.0.1 with a fresh
data directory. The binary comes from $LEDGERD_BIN, else the workspace's
debug build ($CARGO_TARGET_DIR or ./target)."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
REPO = HERE.parent.parent.parent


def ledgerd_bin() -> str:
    if os.environ.get("LEDGERD_BIN"):
        return os.environ["LEDGERD_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return str(pathlib.Path(target) / "debug" / "ledgerd")


class Server:
    def __init__(self, tmp: pathlib.Path, config: str = "") -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.config = None
        if config:
            self.config = tmp / "ledgerd.toml"
            self.config.write_text(config)
        self.proc = None
        self.start("127.0.0.1:0")

    def start(self, listen: str) -> None:
        ready = self.tmp / "ready.json"
        if ready.exists():
            ready.unlink()
        args = [
            ledgerd_bin(),
            "--data-dir", str(self.data),
            "--listen", listen,
            "--metrics-listen", "127.0.0.1:0",
            "--otlp-http-listen", "127.0.0.1:0",
            "--ready-file", str(ready),
        ]
        if self.config:
            args += ["--config", str(self.config)]
        log = open(self.tmp / "ledgerd.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError((self.tmp / "ledgerd.log").read_text())
            if time.time() > deadline:
                raise RuntimeError("ledgerd not ready")
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        self.addr = info["grpc"]
        self.url = "http://" + self.addr
        self.key = info["logs"][0]["verifier_key"]

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def restart_same_port(self) -> None:
        self.start(self.addr)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.stop()
