"""The loopback port block of one local mesh replica.

Replica ``K`` owns the 200 ports ``BASE_PORT + 200·K`` … ``+199`` on 127.0.0.1 (below Linux's
ephemeral range, 32768+, so no outgoing connection can take one). Inside the block:

| offset | what |
|---|---|
| 0 | ingress Envoy listener (the load's target) |
| 1 | ingress Envoy admin |
| 2 | Prometheus |
| 3 | the services host's control endpoint (reset between runs, crash counts) |
| 10 + 8·i + 0 | service ``i``'s application (plain, behind its sidecar) |
| 10 + 8·i + 1 | service ``i``'s sidecar inbound listener (what callers' clusters point at) |
| 10 + 8·i + 2 | service ``i``'s sidecar outbound HTTP listener (routes by Host) |
| 10 + 8·i + 3 | service ``i``'s sidecar admin |
| 10 + 8·i + 4 … 7 | service ``i``'s sidecar outbound TCP listeners, one per TCP destination |

``i`` is the service's index in ``envs.sockshop.SERVICE_NAMES``.
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.sockshop import SERVICE_NAMES

#: First port of replica 0's block.
BASE_PORT = 21_000
#: Ports per replica.
BLOCK_SIZE = 200
#: Replicas that fit below the ephemeral port range (32768).
MAX_REPLICAS = (32_768 - BASE_PORT) // BLOCK_SIZE
_SERVICE_OFFSET = 10
_PER_SERVICE = 8
_TCP_SLOTS = 4
HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReplicaPorts:
    """Port numbers of replica ``replica`` (see the module docstring)."""

    replica: int

    def __post_init__(self) -> None:
        if not 0 <= self.replica < MAX_REPLICAS:
            raise ValueError(f"replica must be in 0..{MAX_REPLICAS - 1}, got {self.replica}")

    @property
    def base(self) -> int:
        """First port of the block."""
        return BASE_PORT + BLOCK_SIZE * self.replica

    @property
    def ingress(self) -> int:
        """The ingress Envoy's listener: the URL the load generator targets."""
        return self.base

    @property
    def ingress_admin(self) -> int:
        """The ingress Envoy's admin port."""
        return self.base + 1

    @property
    def prometheus(self) -> int:
        """Prometheus' web / API port."""
        return self.base + 2

    @property
    def control(self) -> int:
        """The services host's control endpoint (``POST /reset``, ``GET /stats``)."""
        return self.base + 3

    def _service(self, service: str, slot: int) -> int:
        try:
            index = SERVICE_NAMES.index(service)
        except ValueError:
            raise ValueError(f"unknown SockShop service {service!r}") from None
        return self.base + _SERVICE_OFFSET + _PER_SERVICE * index + slot

    def app(self, service: str) -> int:
        """Where ``service``'s application listens (only its sidecar connects here)."""
        return self._service(service, 0)

    def inbound(self, service: str) -> int:
        """``service``'s sidecar inbound listener (the endpoint of callers' clusters)."""
        return self._service(service, 1)

    def outbound_http(self, service: str) -> int:
        """``service``'s sidecar outbound HTTP listener (its app sends every HTTP call here)."""
        return self._service(service, 2)

    def admin(self, service: str) -> int:
        """``service``'s sidecar admin port."""
        return self._service(service, 3)

    def outbound_tcp(self, service: str, slot: int) -> int:
        """``service``'s sidecar outbound TCP listener number ``slot`` (0..3)."""
        if not 0 <= slot < _TCP_SLOTS:
            raise ValueError(f"TCP listener slot must be in 0..{_TCP_SLOTS - 1}, got {slot}")
        return self._service(service, 4 + slot)

    def all_ports(self) -> range:
        """Every port of the block."""
        return range(self.base, self.base + BLOCK_SIZE)
