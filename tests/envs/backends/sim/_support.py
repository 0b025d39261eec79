"""Helpers shared by the simulator's tests: a DestinationRule from keyword settings."""

from __future__ import annotations

from envs.istio import ConnectionPool, DestinationRule, HttpSettings, TcpSettings


def rule(service: str, **settings: object) -> DestinationRule:
    """A DestinationRule for ``service``; keys ``tcp_*`` / ``http_*`` go to the sections."""
    tcp = {k[4:]: v for k, v in settings.items() if k.startswith("tcp_")}
    http = {k[5:]: v for k, v in settings.items() if k.startswith("http_")}
    pool = ConnectionPool(tcp=TcpSettings(**tcp) if tcp else None,
                          http=HttpSettings(**http) if http else None)
    return DestinationRule(name=service, host=service, connection_pool=pool)
