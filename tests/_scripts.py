"""Load a script of ``experiments/`` (not a package) as a module, for the tests that use it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str, module_name: str | None = None) -> ModuleType:
    """Import ``experiments/<name>.py`` under ``module_name`` (default: ``<name>_script``).

    The module is registered in ``sys.modules`` first: dataclasses look their module up there.
    """
    module_name = module_name or f"{name}_script"
    spec = importlib.util.spec_from_file_location(module_name, REPO / "experiments" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
