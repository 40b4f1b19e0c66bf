"""Statistics over records: the frame, one summary row per configuration (seeds averaged, with
a 95 % t-interval), ties with the best, tuning studies and deployment rows. Where the time went
is ``bench.time_spent``. Nothing here formats text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from bench import record_store
from bench.grid import group_identity
from bench.keys import identity_digest
from bench.records import RECORD_FIELDS, Record

# The write-up's test accuracy per stage (../shared/seed): the numbers to beat.
WRITEUP_ACCURACY = {"baseline": 0.700, "transfer": 0.797, "finetune": 0.838}
# Readable columns of a configuration; what groups records is the whole identity but the seed.
LABEL_COLUMNS = ["backbone", "stage", "image_size", "augment", "weights", "dataset", "profile"]
# Identity fields beyond the labels, carried into the summary so a report can show how rows differ.
SETTING_COLUMNS = ["batch_size", "precision", "jit_compile", "val_fraction", "overrides", "dataset_id", "weights_id"]
# Identity fields a tuned recipe sets (``bench.grid.Cell.identity``): its digest, and the values
# of the search spaces' fields (``bench.search_space``) that the identity holds: epochs, depth,
# and the training path, which depends on the shift.
RECIPE_SET_FIELDS = ("recipes", "epochs", "unfreeze_layers", "path")
# Identity fields of tuned recipes and final fits: summary columns only where a record has one.
TUNING_COLUMNS = ["recipes", "fit_on"]
STAGE_ORDER = {"baseline": 0, "linear": 1, "transfer": 2, "finetune": 3}
# Training FLOPs per image as a multiple of the forward pass's: the backward pass costs about
# twice the forward (it computes gradients for both the activations and the weights).
TRAIN_FLOPS_PER_FORWARD = 3
# Student t 0.975 quantiles by degrees of freedom, for 95 % intervals over a few seeds.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t_quantile_975(dof: int) -> float:
    return T_975.get(dof, 1.96 if dof > 30 else 2.1)


def records_frame(records: list[Record]) -> pd.DataFrame:
    """One row per record; ``group`` names its configuration (its identity without the seed)."""
    frame = pd.DataFrame([record_store.as_flat_dict(r) for r in records], columns=list(RECORD_FIELDS))
    frame["weights"] = frame["weights"].map(weights_label)
    frame["group"] = [identity_digest(group_identity(r.identity)) for r in records]
    # Configurations that differ in their epoch budget alone share a curve (accuracy for time).
    frame["budget_curve"] = [identity_digest({k: v for k, v in group_identity(r.identity).items() if k != "epochs"}) for r in records]
    # A tuned configuration and its stage's default differ in the fields a recipe sets alone.
    frame["untuned_group"] = [identity_digest({k: v for k, v in group_identity(r.identity).items() if k not in RECIPE_SET_FIELDS}) for r in records]
    frame["batch_size_used"] = frame["batch_size"]
    for column in SETTING_COLUMNS + TUNING_COLUMNS:
        frame[f"planned_{column}"] = [r.identity.get(column) for r in records]
    return frame


def weights_label(weights: str) -> str:
    """``imagenet``, ``none``, or the file name of a weights file."""
    return weights if weights in ("imagenet", "none", "") else f"file:{Path(weights).name}"


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (records whose identities differ in the seed alone), ok records only.

    Accuracy: mean, standard deviation, 95 % Student-t interval. Cost: medians (with min and
    max for throughput and latency), since timing noise is one-sided; caching: the largest
    (the one extraction the configuration paid).
    """
    ok = frame[frame["status"] == "ok"]
    # A column only where some record has it: reports of older records stay byte for byte the same.
    has_anon = bool(ok["peak_anon_mb"].notna().any())
    has_tuned = bool(ok["planned_recipes"].notna().any())
    has_final_fit = bool((ok["planned_fit_on"] == "train+val").any())
    has_linear = bool(ok["linear_l2_penalty"].notna().any())
    rows = []
    for group_id, group in ok.groupby("group", sort=False):
        n = len(group)
        accuracy = group["test_accuracy"]
        std = float(accuracy.std(ddof=1)) if n > 1 else 0.0
        half_width = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else 0.0
        first = group.iloc[0]
        rows.append(
            {
                **{column: first[column] for column in LABEL_COLUMNS},
                "group": group_id,
                "untuned_group": first["untuned_group"],
                **{column: _setting(first[f"planned_{column}"]) for column in SETTING_COLUMNS},
                **({"recipe": _setting(first["recipe"] or {"source": "default"})} if has_tuned else {}),
                **({"fit_on": first["planned_fit_on"] or "train"} if has_final_fit else {}),
                # Below the planned size where a cell was retried after running out of memory.
                "batch_size_used": int(group["batch_size_used"].min()) if group["batch_size_used"].notna().any() else None,
                "seeds": n,
                "test_accuracy": float(accuracy.mean()),
                "test_accuracy_std": std,
                "test_accuracy_ci95": half_width,
                "val_accuracy": float(group["val_accuracy"].mean()),
                "writeup_accuracy": WRITEUP_ACCURACY.get(first["stage"]),
                "path": ",".join(sorted(set(group["path"]))),
                "epochs": int(group["epochs"].median()),
                "unfreeze_layers": group["unfreeze_layers"].iloc[0],
                "train_seconds": float(group["train_seconds"].median()),
                # The extraction is paid once, by the first seed; the others read the cache.
                "cache_seconds": float(group["cache_seconds"].max()),
                "wall_seconds": float(group["wall_seconds"].median()),
                "overhead_seconds": float(group["overhead_seconds"].median()),
                "train_images_per_second": float(group["train_images_per_second"].median()),
                "infer_images_per_second": float(group["infer_images_per_second"].median()),
                "infer_images_per_second_min": float(group["infer_images_per_second"].min()),
                "infer_images_per_second_max": float(group["infer_images_per_second"].max()),
                "infer_batch_size": int(group["infer_batch_size"].median()),
                "infer_spread": float(group["infer_spread"].median()) if group["infer_spread"].notna().any() else None,
                "latency_p50_ms": float(group["latency_p50_ms"].median()),
                "latency_p50_ms_min": float(group["latency_p50_ms"].min()),
                "latency_p50_ms_max": float(group["latency_p50_ms"].max()),
                "latency_p95_ms": float(group["latency_p95_ms"].median()),
                "peak_rss_mb": float(group["peak_rss_mb"].median()),
                **({"peak_anon_mb": float(group["peak_anon_mb"].median()) if group["peak_anon_mb"].notna().any() else None} if has_anon else {}),
                "peak_gpu_mb": float(group["peak_gpu_mb"].median()) if group["peak_gpu_mb"].notna().any() else None,
                "total_params": int(group["total_params"].iloc[0]),
                "trainable_params": int(group["trainable_params"].iloc[0]),
                "flops_per_image": float(group["flops_per_image"].iloc[0]) if group["flops_per_image"].notna().any() else None,
                # The linear stage's chosen penalty (the seeds' median on a log scale: a grid value for
                # an odd count) and L-BFGS seconds.
                **({"linear_l2_penalty": _log_median(group["linear_l2_penalty"]), "solver_seconds": _median(group["solver_seconds"])} if has_linear else {}),
            }
        )
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    summary["tied_best"] = _tied_with_best(summary)
    order = summary["stage"].map(STAGE_ORDER).fillna(9)
    return summary.assign(_order=order).sort_values(["backbone", "_order", "image_size", "augment"], kind="stable").drop(columns="_order").reset_index(drop=True)


def training_gflops_per_second(flops_per_image, train_images_per_second):
    """A from-scratch training loop's achieved rate: ``TRAIN_FLOPS_PER_FORWARD`` forward passes per image."""
    return TRAIN_FLOPS_PER_FORWARD * flops_per_image * train_images_per_second / 1e9


def time_curves(frame: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The accuracy-for-time curves: the summary rows of configurations trained at several epoch
    budgets and otherwise identical, ordered by curve and epochs, with ``curve`` (its id),
    ``train_minutes`` and ``train_gflops_per_second``, the training loop's achieved rate
    (``TRAIN_FLOPS_PER_FORWARD`` forward passes per training image; None without a FLOP count)."""
    if summary.empty:
        return summary.assign(curve=[], train_minutes=[], train_gflops_per_second=[])
    curve = summary["group"].map(frame.drop_duplicates("group").set_index("group")["budget_curve"])
    several = curve.map(curve.value_counts()) > 1
    rows = summary[several].assign(curve=curve[several])
    rows = rows.assign(
        train_minutes=rows["train_seconds"] / 60,
        train_gflops_per_second=training_gflops_per_second(pd.to_numeric(rows["flops_per_image"]), rows["train_images_per_second"]),
    )
    return rows.sort_values(["backbone", "stage", "curve", "epochs"], kind="stable").reset_index(drop=True)


def _median(values: pd.Series) -> float | None:
    return float(values.median()) if values.notna().any() else None


def _log_median(values: pd.Series) -> float | None:
    return float(10 ** values.map(math.log10).median()) if values.notna().any() else None


def _setting(value):
    """An identity value as one summary cell (lists, e.g. overrides, as compact JSON)."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else value


def recipe_of(cell) -> dict:
    """A summary row's recipe cell (compact JSON: source, values, defaults; records written
    before a finetune's head was always the default transfer's also name ``head``), or ``{}``
    where it is missing (summaries without any tuned row have no recipe column)."""
    return json.loads(cell) if isinstance(cell, str) and cell else {}


def is_tuned(recipe: dict) -> bool:
    return recipe.get("source", "default") != "default"


def tuned_rows(summary: pd.DataFrame) -> pd.Series:
    """Whether each summary row ran a tuned recipe (none do where there is no recipe column)."""
    if "recipe" not in summary.columns:
        return pd.Series(False, index=summary.index)
    return summary["recipe"].map(lambda cell: is_tuned(recipe_of(cell))).astype(bool)


def superseded_by_tuned(summary: pd.DataFrame) -> pd.Series:
    """Whether each row is a default-recipe row with fewer seeds than a tuned row of the same
    configuration (identities that differ only in what a recipe sets): an early look that the tuned
    configuration's seeds have replaced (a default row with as many seeds stays beside it)."""
    tuned = tuned_rows(summary)
    if not tuned.any():
        return tuned
    most_tuned_seeds = summary[tuned].groupby("untuned_group")["seeds"].max()
    return ~tuned & (summary["seeds"] < summary["untuned_group"].map(most_tuned_seeds).fillna(0))


def tied_with_best(rows: pd.DataFrame) -> pd.Series:
    """Whether each row's 95 % accuracy interval overlaps the best row's (the best included)."""
    best = rows["test_accuracy"].idxmax()
    best_low = rows.at[best, "test_accuracy"] - rows.at[best, "test_accuracy_ci95"]
    return (rows["test_accuracy"] + rows["test_accuracy_ci95"]) >= best_low


def _tied_with_best(summary: pd.DataFrame) -> pd.Series:
    """Per stage, whether a group's 95 % interval overlaps the best group's."""
    tied = pd.Series(False, index=summary.index)
    for _, group in summary.groupby("stage"):
        tied[group.index] = tied_with_best(group)
    return tied


def trials_frame(trials: list[Record]) -> pd.DataFrame:
    """One row per tuning trial's record, in the order given (by study and trial number)."""
    return pd.DataFrame([record_store.as_flat_dict(r) for r in trials], columns=list(RECORD_FIELDS))


def study_summaries(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per study: its budget, its trials finished (complete, pruned, or stopped by a
    diverged loss, which counts as pruned) and compute minutes (every trial's wall time), the
    best complete trial (the lowest number among ties) with its values beside the defaults,
    and the default recipe's validation accuracy."""
    rows = []
    for study, group in trials.groupby("study", sort=True):
        ended = group[(group["status"] == "ok") | (group["failure"] == "diverged")]
        complete = ended[(ended["status"] == "ok") & ~ended["pruned"].astype(bool)]
        best = complete.loc[complete["val_accuracy"].idxmax()] if len(complete) else None
        default = complete[[bool(t.get("default_recipe")) for t in complete["tuning"]]]
        budget = group["tuning"].iloc[-1]
        rows.append(
            {
                "study": study,
                "backbone": group["backbone"].iloc[0],
                "stage": group["stage"].iloc[0],
                "trials": budget.get("trials"),
                "max_epochs": budget.get("max_epochs"),
                "finished": len(ended),
                "pruned": len(ended) - len(complete),
                "compute_minutes": float(group["wall_seconds"].fillna(0).sum()) / 60,
                "best_trial": None if best is None else int(best["trial"]),
                "best_val_accuracy": None if best is None else float(best["val_accuracy"]),
                "chosen": {} if best is None else best["recipe"].get("values", {}),
                "defaults": {} if best is None else best["recipe"].get("defaults", {}),
                "default_val_accuracy": float(default["val_accuracy"].iloc[-1]) if len(default) else None,
            }
        )
    return pd.DataFrame(rows)



def official_int8_drop(backbone: str) -> float | None:
    """The official release's ImageNet int8 drop, in points, from the backbone's registered
    metadata (``None`` for a backbone without an int8 release or not registered here)."""
    from backbones.registry import find_pretrained

    pretrained = find_pretrained(backbone)
    return None if pretrained is None else pretrained.int8_drop_points


def deploy_summary(deploy: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (a cell's identity but its seed) and runtime over the ok deployment records:
    mean accuracy, TensorFlow's mean on the same images, the mean drop from it in points (beside
    it, for an int8 runtime, the official release's ImageNet int8 drop), mean agreement, and the
    medians of size and timings."""
    from bench.runtimes import RUNTIMES

    ok = deploy[deploy["status"] == "ok"]
    configuration = [identity_digest(group_identity(identity)) for identity in ok["identity"]]
    rows = []
    for (_, runtime), group in ok.groupby([configuration, "runtime"], sort=False):
        first = group.iloc[0]
        rows.append(
            {
                "backbone": first["backbone"],
                "stage": first["stage"],
                "image_size": int(first["image_size"]),
                "augment": first["augment"],
                "runtime": runtime,
                "seeds": len(group),
                "test_accuracy": float(group["test_accuracy"].mean()),
                "reference_accuracy": float(group["reference_accuracy"].mean()),
                "drop_points": float(100 * (group["reference_accuracy"] - group["test_accuracy"]).mean()),
                "official_int8_drop_points": official_int8_drop(first["backbone"]) if RUNTIMES[runtime].int8 else None,
                "agreement": float(group["agreement"].mean()),
                "model_file_mb": float(group["model_file_mb"].median()),
                "infer_images_per_second": float(group["infer_images_per_second"].median()),
                "infer_batch_size": int(group["infer_batch_size"].median()),
                "latency_p50_ms": float(group["latency_p50_ms"].median()),
                "latency_p95_ms": float(group["latency_p95_ms"].median()),
                "peak_rss_mb": float(group["peak_rss_mb"].median()),
            }
        )
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    order = list(RUNTIMES)
    summary["_stage"], summary["_runtime"] = summary["stage"].map(STAGE_ORDER).fillna(9), summary["runtime"].map(order.index)
    return summary.sort_values(["backbone", "_stage", "image_size", "_runtime"]).drop(columns=["_stage", "_runtime"]).reset_index(drop=True)
