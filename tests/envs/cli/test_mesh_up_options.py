"""``meshtune mesh up --envoy-workers N --adaptive-concurrency [JSON]``: the options reach the
replica (recorded in its state, Envoy runs N workers), bad values are one line before anything
starts. The end-to-end test starts a real replica (:data:`REPLICA`) and leaves nothing behind."""

from __future__ import annotations

import json
import urllib.request

import pytest

from envs.backends.local import envoy_config as ec
from envs.backends.local.ports import HOST, ReplicaPorts
from envs.backends.local.supervisor import busy_ports, read_state
from envs.cli import main as cli_main

REPLICA = 14


@pytest.mark.parametrize(("flags", "message"), [
    (["--envoy-workers", "0"], "envoy_workers must be an int"),
    (["--adaptive-concurrency", "{nope"], "--adaptive-concurrency: not JSON"),
    (["--adaptive-concurrency", "[1]"], "takes a JSON object"),
    (["--adaptive-concurrency", '{"window": 3}'], "unknown field"),
])
def test_bad_options_are_one_line_and_start_nothing(capsys: pytest.CaptureFixture[str],
                                                    flags: list[str], message: str) -> None:
    assert cli_main(["mesh", "up", "--replica", str(REPLICA), *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert read_state(REPLICA) is None


@pytest.mark.slow
def test_workers_and_the_filter_reach_the_replica(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["mesh", "up", "--replica", str(REPLICA), "--envoy-workers", "1",
                     "--adaptive-concurrency", '{"max_concurrency_limit": 50}']) == 0
    try:
        state = read_state(REPLICA)
        assert state is not None and state.envoy_workers == 1
        assert ec.AdaptiveConcurrency.from_value(state.adaptive_concurrency) == \
            ec.AdaptiveConcurrency(max_concurrency_limit=50)
        admin = ec.admin_port(ReplicaPorts(REPLICA), "front-end")
        with urllib.request.urlopen(f"http://{HOST}:{admin}/server_info", timeout=5) as r:
            info = json.load(r)
        assert int(info["command_line_options"]["concurrency"]) == 1
    finally:
        assert cli_main(["mesh", "down", "--replica", str(REPLICA)]) == 0
    assert read_state(REPLICA) is None
    assert busy_ports(list(ReplicaPorts(REPLICA).all_ports())) == []
