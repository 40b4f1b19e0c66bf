"""The report's tuning section: one row per study (``bench.stats.study_summaries``), the chosen
values beside the defaults, the plot of validation accuracy over trials, and each study's trials
with the values they tried (the records that say which settings helped)."""

from __future__ import annotations

from pathlib import PurePath

import pandas as pd

from bench.render.format import missing, number, pct, table

TUNING_EXPLANATION = (
    "Each (backbone, stage) is tuned by its own Optuna study (`python -m bench tune`) on validation accuracy; the test split is never loaded by a trial. "
    "The studies of one run share one budget: the same number of finished trials, each of at most the same number of epochs. "
    "The sampler is TPE, seeded; the first trial is the stage's default recipe. A trial is pruned when its validation accuracy falls below the median of "
    "the finished trials' at the same share of their schedules; one whose loss diverged counts as pruned. Compute: every trial's wall time, summed. "
    "`bench run --recipes OUT/recipes` trains with the chosen values."
)


def value_text(value) -> str:
    """A recipe value as the table shows it: floats to three significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def chosen_cell(chosen: dict, defaults: dict) -> str:
    """The fields the best trial changed, each beside its default; then those it kept."""
    changed = [f"{name} {value_text(value)} (default {value_text(defaults.get(name))})" for name, value in sorted(chosen.items()) if value != defaults.get(name)]
    kept = sorted(name for name, value in chosen.items() if value == defaults.get(name))
    return "; ".join(changed + ([f"as default: {', '.join(kept)}"] if kept else [])) or "no trial finished its schedule"


def tuning_table(studies: pd.DataFrame) -> str:
    rows = []
    for row in studies.itertuples():
        rows.append(
            {
                "backbone": row.backbone,
                "stage": row.stage,
                "trials finished": f"{row.finished} of {row.trials}",
                "pruned": row.pruned,
                "max epochs": row.max_epochs,
                "compute min": number(row.compute_minutes, 1),
                "best val accuracy": "" if missing(row.best_val_accuracy) else f"{pct(row.best_val_accuracy)} (trial {row.best_trial})",
                "default val accuracy": pct(row.default_val_accuracy),
                "chosen (default)": chosen_cell(row.chosen, row.defaults),
            }
        )
    return table(rows)


def trial_ending(trial) -> str:
    """How a trial ended: its whole schedule, pruned after some epoch of it, or stopped."""
    if trial.status == "ok" and not trial.pruned:
        return f"complete ({int(trial.epochs)} epochs)"  # a float column where a failed trial has none
    if trial.status == "ok":
        # A pruned trial's record holds the epochs it ran; its schedule is the drawn value.
        return f"pruned after epoch {len(trial.history)} of {trial.recipe.get('values', {}).get('epochs', '?')}"
    return trial.failure or trial.status


def trials_table(trials: pd.DataFrame) -> str:
    """One row per trial of one study, in trial order: each tuned field's value (the default
    trial marked), its validation accuracy at its last epoch, and how it ended."""
    fields = sorted({name for recipe in trials["recipe"] for name in recipe.get("values", {})})
    rows = []
    for trial in trials.sort_values("trial").itertuples():
        values = trial.recipe.get("values", {})
        default = " (default)" if trial.tuning.get("default_recipe") else ""
        rows.append(
            {
                "trial": f"{trial.trial}{default}",
                **{name: value_text(values.get(name, "")) for name in fields},
                "val accuracy": pct(trial.val_accuracy),
                "ended": trial_ending(trial),
            }
        )
    return table(rows)


def tuning_section(studies: pd.DataFrame, plot: str | None, trials: pd.DataFrame) -> str:
    lines = ["## Tuning", "", TUNING_EXPLANATION, "", tuning_table(studies), ""]
    if plot:
        lines += [f"![{PurePath(plot).stem}]({PurePath(plot).name})", ""]
    for study, group in trials.groupby("study", sort=True):
        lines += [f"### Trials of {study}", "", trials_table(group), ""]
    return "\n".join(lines)
