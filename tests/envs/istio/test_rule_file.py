"""Tests of envs.istio.rule_file: service → pool maps and a rule file's snapshot / restore."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from envs.istio.model import ConnectionPool, DestinationRule, HttpSettings, TcpSettings
from envs.istio.rule_file import RuleFile, pools_of, rules_for
from envs.istio.yaml_io import read_rules
from tests.envs.istio._fixtures import DATA


def test_pools_of_and_rules_for() -> None:
    rules = read_rules(DATA)
    pools = pools_of(rules)
    assert set(pools) == {"carts", "catalogue"}
    new_carts = ConnectionPool(tcp=TcpSettings(max_connections=1))
    orders = ConnectionPool(http=HttpSettings(max_retries=1))
    out = rules_for({"carts": new_carts, "orders": orders, "catalogue": None},
                          namespace="sock-shop-2", base=rules)
    assert [r.name for r in out] == ["carts", "catalogue", "user", "orders"]
    assert out[0].connection_pool == new_carts and out[0].raw is rules[0].raw
    assert out[0].host == rules[0].host and out[0].api_version == rules[0].api_version
    assert out[1].connection_pool is None
    assert out[2] == replace(rules[2], namespace="sock-shop-2")
    assert out[3] == DestinationRule("orders", "orders", orders, namespace="sock-shop-2")
    assert pools_of(out) == {"carts": new_carts, "orders": orders}
    # Putting the original pools back restores the original rules.
    assert rules_for(pools, base=out[:3]) == [
        replace(r, namespace="sock-shop-2") for r in rules]


def test_rules_for_rejects_invalid_pools() -> None:
    with pytest.raises(ValueError, match=r"carts.*tcp\.maxConnections"):
        rules_for({"carts": ConnectionPool(tcp=TcpSettings(max_connections=-1))})


def test_pools_of_rejects_two_pools_for_one_service() -> None:
    pool = ConnectionPool(tcp=TcpSettings(max_connections=1))
    rules = [DestinationRule("a", "carts", pool),
             DestinationRule("b", "carts.sock-shop.svc.cluster.local", pool)]
    with pytest.raises(ValueError, match="'a' and 'b'"):
        pools_of(rules)


def test_rule_file_snapshot_restore_puts_back_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(DATA, path)
    original = path.read_bytes()
    rule_file = RuleFile(path)
    snap = rule_file.snapshot()
    rule_file.set_pool("carts", ConnectionPool(tcp=TcpSettings(max_connections=2)))
    rule_file.set_pool("payment", ConnectionPool(http=HttpSettings(max_retries=1)))
    rule_file.save()
    assert path.read_bytes() != original
    assert pools_of(read_rules(path))["carts"].tcp.max_connections == 2
    assert RuleFile(path).pools() == rule_file.pools()
    rule_file.restore(snap)
    assert path.read_bytes() == original  # comments and formatting included
    assert rule_file.rules == tuple(read_rules(DATA))


def test_rule_file_restore_of_a_missing_file_removes_it(tmp_path: Path) -> None:
    rule_file = RuleFile(tmp_path / "new.yaml")
    snap = rule_file.snapshot()
    assert rule_file.rules == () and snap.content is None
    rule_file.set_pool("user", ConnectionPool(tcp=TcpSettings(max_connections=3)))
    rule_file.save()
    assert read_rules(tmp_path / "new.yaml")[0].name == "user"
    rule_file.restore(snap)
    assert not (tmp_path / "new.yaml").exists() and rule_file.rules == ()


def test_rule_file_rejects_invalid_pools_before_saving(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(DATA, path)
    rule_file = RuleFile(path)
    with pytest.raises(ValueError):
        rule_file.set_pool("carts", ConnectionPool(http=HttpSettings(max_retries=-1)))
    assert rule_file.rules == tuple(read_rules(DATA))
    assert path.read_bytes() == DATA.read_bytes()
