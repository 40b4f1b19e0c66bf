"""``bench compare`` output: per-cell deltas with regression flags, unmatched cells, the verdict."""

from __future__ import annotations

from bench.render.format import number, pct, table


def _flag(regressed: bool) -> str:
    return " **REGRESSION**" if regressed else ""


def render_comparison(comparison) -> str:
    """Markdown for ``bench compare``; its last line says PASS or FAIL and why."""
    lines = ["# Comparison", ""]
    if comparison.environment_notes:
        lines += ["**Records come from different machines or software**, so cost deltas mix code and platform:", ""]
        lines += [f"- {note}" for note in comparison.environment_notes] + [""]
    rows = [
        {
            "cell": d.cell,
            "test accuracy": f"{pct(d.old_accuracy)} -> {pct(d.new_accuracy)} ({100 * (d.new_accuracy - d.old_accuracy):+.1f} pt){_flag(d.accuracy_regressed)}",
            "infer img/s": f"{number(d.old_images_per_second)} -> {number(d.new_images_per_second)} ({100 * (d.new_images_per_second / d.old_images_per_second - 1):+.1f} %){_flag(d.throughput_regressed)}",
            "peak RSS MB": f"{number(d.old_peak_rss_mb)} -> {number(d.new_peak_rss_mb)} ({100 * (d.new_peak_rss_mb / d.old_peak_rss_mb - 1):+.1f} %){_flag(d.memory_regressed)}",
        }
        for d in comparison.deltas
    ]
    lines += [table(rows), ""]
    for label, cells in (("failed in NEW (ok in OLD)", comparison.failed_new), ("only in OLD", comparison.only_old), ("only in NEW", comparison.only_new)):
        if cells:
            lines.append(f"- {label}: {', '.join(cells)}")
    lines.append(f"- {len(comparison.regressions)} regression(s) beyond the noise in {len(comparison.deltas)} matched cell(s)")
    # The last line says whether NEW passes, and if not, why and how many.
    lines.append("- FAIL: " + "; ".join(comparison.failures) if comparison.failures else "- PASS: every cell of OLD matched, ran ok and held within the noise")
    return "\n".join(lines)
