"""``bench cost``: what each backbone costs without training (the counterpart of timm's
``benchmark.py``), one spawned process per configuration; returns and appends ``CostRecord``s.

Random weights cost the same compute as pretrained ones, so nothing is downloaded and
nothing trains to convergence: inference throughput (compiled forward, warm-up excluded,
median of repeats), batch-1 latency, one training step of each stage's trainable part,
parameters, FLOPs and the process's peak memory. Each configuration is a job like a sweep's
cell: its own spawned process (so its peak memory is its own and a crash or a hang costs only
its record, a timeout under ``--cell-timeout``), skipped under ``--resume`` when its latest
record is ok, shown in the sweep's live view. TensorFlow is imported inside the functions
that need it: the parent never loads it.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from bench import progress
from bench.cost_records import COSTS, CostConfig, CostRecord, append_cost_record
from bench.isolation import LOGS_DIR, classify, failure_text, run_in_child, why_no_result
from bench.live import SweepView
from bench.provenance import at_failure, machine, package_version
from bench.record_store import still_to_do
from bench.runtimes import RUNTIMES, cpu_flags, usable_cores

# Modest repeats: `bench cost --all` at default sizes must finish in 3 minutes on 2 cores.
INFER_BATCHES = 2  # batches per timed inference repeat
INFER_REPEATS = 5  # timed repeats; the median is reported
LATENCY_CALLS = 20  # batch-1 calls timed for p50/p95
TRAIN_STEPS = 2  # training steps per timed repeat
TRAIN_REPEATS = 5
SAMPLE_IMAGES = 32  # distinct random images the batches are drawn from


def _stage_recipe(name: str, spec, batch_size: int):
    from bench.stages import stage_defaults, unfreeze_layers

    stage = stage_defaults(name, spec.baseline_recipe)
    return dataclasses.replace(stage, batch_size=batch_size, unfreeze_layers=unfreeze_layers(stage, spec.unfreeze_layers))


def sample_images(config: CostConfig):
    """The random uint8 images every runtime's batches are drawn from (the same for each)."""
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (SAMPLE_IMAGES, config.native_size, config.native_size, 3), dtype=np.uint8)


def _deployed(spec, recipe, config: CostConfig):
    """The classifier the backbone's last stage deploys, with seeded random weights."""
    import keras

    from bench.models import build_classifier

    keras.utils.set_random_seed(0)
    return build_classifier(spec, recipe, config.native_size, config.image_size, config.num_classes, None)


def _trainable_part(spec, recipe, deployed, deployed_recipe, config: CostConfig):
    """(model, input shape) of what ``recipe`` trains, as the cached path trains it."""
    from bench.models import build_classifier, build_head, cached_split

    def classifier():
        if recipe == deployed_recipe:
            return deployed
        return build_classifier(spec, recipe, config.native_size, config.image_size, config.num_classes, None)

    if recipe.trainable == "all":
        model = classifier().model
    elif recipe.trainable == "head":
        model = build_head(int(deployed.features.output.shape[-1]), config.num_classes, recipe)
    else:
        _, model, _ = cached_split(classifier(), recipe, None)
    return model, tuple(int(d) for d in model.input.shape[1:])


def measure_config(config: CostConfig, command: str = "") -> CostRecord:
    """Measure one configuration in this process (``run_costs`` gives each its own)."""
    from bench.runners import set_tensorflow_threads

    threads = usable_cores()
    set_tensorflow_threads(threads)  # before TensorFlow runs anything
    import keras
    import numpy as np
    import tensorflow as tf

    from backbones import get_backbone
    from bench import measure, memory
    from bench.linear_probe import solver_images_per_second
    from bench.training import compile_model, one_hot, set_precision

    wall_start = time.perf_counter()
    memory.start_anon_peak()
    provenance = dataclasses.replace(measure.environment(), command=command)
    progress.report("building")
    dtype_policy = set_precision(config.precision)
    spec = get_backbone(config.backbone)
    recipes = [_stage_recipe(name, spec, config.batch_size) for name in spec.stages]
    images = sample_images(config)
    rng = np.random.default_rng(1)

    # Inference: the model the backbone's last stage deploys (a finetune's is a transfer's).
    progress.report("timing inference")
    deployed = _deployed(spec, recipes[-1], config)
    forward = measure.compiled_forward(deployed.model, config.jit_compile)
    throughput = measure.inference_images_per_second(forward, images, config.batch_size, INFER_BATCHES, INFER_REPEATS)
    latency = measure.latency_ms(forward, images, LATENCY_CALLS)
    flops = measure.flops_per_image(deployed.model, images.shape[1:])
    total_params, _ = measure.param_counts(deployed.model)

    # One training step per stage, on random inputs of the shape that stage trains on.
    per_stage = {}
    labels = tf.constant(one_hot(np.arange(config.batch_size) % config.num_classes, config.num_classes))
    for done, recipe in enumerate(recipes):
        progress.report("timing training steps", done, len(recipes))
        if recipe.solver == "lbfgs":  # no step: L-BFGS iterations over the pooled features
            feature_dim = int(deployed.features.output.shape[-1])
            per_stage[f"{recipe.name}_train_images_per_second"] = solver_images_per_second(feature_dim, config.num_classes, TRAIN_REPEATS)
            per_stage[f"{recipe.name}_trainable_params"] = (feature_dim + 1) * config.num_classes
            continue
        model, input_shape = _trainable_part(spec, recipe, deployed, recipes[-1], config)
        compile_model(model, recipe, steps_per_epoch=100, jit_compile=config.jit_compile)
        if recipe.trainable == "all":
            batch = tf.constant(np.resize(images, (config.batch_size, *images.shape[1:])))
        else:  # activations: non-negative, as after a ReLU
            batch = tf.constant(rng.uniform(0, 1, (config.batch_size, *input_shape)).astype("float32"))
        rate = measure.training_images_per_second(lambda: model.train_on_batch(batch, labels), config.batch_size, TRAIN_STEPS, TRAIN_REPEATS)
        per_stage[f"{recipe.name}_train_images_per_second"] = rate["images_per_second"]
        per_stage[f"{recipe.name}_trainable_params"] = measure.param_counts(model)[1]

    progress.report("timing a matmul")
    matmul = measure.matmul_gflops(keras.DTypePolicy(dtype_policy).compute_dtype)

    return CostRecord(
        **config.identity(),
        status="ok",
        dtype_policy=dtype_policy,
        matmul_gflops=matmul,
        stages=list(spec.stages),
        infer_images_per_second=throughput["images_per_second"],
        infer_spread=throughput["spread"],
        latency_p50_ms=latency["p50"],
        latency_p95_ms=latency["p95"],
        flops_per_image=flops,
        total_params=total_params,
        **per_stage,
        peak_rss_mb=measure.peak_rss_mb(),
        peak_anon_mb=memory.peak_anon_mb(),
        peak_gpu_mb=measure.peak_gpu_mb(),
        wall_seconds=time.perf_counter() - wall_start,
        runtime_version=tf.__version__,
        threads=threads,
        cpu_flags=cpu_flags(),
        provenance=provenance,
    )


def failed_cost_record(config: CostConfig, failure: str, error: str, command: str = "", **extra) -> CostRecord:
    """A ``failed`` record of ``config``; ``failure`` is one of ``records.FAILURES``."""
    return CostRecord(**config.identity(), status="failed", failure=failure, error=error, provenance=at_failure(extra.get("wall_seconds"), command), **extra)


def measure_safely(config: CostConfig, command: str = "") -> CostRecord:
    """``measure_config`` with every exception turned into a failed record (the last traceback lines)."""
    return _safely(measure_config, config, command, command)


@dataclasses.dataclass(frozen=True)
class Converted:
    """What converting a configuration's model for its runtime left (``convert_config``)."""

    path: str
    seconds: float
    flops_per_image: float | None
    total_params: int


def convert_config(config: CostConfig, folder: Path) -> Converted:
    """The configuration's deployed model, with random weights, converted for its runtime into ``folder``
    (int8 calibrated on the random sample images: the timings do not depend on the weights' values)."""
    from backbones import get_backbone
    from bench import measure
    from bench.convert import convert

    start = time.perf_counter()
    progress.report("converting")
    spec = get_backbone(config.backbone)
    deployed = _deployed(spec, _stage_recipe(spec.stages[-1], spec, config.batch_size), config)
    images = sample_images(config)
    path = convert(deployed.model, config.runtime, Path(folder) / config.file_stem, calibration=images)
    return Converted(str(path), time.perf_counter() - start, measure.flops_per_image(deployed.model, images.shape[1:]), measure.param_counts(deployed.model)[0])


def measure_converted(config: CostConfig, converted: Converted, command: str = "") -> CostRecord:
    """Time ``converted`` in its runtime in this process, which imports nothing else (``run_costs`` gives it its own)."""
    from bench import memory, runners, timing
    from bench.convert import file_mb

    start = time.perf_counter()
    memory.start_anon_peak()
    provenance = dataclasses.replace(machine(), command=command)
    threads = usable_cores()
    progress.report("timing inference")
    runner = runners.load(config.runtime, Path(converted.path), threads)
    images = sample_images(config)
    throughput = timing.images_per_second(runner.run, runner.prepare(timing.batch_of(images, config.batch_size)), config.batch_size, INFER_BATCHES, INFER_REPEATS)
    latency = timing.latency_ms(runner.run, [runner.prepare(images[i : i + 1]) for i in range(LATENCY_CALLS)], LATENCY_CALLS)
    runtime = RUNTIMES[config.runtime]
    return CostRecord(
        **config.identity(),
        status="ok",
        dtype_policy="int8" if runtime.int8 else "float32",
        infer_images_per_second=throughput["images_per_second"],
        infer_spread=throughput["spread"],
        latency_p50_ms=latency["p50"],
        latency_p95_ms=latency["p95"],
        flops_per_image=converted.flops_per_image,
        total_params=converted.total_params,
        peak_rss_mb=memory.peak_rss_mb(),
        peak_anon_mb=memory.peak_anon_mb(),
        wall_seconds=converted.seconds + time.perf_counter() - start,
        runtime_version=package_version(runtime.package),
        threads=threads,
        cpu_flags=cpu_flags(),
        model_file_mb=file_mb(Path(converted.path)),
        convert_seconds=converted.seconds,
        provenance=provenance,
    )


def _safely(work, config: CostConfig, command: str, *args):
    """``work(config, *args)`` with every exception turned into a failed record (the last traceback lines)."""
    try:
        return work(config, *args)
    except Exception as error:
        return failed_cost_record(config, classify(error), failure_text(error), command)


def convert_safely(config: CostConfig, folder: Path, command: str = ""):
    """``convert_config``, or a failed record saying the conversion failed."""
    converted = _safely(convert_config, config, command, folder)
    if isinstance(converted, CostRecord):
        return dataclasses.replace(converted, error=f"conversion to {config.runtime} failed: {converted.error}")
    return converted


def measure_converted_safely(config: CostConfig, converted: Converted, command: str = "") -> CostRecord:
    return _safely(measure_converted, config, command, converted, command)


def _in_child(work, args: tuple, config: CostConfig, out_dir: Path, command: str, timeout_seconds: float | None, on_progress):
    """``work(*args)``'s result in a spawned child, or a failed record for a crash, a kill or a timeout."""
    log_file = Path(out_dir) / LOGS_DIR / (config.file_stem + ".log")
    end = run_in_child(work, args, log_file, f"cost {config.key}", timeout_seconds, on_progress)
    if end.result is not None:
        return end.result, end.seconds
    # An OOM kill says so (a large batch or size is the likely cause), not just "SIGKILL".
    failure, reason = why_no_result(end, timeout_seconds, "measurement")
    return failed_cost_record(config, failure, f"{reason}; see {log_file}", command, wall_seconds=end.seconds), end.seconds


def measure_isolated(config: CostConfig, out_dir: Path, command: str = "", timeout_seconds: float | None = None, on_progress=None) -> CostRecord:
    """``measure_config`` in a spawned child, killed after ``timeout_seconds``; a crash, a kill
    or a timeout becomes a failed record. ``on_progress(event)`` gets the child's progress events.

    A runtime other than TensorFlow takes two children within the one limit: one converts the
    model (TensorFlow's converters keep memory), one times it with only the runtime loaded.
    """
    if config.runtime == "tensorflow":
        return _in_child(measure_safely, (config, command), config, out_dir, command, timeout_seconds, on_progress)[0]
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".bench-cost-") as folder:
        converted, seconds = _in_child(convert_safely, (config, folder, command), config, out_dir, command, timeout_seconds, on_progress)
        if isinstance(converted, CostRecord):
            return converted
        remaining = None if timeout_seconds is None else max(1.0, timeout_seconds - seconds)
        return _in_child(measure_converted_safely, (config, converted, command), config, out_dir, command, remaining, on_progress)[0]


@dataclasses.dataclass(frozen=True)
class CostRun:
    records: list[CostRecord]  # measured by this run, in order
    skipped: int  # configurations whose latest record was already ok (``resume``)


def run_costs(
    configs: list[CostConfig], out_dir: Path, command: str = "", resume: bool = False, timeout_seconds: float | None = None, log=None, describe=None
) -> CostRun:
    """Measure each configuration not already done in its own process, appending its record as it finishes.

    Args:
        configs: in run order.
        out_dir: holds ``cost.jsonl`` and ``logs/``.
        command: the command line, stamped on every record.
        resume: skip configurations whose latest record in ``out_dir`` is ``ok``.
        timeout_seconds: per-measurement limit; one past it is killed and recorded ``failed`` (``timeout``).
        log: where the live view goes (default stderr).
        describe: ``describe(number, total, record)`` is the line said when a measurement ends.

    Raises:
        OSError: ``cost.jsonl`` could not be written (earlier records are kept whole).
        UsageError: ``resume`` and ``cost.jsonl`` holds lines but no readable record.
    """
    log = log or sys.stderr
    out_dir = Path(out_dir)
    todo = still_to_do(configs, out_dir, COSTS, resume, log, "measurements")
    records: list[CostRecord] = []
    with SweepView(len(todo), log) as view:
        for number, config in enumerate(todo, 1):
            view.started(config)
            record = measure_isolated(config, out_dir, command, timeout_seconds, lambda event, config=config: view.update(config, event))
            append_cost_record(out_dir, record)
            records.append(record)
            view.finished(config, record)
            if describe:
                view.say(describe(number, len(todo), record))
    return CostRun(records, skipped=len(configs) - len(todo))
