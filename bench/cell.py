"""``run_cell(cell, out_dir) -> Record``: the whole story of one cell, top to bottom.

Build the classifier, pick the training path (cached activations of a frozen prefix, or
images end to end), train, save the trained classifier, evaluate, measure, and return a
record. The sweep runs it in a child process (``bench.isolation``); each step lives in its
own module. A tuning trial (``RunOptions.trial``) stops after validation: it loads no test
split, measures no cost, saves nothing, and reports each epoch to its study's pruner.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import keras

from backbones import get_backbone
from bench import files, measure, memory, progress
from bench.augment import get_policy
from bench.convert import convert
from bench.data import DEFAULT_CACHE_DIR, load_raw, prepare
from bench.features import FeatureCache, cached_inputs
from bench.grid import Cell, RunOptions, failed_record
from bench.linear_probe import fit_linear_probe, load_into_head
from bench.models import build_classifier, cached_split, init_from_training_images
from bench.records import Record
from bench.stages import PROFILES
from bench.training import TrainResult, evaluate, image_epochs, in_memory_variant_epochs, map_shift, one_hot, set_precision, train, tta_views, variant_epochs
from bench.trial_link import pruning_hook


def run_cell(cell: Cell, out_dir: Path, cache_dir: Path = DEFAULT_CACHE_DIR, features_dir: Path | None = None, options: RunOptions = RunOptions()) -> Record:
    """Train and measure one cell. Bad data raises ``UsageError``; a divergence returns a failed record.

    Decoded datasets are cached under ``cache_dir/datasets``, activations under
    ``features_dir`` (default ``cache_dir/features``). ``options`` may retry at a smaller
    batch or pick ``bench perf --memory``'s comparison loader.
    """
    wall_start = time.perf_counter()
    memory.start_anon_peak()
    features_dir = Path(features_dir or Path(cache_dir) / "features")
    provenance = measure.environment()
    spec, recipe, policy = get_backbone(cell.backbone), options.recipe(cell), get_policy(cell.augment)
    keras.utils.set_random_seed(cell.seed)
    precision = set_precision(cell.precision)

    # Data and model.
    progress.report("loading data")
    pool_images, test_images = cell.train_images or PROFILES[cell.profile].train_images, PROFILES[cell.profile].test_images
    split = prepare(load_raw(cell.data, cache_dir, with_test=options.trial is None), cell.seed, cell.val_fraction, pool_images, test_images)
    data = split.with_validation_in_training() if cell.fit_on == "train+val" else split
    progress.report("building model")
    clf = build_classifier(spec, recipe, data.image_size, cell.image_size, data.num_classes, None if cell.weights == "none" else cell.weights)
    if cell.weights == "none":
        init_from_training_images(spec, clf.backbone, data.x_train)  # airbench94's whitening layer
    y_train, y_val = one_hot(data.y_train, data.num_classes), one_hot(data.y_val, data.num_classes)

    # A stage that starts from a trained head loads its transfer counterpart's.
    notes = ""
    if recipe.starts_from:
        artifact = cell.head_artifact(out_dir)
        if artifact.exists():
            clf.head.load_weights(artifact)
        else:
            notes = "no saved transfer head: this cell trained its own first"
            _train_head(cell.head_source(), data, clf, features_dir)

    # The training path: cached activations of the frozen part where the cache is exact.
    cached = cell.cached()
    cache_seconds, view_weights = 0.0, None
    if cached:
        cache_start = time.perf_counter()
        # Where finetune would cut (this cell's depth override included), so transfer and linear
        # store it too: the three read and write one set of entries, whichever runs first.
        finetune_depth = cell.counterpart("finetune").recipe().unfreeze_layers if "finetune" in spec.stages else None
        prefix, trained, cut_names = cached_split(clf, recipe, finetune_depth)
        cache = FeatureCache(cell, prefix, cut_names, features_dir)
        train_variants, val_variants, test_variants = cached_inputs(cache, data, policy.cache_variants, recipe.tta_flip)
        cache_seconds, shift, notes = time.perf_counter() - cache_start, map_shift(recipe, train_variants[0].shape[1]), "; ".join(filter(None, [notes, *cache.notes]))
        if options.loader == "in-memory":  # the old loader, only as `bench perf --memory`'s comparison
            train_variants, val_variants, test_variants = ([v.rows(slice(None)) for v in views] for views in (train_variants, val_variants, test_variants))
            epoch_inputs = in_memory_variant_epochs(train_variants, y_train, cell.seed, shift)
        else:
            epoch_inputs = variant_epochs(train_variants, y_train, cell.seed, shift, batch_size=recipe.batch_size)
    else:
        trained = clf.model
        epoch_inputs = image_epochs(data.x_train, y_train, recipe, policy, cell.seed)
        val_variants, view_weights = tta_views(data.x_val, recipe)
        test_variants = [] if data.x_test is None else tta_views(data.x_test, recipe)[0]

    # Training: the epoch loop, or the linear stage's penalty search by L-BFGS on the cached features.
    linear = {}
    if recipe.solver == "lbfgs":
        # The penalty is chosen with fits on the training split alone; a final fit on train+val refits the choice on both.
        search = [dataclasses.replace(view, index=split.train_index) for view in train_variants]
        final = (train_variants, data.y_train) if cell.fit_on == "train+val" else None
        probe = fit_linear_probe(search, split.y_train, val_variants[0], split.y_val, recipe.l2_penalties, data.num_classes, final)
        load_into_head(trained, probe)
        result, linear = TrainResult([], None, False, probe.seconds), probe.record_fields()
    else:
        should_stop = pruning_hook(options.trial, data.num_classes) if options.trial else None
        result = train(trained, epoch_inputs, math.ceil(len(y_train) / recipe.batch_size), val_variants[0], y_val, recipe, cell.jit_compile, should_stop)
    common = dict(
        recipe=cell.recipe_record(),
        epochs=len(result.history),
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate if recipe.by_epochs else None,
        unfreeze_layers=recipe.unfreeze_layers if recipe.trainable == "top" else None,
        path=("cached" if options.loader == "batched" else f"cached-{options.loader}") if cached else "uncached",
        history=result.history,
        train_seconds=result.seconds,
        cache_seconds=cache_seconds,
        precision=precision,
        jit_compile=cell.jit_compile,
        notes=notes,
        provenance=provenance,
    )
    if result.diverged:
        return failed_record(cell, "diverged", "diverged: the training loss became NaN or infinite", **common)
    if options.trial:
        return _trial_record(cell, data, trained, val_variants, result, wall_start, common)
    if recipe.name == "transfer":
        artifact = cell.head_artifact(out_dir)
        artifact.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_path(artifact) as temporary:  # its name keeps Keras's .weights.h5 suffix
            clf.head.save_weights(temporary)
    # The whole classifier, for `bench deploy`: the parts trained on cached activations share
    # their layers with it, so it holds every trained weight. A layer Keras cannot serialise
    # costs the cell its saved model, not its results.
    model_file = cell.model_file()
    try:
        convert(clf.model, "tensorflow", Path(out_dir) / model_file)
    except (TypeError, ValueError, NotImplementedError) as error:
        model_file = ""
        common["notes"] = "; ".join(filter(None, [notes, f"classifier not saved, so bench deploy passes it over ({type(error).__name__}: {str(error).splitlines()[0][:200]})"]))

    # Evaluation, then cost measurements on the whole model.
    eval_start = time.perf_counter()
    progress.report("evaluating")
    test_accuracy, test_loss = evaluate(trained, test_variants, data.y_test, view_weights, recipe.tta_average)
    # A final fit trained on the validation images: it has no held-out validation accuracy.
    val_accuracy, val_loss = evaluate(trained, val_variants, data.y_val, view_weights, recipe.tta_average) if cell.fit_on == "train" else (None, None)
    measure_start = time.perf_counter()
    progress.report("measuring")
    total_params, trainable_params = measure.param_counts(clf.model)
    forward = measure.compiled_forward(clf.model, cell.jit_compile)
    sample = data.x_test.rows(slice(0, 64))  # a batch of test images: all the timings need
    throughput = measure.inference_images_per_second(forward, sample)
    latency = measure.latency_ms(forward, sample)
    flops = measure.flops_per_image(clf.model, data.x_test.shape[1:])
    measure_seconds = time.perf_counter() - measure_start
    wall_seconds = time.perf_counter() - wall_start
    eval_seconds = measure_start - eval_start
    return Record(
        **cell.record_fields(),
        status="ok",
        test_accuracy=test_accuracy,
        test_loss=test_loss,
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        train_accuracy=result.history[-1].get("accuracy") if result.history else None,
        tta_flip=recipe.tta_flip,
        train_images=len(data.train_index),
        val_images=len(data.val_index),
        test_images=len(data.y_test),
        wall_seconds=wall_seconds,
        eval_seconds=eval_seconds,
        measure_seconds=measure_seconds,
        # Time outside model compute: data loading, model building, bookkeeping.
        overhead_seconds=wall_seconds - cache_seconds - result.seconds - eval_seconds - measure_seconds,
        train_images_per_second=result.images_per_second,
        infer_images_per_second=throughput["images_per_second"],
        infer_batch_size=throughput["batch_size"],
        infer_spread=throughput["spread"],
        latency_p50_ms=latency["p50"],
        latency_p95_ms=latency["p95"],
        peak_rss_mb=measure.peak_rss_mb(),
        peak_anon_mb=memory.peak_anon_mb(),
        peak_gpu_mb=measure.peak_gpu_mb(),
        total_params=total_params,
        trainable_params=trainable_params,
        flops_per_image=flops,
        model_file=model_file,
        **common,
        **linear,
    )


def _trial_record(cell: Cell, data, trained, val_variants, result, wall_start: float, common: dict) -> Record:
    """A tuning trial's record: validation accuracy (its study's objective), no test, no cost measurements."""
    progress.report("evaluating")
    val_accuracy, val_loss = evaluate(trained, val_variants, data.y_val)
    return Record(
        **cell.record_fields(),
        status="ok",
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        train_accuracy=result.history[-1].get("accuracy") if result.history else None,
        tta_flip=cell.recipe().tta_flip,
        train_images=len(data.train_index),
        val_images=len(data.val_index),
        wall_seconds=time.perf_counter() - wall_start,
        train_images_per_second=result.images_per_second,
        peak_rss_mb=measure.peak_rss_mb(),
        peak_anon_mb=memory.peak_anon_mb(),
        pruned=result.stopped,
        **common,
    )


def _train_head(transfer_cell: Cell, data, clf, features_dir: Path) -> None:
    """Train ``clf.head`` as ``transfer_cell`` would, on cached pooled features."""
    recipe, policy = transfer_cell.recipe(), get_policy(transfer_cell.augment)
    variants = policy.cache_variants or ("original",)
    train_variants, val_variants, _ = cached_inputs(FeatureCache(transfer_cell, clf.features, ("pooled",), features_dir), data, variants, tta_flip=False)
    y_train = one_hot(data.y_train, data.num_classes)
    steps = math.ceil(len(y_train) / recipe.batch_size)
    train(clf.head, variant_epochs(train_variants, y_train, transfer_cell.seed, batch_size=recipe.batch_size), steps, val_variants[0], one_hot(data.y_val, data.num_classes), recipe)
