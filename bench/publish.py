"""Publishing: the only module that writes a results folder's files (README.md, summary.csv,
cost.md, deploy.md, the plots, perf.md) and the headline block into a project README, each atomically
(``bench.files``: written beside its place and renamed into it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench import files, imagenet_transfer
from bench.loading import load_cost, load_deploy, load_every, load_timings, load_trials
from bench.render.cost import cost_section, render_cost
from bench.render.deploy import deploy_section, render_deploy
from bench.render.grid_time import grid_time_section, seed_cost_section
from bench.render.imagenet import imagenet_section
from bench.render.labels import distinguish_labels, settings
from bench.render.results_readme import render_markdown
from bench.render.runs import render_headline
from bench.render.tuning import tuning_section
from bench.records import latest_by_key
from bench.stats import deploy_summary, records_frame, study_summaries, summarize, time_curves, trials_frame
from bench.time_spent import grid_groups, grid_time, seed_cost

COST_MARKDOWN, COST_PLOT = "cost.md", "cost_throughput_vs_gflops.png"
DEPLOY_MARKDOWN, DEPLOY_PLOT = "deploy.md", "deploy_accuracy_vs_latency.png"
TUNING_PLOT = "tuning_val_accuracy.png"
# A hand-written file beside the records (dataset caveats, context) that heads the report.
NOTES_FILE = "notes.md"
# Where `bench report --readme FILE` puts the headline block.
README_START, README_END = "<!-- bench report: start -->", "<!-- bench report: end -->"


def splice_readme(text: str, block: str) -> str:
    """``text`` with what lies between the report markers replaced by ``block``.

    Raises:
        ValueError: ``text`` lacks the markers, or has them out of order.
    """
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"no {README_START} ... {README_END} markers; add them, on lines of their own, where the results should go")
    return text[: start + len(README_START)] + "\n" + block.strip() + "\n" + text[end:]


def write_markdown(path: Path, text: str) -> Path:
    """A rendered document (``bench.render``) as a file ending in one newline, written atomically."""
    return files.write_text(path, text + "\n")


def save_figure(figure, path: Path) -> Path:
    """Write a laid-out figure (``bench.plots``) whole as a PNG and close it, even when writing fails."""
    from bench import plots

    try:
        with files.atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=plots.DPI, format="png")
    finally:
        plots.plt.close(figure)
    return Path(path)


def write_cost_report(out_dir: Path, cost: pd.DataFrame | None = None, bad_lines: int = 0) -> list[Path]:
    """``cost.md`` and the throughput plot from the cost records (``out_dir/cost.jsonl`` unless given)."""
    from bench import plots

    out_dir = Path(out_dir)
    if cost is None:
        cost, bad_lines = load_cost([out_dir])
    if cost.empty:
        return []
    plot = save_figure(plots.throughput_vs_gflops(cost), out_dir / COST_PLOT)
    markdown = out_dir / COST_MARKDOWN
    write_markdown(markdown, render_cost(cost, bad_lines, plot.name))
    return [markdown, plot]


def write_deploy_report(out_dir: Path, extra_inputs=()) -> tuple[list[Path], str]:
    """``deploy.md`` and the accuracy-against-latency plot from the deployment records of
    ``out_dir`` (and ``extra_inputs``); returns the paths written and the section for a README ("" without records)."""
    from bench import plots

    out_dir = Path(out_dir)
    deploy, bad_lines = load_deploy([out_dir, *extra_inputs])
    if deploy.empty:
        return [], ""
    summary = deploy_summary(deploy)
    written = [save_figure(plots.accuracy_vs_latency(summary), out_dir / DEPLOY_PLOT)] if not summary.empty else []
    plot_name = written[0].name if written else None
    written.insert(0, write_markdown(out_dir / DEPLOY_MARKDOWN, render_deploy(deploy, summary, bad_lines, plot_name)))
    return written, deploy_section(deploy, summary, bad_lines, plot_name)


def write_report(out_dir: Path, extra_inputs=(), project_readme: Path | None = None) -> list[Path]:
    """Write summary.csv, plots and README.md into ``out_dir``, then the headline block into
    ``project_readme`` between its markers where given; returns the paths written.

    Each file is written beside its place and renamed into it (``bench.files``), so a crash or
    a full disk leaves the old file or the new one. README.md comes after the files it
    describes: a reader who sees a new README sees the whole new set.

    Raises:
        OSError: a file could not be written; the files not yet replaced keep their old text.
    """
    from bench import plots

    out_dir = Path(out_dir)
    every, bad = load_every([out_dir, *extra_inputs])
    frame = records_frame(list(latest_by_key(every).values()))
    summary = distinguish_labels(summarize(frame))
    if not summary.empty:
        summary["settings"] = [settings(row) for row in summary.itertuples()]
    summary_csv = files.write_text(out_dir / "summary.csv", summary.to_csv(index=False, float_format="%.6g"))
    curves = time_curves(frame, summary)
    transfer_points = imagenet_transfer.points(summary)
    imagenet = (transfer_points, imagenet_transfer.correlations(frame, transfer_points))
    plot_paths = [save_figure(figure, out_dir / name) for name, figure in plots.report_figures(frame, summary, curves, imagenet)] if not summary.empty else []
    imagenet_block = imagenet_section(*imagenet, plots.IMAGENET_PLOT)
    # `bench cost` records found among the inputs get a section of their own, cost.md and a plot.
    cost, cost_bad = load_cost([out_dir, *extra_inputs])
    cost_paths = write_cost_report(out_dir, cost, cost_bad)
    cost_block = cost_section(cost, cost_bad, COST_PLOT) if cost_paths else ""
    # Tuning studies found among the inputs (their trials.jsonl) get a section and a plot.
    trials = trials_frame(load_trials([out_dir, *extra_inputs])[0])
    tuning_paths = [save_figure(plots.tuning_history(trials), out_dir / TUNING_PLOT)] if len(trials) else []
    tuning_block = tuning_section(study_summaries(trials), TUNING_PLOT, trials) if len(trials) else ""
    deploy_paths, deploy_block = write_deploy_report(out_dir, extra_inputs)
    notes = (out_dir / NOTES_FILE).read_text() if (out_dir / NOTES_FILE).exists() else ""
    every_frame = records_frame(every)
    time_block = "\n\n".join(filter(None, [grid_time_section(grid_time(every_frame)), seed_cost_section(seed_cost(frame, load_timings([out_dir, *extra_inputs]), grid_groups(summary, transfer_points["group"])))]))
    # The README last: a reader who sees a new one sees the whole new set beside it.
    readme = files.write_text(out_dir / "README.md", render_markdown(frame, summary, bad, [p.name for p in plot_paths], notes, cost_block, tuning_block, deploy_block, curves, imagenet_block, time_block))
    written = [readme, summary_csv, *plot_paths, *cost_paths, *tuning_paths, *deploy_paths]
    if project_readme is not None and not summary.empty:
        project_readme = Path(project_readme)
        written.append(files.write_text(project_readme, splice_readme(project_readme.read_text(), render_headline(frame, summary))))
    return written
