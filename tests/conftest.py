import contextlib
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Markers of measuring commands (bench.concurrent_runs) in a folder of the suite's own: a bench
# run in the background must not change what the suite's commands print.
os.environ["BENCH_MEASURING_DIR"] = tempfile.mkdtemp(prefix="bench-measuring-tests-")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# tests/ on sys.path so spawned cell processes can import tests' own backbone modules.
sys.path.insert(0, str(ROOT / "tests"))


@contextlib.contextmanager
def registered(*modules: str):
    """Register the backbones of test modules (``fault_backbones``, ``tiny_backbones``) in this
    process and, through ``BENCH_BACKBONE_MODULES``, in every process it spawns; removed after."""
    import importlib

    from backbones import list_backbones, registry

    before = os.environ.get(registry.MODULES_ENV_VAR)
    added = [name for name in modules if name not in sys.modules]  # an outer block keeps what it registered
    os.environ[registry.MODULES_ENV_VAR] = ",".join(filter(None, [before, *added]))
    try:
        list_backbones()  # imports the modules here
        yield
    finally:
        if before is None:
            os.environ.pop(registry.MODULES_ENV_VAR, None)
        else:
            os.environ[registry.MODULES_ENV_VAR] = before
        for name in added:
            for backbone in importlib.import_module(name).NAMES:
                registry.unregister_backbone(backbone)
            sys.modules.pop(name, None)


SHARED_SCOPES = ("module", "package", "session")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Put the tests that share one of this suite's module- or session-scoped fixtures (a real
    run, a sweep: tens of seconds each) in one pytest-xdist group, so ``--dist loadgroup``
    sends them to one worker and the fixture is built once, not once per worker. A test
    sharing two such fixtures is grouped by the first (xdist takes one group per test)."""
    for item in items:
        # name2fixturedefs: every fixture the test needs, its closure included; pytest's and
        # plugins' own (tmp_path_factory) have no baseid, this suite's have their folder's.
        shared = sorted(f"{defs[-1].baseid}::{name}" for name, defs in item._fixtureinfo.name2fixturedefs.items()
                        if defs and defs[-1].baseid and defs[-1].scope in SHARED_SCOPES)
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


@pytest.fixture
def fault_backbones():
    """Register the fault-injecting backbones here and in every spawned cell process."""
    with registered("fault_backbones"):
        yield


@pytest.fixture
def tiny_backbones():
    """Register ``tiny_net`` and ``tiny_wide`` (tests/tiny_backbones.py) here and in every spawned process."""
    with registered("tiny_backbones"):
        yield


@pytest.fixture
def cells_in_process(monkeypatch):
    """Cells of ``bench run`` and ``perf --memory`` run in this process rather than each in a
    spawned child (which loads TensorFlow again: some 7 CPU seconds a cell), for tests of what
    the command does with its cells (resume, identity, healing, tables), not of the isolation
    itself: test_reliability.py's fault sweep and ``real_run`` keep each cell in its process."""
    from bench import executors, perf
    from bench.isolation import run_cell_safely

    def in_process(cell, out_dir, cache_dir, options, on_progress=None):
        return run_cell_safely(cell, out_dir, cache_dir, options)

    monkeypatch.setattr(executors, "run_isolated", in_process)
    monkeypatch.setattr(perf, "run_isolated", in_process)


def run_cli(*args, cwd=ROOT, env=None, timeout=600):
    """Run ``python -m bench`` as a user would; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {}), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@dataclasses.dataclass(frozen=True)
class RealRun:
    """What ``real_run`` leaves: its folders, its command line and the finished process."""

    root: Path
    out: Path
    cache: Path
    weights: Path
    argv: tuple
    result: "subprocess.CompletedProcess"


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> RealRun:
    """One real ``bench run``, shared by every test that only reads what it leaves (records,
    report, artifacts, logs, its terminal output); a test that changes the folder copies it first.

    As a newcomer starts one: its own process, output not a terminal, a weights folder holding
    tiny_net's file but not mobilenet_v2's (skipped with one line, never built), a baseline
    (tiny_scratch, small_cnn's stand-in) beside tiny_net's transfer and finetune: three cells,
    each in its own process.
    """
    root = tmp_path_factory.mktemp("real_run")
    weights = root / "weights"
    weights.mkdir()
    with registered("tiny_backbones"):
        from backbones import get_backbone

        get_backbone("tiny_net").builder(weights=None).save_weights(weights / "tiny_net.weights.h5")
    argv = ("run", "--backbone", "tiny_scratch", "tiny_net", "mobilenet_v2", "--weights", str(weights), "--data", "synthetic", "--profile", "quick",
            "--image-size", "32", "--out", str(root / "out"), "--cache-dir", str(root / "cache"))
    result = run_cli(*argv, env={"BENCH_BACKBONE_MODULES": "tiny_backbones"}, timeout=1800)
    return RealRun(root, root / "out", root / "cache", weights, argv, result)


# Built-ins whose per-backbone checks cost several seconds of graph building each, and whose
# code path another default-suite backbone already exercises (keras.applications wrappers like
# mobilenet_v2's; EfficientNet-Lite1 to 4 are Lite0's builder with other multipliers): their
# parametrized checks run in the slow suite (CI) only. Every other registered backbone,
# plug-ins included, is checked by the default suite.
HEAVY_BUILTINS = {"efficientnet_b0", "resnet50", "efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite3", "efficientnet_lite4"}


def per_backbone(params, name_of=lambda param: param):
    """``params`` for ``pytest.mark.parametrize``, with the heavy built-ins' marked slow."""
    return [pytest.param(*(p if isinstance(p, tuple) else (p,)), marks=pytest.mark.slow) if name_of(p) in HEAVY_BUILTINS else p for p in params]
