"""experiments/tune_static.py: a tiny TPE run writes DestinationRules that read back as the
chosen configuration; the shipped YAML is a valid tuned start; bad sizes are one-line errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from envs.settings import TUNED_STATIC_PATH, tuned_config_from

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("tune_static",
                                              REPO / "experiments" / "tune_static.py")
assert spec is not None and spec.loader is not None
tune_static = importlib.util.module_from_spec(spec)
sys.modules["tune_static"] = tune_static  # its dataclasses look their module up
spec.loader.exec_module(tune_static)


def test_tiny_run_writes_rules_that_read_back(tmp_path: Path, capsys: pytest.CaptureFixture
                                              ) -> None:
    out = tmp_path / "tuned.yaml"
    argv = ["--runs", "4", "--top-k", "2", "--selection-seeds", "2", "--fresh-seeds", "3",
            "--output", str(out)]
    assert tune_static.main(argv) == 0
    text = capsys.readouterr().out
    assert "| Istio's defaults |" in text and "| TPE-4 static |" in text
    for header in ("good %", "goodput req/s", "failure %", "mean ms", "p99 ms"):
        assert header in text
    assert out.read_text().startswith("# The TPE-201 static configuration")
    tuned_config_from(out)  # valid DestinationRules (an empty file: Istio's defaults won)


def test_the_shipped_configuration_is_a_tuned_start() -> None:
    config = tuned_config_from(TUNED_STATIC_PATH)
    assert len(config) == 12


@pytest.mark.parametrize("argv", [["--runs", "0"], ["--fresh-seeds", "1"]])
def test_bad_sizes(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert tune_static.main([*argv, "--no-write"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tune_static: error:") and len(err.strip().splitlines()) == 1
