"""``bench deploy``: each trained cell's saved classifier converted to each runtime, evaluated on
the cell's own test split and timed there; returns and appends ``DeployRecord``s.

Per cell, in spawned children (``bench.isolation``), so a crash, a kill or a hang costs one
record and each peak memory is its own process's:

1. ``prepare_split``: the cell's test split (as its run carved it) and a few hundred of its
   *training* images for int8 calibration, written as ``.npy`` files to a scratch folder.
2. Per runtime, TensorFlow first: ``convert_job`` writes the converted model (TensorFlow's is
   the cell's own ``.keras``) under ``OUT/deployed/``; ``evaluate_job`` loads it into its
   runtime alone, predicts the test split, and compares with TensorFlow's predictions. A float
   runtime whose accuracy is more than ``FLOAT_TOLERANCE_POINTS`` from TensorFlow's is a
   failed conversion and is not timed; otherwise throughput and latency are timed as ``bench cost``
   times them. Every runtime gets the same threads (``bench.runtimes.usable_cores``).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from bench import progress
from bench.deploy_records import DEPLOYS, DeployRecord, append_deploy_record, deploy_key
from bench.isolation import LOGS_DIR, classify, failure_text, run_in_child, why_no_result
from bench.live import SweepView
from bench.provenance import at_failure, machine, now, package_version
from bench.record_store import still_to_do
from bench.records import Record
from bench.runtimes import FLOAT_TOLERANCE_POINTS, REFERENCE, RUNTIMES, cpu_flags, usable_cores

DEPLOYED_DIR = "deployed"
CALIBRATION_IMAGES = 300  # training images the int8 quantisation is calibrated on
INFER_BATCH_SIZE = 64  # as a cell's and `bench cost`'s throughput
_SPLIT_FILES = ("test_images.npy", "test_labels.npy", "calibration.npy")


@dataclasses.dataclass(frozen=True)
class DeployJob:
    """One trained cell (its run record) under one runtime."""

    cell: Record
    runtime: str

    @property
    def key(self) -> str:
        return deploy_key(self.cell.key, self.runtime)

    @property
    def label(self) -> str:
        return f"{self.cell.backbone} {self.cell.stage} {self.runtime}"

    def model_file(self) -> str:
        """The model this runtime runs, relative to the output folder (TensorFlow's: the cell's own)."""
        if self.runtime == REFERENCE:
            return self.cell.model_file
        return f"{DEPLOYED_DIR}/{self.cell.key.replace('/', '__')}/{self.runtime}{RUNTIMES[self.runtime].suffix}"


def _record(job: DeployJob, status: str, **fields) -> DeployRecord:
    cell = job.cell
    return DeployRecord(
        job.key, cell.key, cell.backbone, cell.stage, cell.image_size, cell.augment, cell.seed, cell.dataset, job.runtime, status, cell.identity, tta_flip=cell.tta_flip, **fields
    )


def failed_deploy_record(job: DeployJob, failure: str, error: str, **fields) -> DeployRecord:
    """A ``failed`` record of ``job``; ``failure`` is one of ``DEPLOY_FAILURES``."""
    fields.setdefault("provenance", at_failure(fields.get("wall_seconds")))
    return _record(job, "failed", failure=failure, error=error, **fields)


def prepare_split(cell: Record, data: str, cache_dir: Path, folder: Path) -> int:
    """Write the cell's test split and its calibration images (training images only) into ``folder``; returns the test images' count."""
    import numpy as np

    from bench.data import load_raw, prepare, stratified_subset
    from bench.stages import PROFILES

    progress.report("loading data")
    identity = cell.identity
    split = prepare(load_raw(data, cache_dir), identity["seed"], identity["val_fraction"], identity["train_images"], PROFILES[cell.profile].test_images)
    calibration = stratified_subset(split.y_train, min(CALIBRATION_IMAGES, len(split.y_train)), np.random.default_rng(cell.seed))
    for name, array in zip(_SPLIT_FILES, (split.x_test.rows(slice(None)), split.y_test, split.x_train.rows(calibration))):
        np.save(Path(folder) / name, array)
    return len(split.y_test)


def convert_job(job: DeployJob, out_dir: Path, folder: Path) -> float:
    """Convert the cell's saved classifier for ``job.runtime``; returns the seconds it took."""
    import keras
    import numpy as np

    from bench import models  # noqa: F401  (registers the classifier's own layers for loading)
    from bench.convert import convert

    start = time.perf_counter()
    progress.report("converting")
    model = keras.saving.load_model(Path(out_dir) / job.cell.model_file, compile=False)
    calibration = np.load(Path(folder) / _SPLIT_FILES[2]) if RUNTIMES[job.runtime].int8 else None
    convert(model, job.runtime, Path(out_dir) / job.model_file(), calibration)
    return time.perf_counter() - start


def evaluate_job(job: DeployJob, out_dir: Path, folder: Path, reference, convert_seconds: float | None, command: str = ""):
    """(record, predicted classes) of ``job``'s converted model, in this process (which loads only its runtime).

    Args:
        reference: TensorFlow's (predicted classes, accuracy) on the same images; ``None`` for TensorFlow itself.
    """
    import numpy as np

    from bench import memory, runners, timing
    from bench.convert import file_mb

    start, started_at = time.perf_counter(), now()
    memory.start_anon_peak()
    threads, model_path = usable_cores(), Path(out_dir) / job.model_file()
    runner = runners.load(job.runtime, model_path, threads)
    images = np.load(Path(folder) / _SPLIT_FILES[0], mmap_mode="r")
    labels = np.load(Path(folder) / _SPLIT_FILES[1])
    progress.report("evaluating")
    predicted = runner.probabilities(images, job.cell.tta_flip).argmax(1)
    accuracy = float(np.mean(predicted == labels))
    reference_predicted, reference_accuracy = reference if reference is not None else (predicted, accuracy)
    runtime = RUNTIMES[job.runtime]
    fields = dict(
        test_accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        agreement=float(np.mean(predicted == reference_predicted)),
        test_images=len(labels),
        calibration_images=len(np.load(Path(folder) / _SPLIT_FILES[2], mmap_mode="r")) if runtime.int8 else None,
        model_file=job.model_file(),
        model_file_mb=file_mb(model_path),
        convert_seconds=convert_seconds,
        runtime_version=package_version(runtime.package),
        threads=threads,
        cpu_flags=cpu_flags(),
        provenance=dataclasses.replace(machine(), command=command, started_at=started_at),
    )
    if not runtime.int8 and abs(accuracy - reference_accuracy) * 100 > FLOAT_TOLERANCE_POINTS:
        gap = f"test accuracy {100 * accuracy:.2f} % against TensorFlow's {100 * reference_accuracy:.2f} %"
        return failed_deploy_record(job, "accuracy", f"conversion changed the predictions: {gap} (more than {FLOAT_TOLERANCE_POINTS} point); not timed", **fields), predicted
    eval_seconds = time.perf_counter() - start
    progress.report("measuring")
    sample = np.asarray(images[:INFER_BATCH_SIZE])
    throughput = timing.images_per_second(runner.run, runner.prepare(timing.batch_of(sample, INFER_BATCH_SIZE)), INFER_BATCH_SIZE)
    latency = timing.latency_ms(runner.run, [runner.prepare(sample[i : i + 1]) for i in range(len(sample))])
    return _record(
        job,
        "ok",
        **fields,
        infer_images_per_second=throughput["images_per_second"],
        infer_batch_size=INFER_BATCH_SIZE,
        infer_spread=throughput["spread"],
        latency_p50_ms=latency["p50"],
        latency_p95_ms=latency["p95"],
        peak_rss_mb=memory.peak_rss_mb(),
        peak_anon_mb=memory.peak_anon_mb(),
        eval_seconds=eval_seconds,
        wall_seconds=time.perf_counter() - start + (convert_seconds or 0),
    ), predicted


def _safely(work, job: DeployJob, failure: str | None, *args):
    """``work(*args)``, or a failed record of ``job`` for the exception it raised (``failure``, or its classification)."""
    try:
        return work(*args)
    except Exception as error:
        return failed_deploy_record(job, failure if failure and classify(error) != "oom" else classify(error), failure_text(error))


def prepare_split_safely(job: DeployJob, data: str, cache_dir: Path, folder: Path):
    return _safely(prepare_split, job, None, job.cell, data, cache_dir, folder)


def convert_job_safely(job: DeployJob, out_dir: Path, folder: Path):
    return _safely(convert_job, job, "conversion", job, out_dir, folder)


def evaluate_job_safely(job: DeployJob, out_dir: Path, folder: Path, reference, convert_seconds: float | None, command: str = ""):
    return _safely(evaluate_job, job, None, job, out_dir, folder, reference, convert_seconds, command)


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Where and how ``run_deploys`` works: the data the cells trained on and the run's settings."""

    out_dir: Path
    data: str | None  # the cells' images; None: CIFAR-10 or the synthetic set, as each cell's identity says
    cache_dir: Path
    command: str = ""
    timeout_seconds: float | None = None


def _in_child(work, args: tuple, job: DeployJob, where: Deployment, on_progress):
    """``work(*args)``'s result in a spawned child, or a failed record of ``job`` for a crash, a kill or a timeout."""
    log_file = where.out_dir / LOGS_DIR / ("deploy__" + job.key.replace("/", "__") + ".log")
    end = run_in_child(work, args, log_file, f"deploy {job.key}", where.timeout_seconds, on_progress)
    if end.result is not None:
        return end.result
    failure, reason = why_no_result(end, where.timeout_seconds, "deployment")
    return failed_deploy_record(job, failure, f"{reason}; see {log_file}", wall_seconds=end.seconds)


def _deploy_cell(jobs: list[DeployJob], where: Deployment, view, finish) -> None:
    """Every job of one cell (TensorFlow's first: the others are checked against its predictions)."""
    with tempfile.TemporaryDirectory(dir=where.out_dir, prefix=".bench-deploy-") as folder:
        reference, prepared = None, None
        for job in jobs:
            view.started(job)
            report = lambda event, job=job: view.update(job, event)  # noqa: E731
            if prepared is None:
                data = where.data or job.cell.identity["dataset_id"]
                prepared = _in_child(prepare_split_safely, (job, data, where.cache_dir, folder), job, where, report)
            if isinstance(prepared, DeployRecord):
                record = failed_deploy_record(job, prepared.failure, f"the cell's test split could not be prepared: {prepared.error}")
            elif job.runtime != REFERENCE and reference is None:
                record = failed_deploy_record(job, "exception", "no TensorFlow reference to check against: its evaluation failed (see its record)")
            else:
                seconds = None if job.runtime == REFERENCE else _in_child(convert_job_safely, (job, where.out_dir, folder), job, where, report)
                if isinstance(seconds, DeployRecord):
                    record = seconds
                else:
                    result = _in_child(evaluate_job_safely, (job, where.out_dir, folder, reference, seconds, where.command), job, where, report)
                    record, predicted = result if isinstance(result, tuple) else (result, None)
                    if job.runtime == REFERENCE and record.status == "ok":
                        reference = (predicted, record.test_accuracy)
            finish(job, record)


def run_deploys(cells: list[Record], runtimes: list[str], where: Deployment, resume: bool = False, log=None, describe=None) -> list[DeployRecord]:
    """Deploy each cell under each runtime not already done, appending each record as it finishes.

    Args:
        cells: ok run records whose ``model_file`` exists under ``where.out_dir``.
        runtimes: names of ``bench.runtimes.RUNTIMES``; TensorFlow, the reference, is always among them.
        resume: skip the (cell, runtime) pairs whose latest record is ``ok``; a cell with any
            runtime left evaluates TensorFlow again (its predictions are the reference).
        describe: ``describe(number, total, record)`` is the line said when a job ends.

    Raises:
        OSError: ``deploy.jsonl`` could not be written (earlier records are kept whole).
    """
    log = log or sys.stderr
    names = [REFERENCE, *(name for name in runtimes if name != REFERENCE)]
    jobs = [[DeployJob(cell, name) for name in names] for cell in cells]
    left = {job.key for job in still_to_do([job for cell_jobs in jobs for job in cell_jobs], where.out_dir, DEPLOYS, resume, log, "deployments")}
    # TensorFlow's predictions are the reference: evaluated again wherever another runtime is left.
    todo = [[job for job in cell_jobs if job.key in left or job.runtime == REFERENCE] for cell_jobs in jobs if any(job.key in left for job in cell_jobs)]
    total = sum(map(len, todo))
    records: list[DeployRecord] = []
    with SweepView(total, log) as view:

        def finish(job, record):
            append_deploy_record(where.out_dir, record)
            records.append(record)
            view.finished(job, record)
            if describe:
                view.say(describe(len(records), total, record))

        for cell_jobs in todo:
            _deploy_cell(cell_jobs, where, view, finish)
    return records
