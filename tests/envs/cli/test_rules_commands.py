"""Tests of ``meshtune validate`` and ``meshtune envoy`` (envs.cli.validate, envs.cli.envoy), in
process through ``envs.cli.main`` and as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from envs.cli import main
from envs.sockshop import SERVICE_NAMES

DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "istio_rules.yaml"

BAD = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: carts
spec:
  host: carts
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: -1
        connectTimeout: 500us
---
apiVersion: v1
kind: Service
metadata:
  name: carts
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: orders
spec:
  trafficPolicy:
    connectionPool:
      http:
        h2UpgradePolicy: UPGRADE
        useClientProtocol: true
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("apiVersion: networking.istio.io/v1\nkind: [DestinationRule\n")
    single = tmp_path / "single.yaml"
    single.write_text("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                      "metadata: {name: user}\nspec: {host: user}\n")
    return {"good": DATA, "bad": bad, "malformed": malformed, "single": single,
            "missing": tmp_path / "missing.yaml"}


EXPECTED_BAD_LINES = [
    "bad.yaml: document 1 (DestinationRule carts): "
    "spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration must be at least 1ms "
    "(got '500us')",
    "bad.yaml: document 1 (DestinationRule carts): "
    "spec.trafficPolicy.connectionPool.tcp.maxConnections: must be non-negative (got -1)",
    "bad.yaml: document 2: kind: not a DestinationRule of "
    "networking.istio.io (apiVersion v1, v1beta1 or v1alpha3) (got 'v1 Service/carts')",
    "bad.yaml: document 3 (DestinationRule orders): spec.host: spec.host is required",
    "bad.yaml: document 3 (DestinationRule orders): "
    "spec.trafficPolicy.connectionPool.http.useClientProtocol: must not be true when "
    "h2UpgradePolicy is UPGRADE (got True)",
]


def test_validate_ok(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(files["good"]), str(files["single"])]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{files['good']}: OK, 3 DestinationRules (carts, catalogue, user)",
        f"{files['single']}: OK, 1 DestinationRule (user)",
    ]
    assert err == ""


def test_validate_lists_every_error_of_every_file(files: dict[str, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["validate", str(files["good"]), str(files["bad"]), str(files["missing"]),
                   str(files["malformed"])])
    assert status == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{files['good']}: OK, 3 DestinationRules (carts, catalogue, user)"]
    lines = err.splitlines()
    bad_lines = sorted(line.replace(str(files["bad"]), "bad.yaml") for line in lines
                       if line.startswith(str(files["bad"])))
    assert bad_lines == EXPECTED_BAD_LINES
    assert f"{files['missing']}: cannot read file: No such file or directory" in lines
    [malformed] = [line for line in lines if line.startswith(str(files["malformed"]))]
    assert malformed.endswith(": document 1: <document>: malformed YAML: while parsing a flow "
                              "sequence (line 2, column 7): expected ',' or ']', but got "
                              "'<stream end>' (line 3, column 1)")
    assert lines[-1] == "3 of 4 files invalid"
    assert "Traceback" not in err


def test_console_script(files: dict[str, Path]) -> None:
    exe = shutil.which("meshtune")
    if exe is None:
        pytest.skip("console script 'meshtune' not installed (pip install -e .)")
    ok = subprocess.run([exe, "validate", str(files["good"])], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{files['good']}: OK, 3 DestinationRules (carts, catalogue, user)\n"
    bad = subprocess.run([exe, "validate", str(files["bad"]), str(files["missing"])],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stdout == ""
    got = sorted(line.replace(str(files["bad"]), "bad.yaml")
                 for line in bad.stderr.splitlines() if line.startswith(str(files["bad"])))
    assert got == EXPECTED_BAD_LINES
    assert "cannot read file" in bad.stderr and "Traceback" not in bad.stderr


def test_envoy_prints_cds_json(files: dict[str, Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envoy", str(files["good"]), "--namespace", "sock-shop"]) == 0
    out, _ = capsys.readouterr()
    resources = json.loads(out)["resources"]
    assert [r["name"] for r in resources] == [
        f"outbound|{r['name'].split('|')[1]}||{s}.sock-shop.svc.cluster.local"
        for r, s in zip(resources, SERVICE_NAMES, strict=True)]
    assert all(r["@type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
               for r in resources)
    carts = resources[0]
    assert carts["circuit_breakers"]["thresholds"][0]["max_connections"] == 100
    assert carts["connect_timeout"] == "0.030s"


def test_envoy_errors_are_reported_not_raised(files: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envoy", str(files["bad"])]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 5
    assert main(["envoy", str(files["missing"])]) == 1
    assert "cannot read file" in capsys.readouterr().err
    # The fixture's carts rule is for namespace sock-shop.
    assert main(["envoy", str(files["good"]), "--namespace", "other"]) == 1
    assert "namespace 'sock-shop', not 'other'" in capsys.readouterr().err
