"""The report's tuning section: one row per study (``bench.stats.study_summaries``), the chosen
values beside the defaults, and the plot of validation accuracy over trials."""

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


def tuning_section(studies: pd.DataFrame, plot: str | None) -> str:
    lines = ["## Tuning", "", TUNING_EXPLANATION, "", tuning_table(studies), ""]
    if plot:
        lines += [f"![{PurePath(plot).stem}]({PurePath(plot).name})", ""]
    return "\n".join(lines)
