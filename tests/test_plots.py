"""Plot labels: points close together still get labels whose drawn boxes do not intersect."""

import itertools

import pandas as pd
import pytest

from bench import plots, publish

# Six cells whose points nearly coincide (as two stages of similar backbones do), and one far
# away that stretches the axes so the six cluster.
CLOSE = pd.DataFrame(
    {
        "backbone": ["efficientnet_b0", "efficientnet_b0", "mobilenet_v2", "mobilenet_v2", "resnet50", "resnet50", "small_cnn"],
        "stage": ["transfer", "finetune"] * 3 + ["baseline"],
        "image_size": [96, 96, 128, 128, 64, 64, 32],
        "augment": ["flip", "flip", "flip", "flip-crop", "flip", "flip-crop", "flip-crop"],
        "test_accuracy": [0.100, 0.101, 0.102, 0.100, 0.101, 0.099, 0.86],
        "infer_images_per_second": [401.0, 405.0, 410.0, 398.0, 403.0, 407.0, 1306.0],
        "train_seconds": [65.0, 66.0, 64.0, 65.5, 66.5, 64.5, 2035.0],
        "cache_seconds": [0.0] * 7,
    }
)


def _renderer(figure):
    """A fresh Agg canvas for a figure that was saved and closed, drawn as the file was."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    figure.set_dpi(plots.DPI)
    canvas.draw()
    return canvas.get_renderer()


def _drawn_label_boxes(draw, tmp_path):
    """Draw and save as the report does; returns the figure and the boxes of the texts on its axes."""
    figure = draw(CLOSE)
    path = publish.save_figure(figure, tmp_path / "plot.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    renderer = _renderer(figure)
    texts = [t for axis in figure.axes for t in axis.texts if t.get_text()]
    return figure, [t.get_window_extent(renderer) for t in texts]


@pytest.mark.parametrize("draw", [plots.accuracy_vs_throughput, plots.accuracy_vs_cost])
def test_labels_of_close_points_do_not_overlap(draw, tmp_path):
    figure, boxes = _drawn_label_boxes(draw, tmp_path)
    assert len(boxes) == len(CLOSE)
    overlapping = [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]
    assert not overlapping
    page = figure.bbox
    assert all(page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1 for b in boxes)


def test_the_same_points_labelled_at_one_fixed_offset_would_overlap():
    """The check above can fail: these points, labelled the old way, collide."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.scatter(CLOSE["infer_images_per_second"], 100 * CLOSE["test_accuracy"])
    texts = [axis.annotate(f"{r.backbone} {r.image_size}px", (r.infer_images_per_second, 100 * r.test_accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points") for r in CLOSE.itertuples()]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    plt.close(figure)
    assert any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def test_cost_plot_labels_do_not_overlap(tmp_path):
    cost = pd.DataFrame(
        {
            "backbone": ["mobilenet_v2"] * 4 + ["efficientnet_b0"] * 2,
            "image_size": [96, 96, 128, 128, 96, 96],
            "batch_size": [32, 64, 32, 64, 32, 64],
            "status": ["ok"] * 6,
            "flops_per_image": [1.1e8, 1.1e8, 2.0e8, 2.0e8, 1.5e8, 1.5e8],
            "infer_images_per_second": [350.0, 360.0, 300.0, 310.0, 320.0, 330.0],
        }
    )
    figure = plots.throughput_vs_gflops(cost)
    publish.save_figure(figure, tmp_path / "cost.png")
    renderer = _renderer(figure)
    boxes = [t.get_window_extent(renderer) for t in figure.axes[0].texts if t.get_text()]
    assert len(boxes) == 6 and not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def test_the_tuning_plot_carries_the_best_so_far_across_pruned_trials():
    trials = pd.DataFrame(
        {
            "study": ["s"] * 5,
            "trial": [0, 1, 2, 3, 4],
            "status": ["ok"] * 5,
            "pruned": [False, True, False, True, True],
            "val_accuracy": [0.80, 0.70, 0.82, 0.90, 0.60],
        }
    )
    figure = plots.tuning_history(trials)
    (line,) = figure.axes[0].get_lines()
    # A pruned trial's accuracy (0.90, before its schedule ended) never counts as the best.
    assert list(line.get_ydata()) == pytest.approx([80, 80, 82, 82, 82])
    plots.plt.close(figure)
