"""Where the Redis Streams tests run: a Redis server or a node of a Redis Cluster."""

from __future__ import annotations

from dataclasses import dataclass

from farm.streams import Client, connect


@dataclass(frozen=True)
class Target:
    """A Redis the bus runs on: a server, or (``cluster``) a node of a Redis Cluster."""

    url: str
    cluster: bool = False

    def client(self) -> Client:
        return connect(self.url, cluster=self.cluster)
