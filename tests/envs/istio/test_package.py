"""Tests of the envs.istio package as a whole: what importing it pulls in."""

from __future__ import annotations

import subprocess
import sys


def test_module_has_no_leftover_env_dependency() -> None:
    # The CLI and backends import envs.istio; it must not pull in the simulator or Ray.
    code = "import sys, envs.istio; print('ray' in sys.modules, 'envs.backends.sim' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "False"]
