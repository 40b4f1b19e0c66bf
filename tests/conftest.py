import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# tests/ on sys.path so spawned cell processes can import tests' own backbone modules.
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture
def fault_backbones(monkeypatch):
    """Register the fault-injecting backbones here and in every spawned cell process."""
    from backbones import list_backbones, registry

    monkeypatch.setenv(registry.MODULES_ENV_VAR, "fault_backbones")
    list_backbones()  # imports the module in this process
    yield
    import fault_backbones as module

    for name in module.NAMES:
        registry.unregister_backbone(name)
    sys.modules.pop("fault_backbones", None)


def run_cli(*args, cwd=ROOT, env=None, timeout=600):
    """Run ``python -m bench`` as a user would; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {}), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
