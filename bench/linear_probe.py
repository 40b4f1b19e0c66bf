"""The ``linear`` stage's solver: Kornblith et al. 2019's linear probe on cached pooled features.

L2-regularised multinomial logistic regression, fitted by scikit-learn's L-BFGS
(``LogisticRegression(solver="lbfgs")``) on features standardised with the training split's
mean and deviation, its penalty chosen on validation accuracy from the stage's log-spaced
range (``Stage.l2_penalties``), coarse then fine, each fit warm-started from the one before:

1. coarse: every ``COARSE_STRIDE``-th value (Kornblith's 45 values from 1e5 down to 1e-6: the
   12 whole decades), strongest first; once the accuracy has peaked (risen above the
   strongest penalty's) and ``PATIENCE`` values in a row score no better than the peak, the
   weaker ones are skipped: they take the most iterations, and validation accuracy falls away
   from its peak on both sides;
2. fine: the values between the best coarse value and the better of its two neighbours;
3. final: the chosen value (the best validation accuracy; ties go to the stronger penalty),
   fitted on from its search fit to convergence, where the search capped each fit's iterations.

The penalty ``lambda`` is that of mean cross-entropy + ``lambda`` / 2 * ||W||^2 (the bias is
not penalised), scikit-learn's ``C = 1 / (lambda * n)`` for ``n`` training rows. The test split
is no argument of anything here: it cannot take part in the choice.

Memory: the standardised training rows, one float32 array (MobileNetV2's 45,000 x 1,280
features: 230 MB), and the validation rows'. scikit-learn 1.9's L-BFGS computes in its input's
dtype, so it takes no float64 copy (that would be 460 MB more); measured on the 2-core machine,
float32 ran an iteration 1.8x faster than float64, to the same validation accuracy (within
0.0004, on 45,000 x 1,280 synthetic features at penalties 1e-1 to 1e-3). On MobileNetV2's real
features at 128 px the whole search raised peak anonymous memory by 281 MB (106 -> 387 MB,
outside a cell) and took 87 to 102 s of solver time on the shared 2-core machine.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import numpy as np

from bench import progress
from bench.errors import UsageError
from bench.rows import RowView, as_view

COARSE_STRIDE = 4  # the coarse pass fits every 4th value of the range (0.25 decade apart: whole decades)
PATIENCE = 1  # coarse values in a row no better than the peak before the weaker ones are skipped
SEARCH_MAX_ITERATIONS = 50  # L-BFGS iterations per search fit (warm-started: the chain continues where one stopped)
FINAL_MAX_ITERATIONS = 1000
TOLERANCE = 1e-4  # scikit-learn's default: the largest gradient component of the mean loss
# OpenBLAS threads spin while they wait: on this project's 2-core machine, shared with other
# jobs, a fit capped at 10 iterations over 45,000 x 1,280 features took 33.7 s on 2 threads and 5.8 s on 1.
SOLVER_THREADS = 1
# Rows read, and accumulated in float64, at a time: MobileNetV2's features 21 MB a chunk.
CHUNK_ROWS = 4096


@dataclasses.dataclass(frozen=True)
class PenaltyFit:
    """One L-BFGS fit of the search, or the final one."""

    l2_penalty: float
    phase: str  # coarse | fine | final
    val_accuracy: float | None  # None for a final fit on training and validation together
    iterations: int
    converged: bool  # stopped at the tolerance, not at the iteration cap
    solver_seconds: float


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """The chosen classifier, on the raw (unstandardised) features.

    Attributes:
        l2_penalty: the chosen penalty.
        weights: ``(features, classes)``: logits are ``features @ weights + bias``.
        bias: ``(classes,)``.
        fits: every fit in the order it ran, the final one last.
        solver_seconds: the fits' seconds summed (scikit-learn's ``fit`` calls alone).
        seconds: the whole of ``fit_linear_probe``: standardising, fitting, scoring.
    """

    l2_penalty: float
    weights: np.ndarray
    bias: np.ndarray
    fits: tuple[PenaltyFit, ...]
    solver_seconds: float
    seconds: float

    def record_fields(self) -> dict:
        """The run record's fields of the linear stage."""
        return {
            "linear_l2_penalty": self.l2_penalty,
            "solver_seconds": self.solver_seconds,
            "linear_penalty_search": [dataclasses.asdict(fit) for fit in self.fits],
        }


def penalty_grid(low: float, high: float, count: int) -> np.ndarray:
    """``count`` log-spaced penalties from ``high`` down to ``low``: the search's order, strongest first."""
    return np.logspace(math.log10(high), math.log10(low), count)


def stacked(variants: list) -> np.ndarray:
    """The rows of ``variants`` (row views of one width, e.g. memory maps), stacked in one float32
    array, read ``CHUNK_ROWS`` at a time."""
    variants = [as_view(v) for v in variants]
    out = np.empty((sum(len(v) for v in variants), variants[0].shape[1]), np.float32)
    start = 0
    for view in variants:
        for block in view.batches(CHUNK_ROWS):
            out[start : start + len(block)] = block
            start += len(block)
    return out


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, deviation) of each column, accumulated in float64 ``CHUNK_ROWS`` rows at a time; a
    constant column's deviation is 1, so it standardises to 0."""
    chunks = range(0, len(x), CHUNK_ROWS)
    mean = sum(x[i : i + CHUNK_ROWS].sum(axis=0, dtype=np.float64) for i in chunks) / len(x)
    deviation = np.sqrt(sum(((x[i : i + CHUNK_ROWS] - mean) ** 2).sum(axis=0) for i in chunks) / len(x))
    return mean, np.where(deviation > 0, deviation, 1.0)


def standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``x`` as ``(x - mean) / scale``, in place (no temporary the size of ``x``)."""
    x -= mean.astype(x.dtype)
    x /= scale.astype(x.dtype)
    return x


def fit_linear_probe(
    train_variants: list, y_train: np.ndarray, val: RowView, y_val: np.ndarray, l2_penalties: tuple[float, float, int], num_classes: int, final: tuple | None = None
) -> LinearProbe:
    """Search the penalty on validation, then fit the chosen one (module docstring).

    Args:
        train_variants: row views of the training split's features, one per cache variant
            (e.g. original and mirrored), stacked as training rows.
        y_train: the training split's labels (each variant's rows carry them).
        val: the validation split's features.
        y_val: its labels.
        l2_penalties: ``(low, high, count)``: the log-spaced range searched.
        num_classes: the head's width; every class must have training rows.
        final: ``(variants, labels)`` the chosen penalty is fitted on at the end, standardised
            anew (Kornblith's final fit on training and validation together); ``None``: the
            training split, the search fit at that penalty continued to convergence.

    Returns:
        The chosen classifier, with every fit's penalty, validation accuracy and time.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    labels = np.tile(np.asarray(y_train), len(train_variants))
    if len(np.unique(labels)) != num_classes:
        raise UsageError(f"the linear stage needs training images of all {num_classes} classes, got {len(np.unique(labels))}; use more training images (--profile full)")
    x, mean, scale = _standardised(train_variants)
    x_val = standardise(stacked([val]), mean, scale)
    grid = penalty_grid(*l2_penalties)
    model = LogisticRegression(solver="lbfgs", warm_start=True, tol=TOLERANCE)
    solutions: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # grid index -> (coef_, intercept_)
    accuracies: dict[int, float] = {}
    fits: list[PenaltyFit] = []

    def fit(index: int, phase: str, start_from: int | None, max_iterations: int) -> float | None:
        if start_from is not None:
            model.coef_, model.intercept_ = (array.copy() for array in solutions[start_from])
        model.set_params(C=1.0 / (grid[index] * len(labels)), max_iter=max_iterations)
        fit_start = time.perf_counter()
        with warnings.catch_warnings(), threadpool_limits(SOLVER_THREADS):
            # A capped search fit is expected not to converge; the final fit's cap is recorded.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, labels)
        seconds = time.perf_counter() - fit_start
        solutions[index] = (model.coef_.copy(), model.intercept_.copy())
        # A fit on the validation images has no held-out accuracy.
        accuracy = float(np.mean(model.predict(x_val) == y_val)) if x_val is not None else None
        iterations = int(model.n_iter_[0])
        fits.append(PenaltyFit(float(grid[index]), phase, accuracy, iterations, iterations < max_iterations, seconds))
        scored = "none (trained on)" if accuracy is None else f"{accuracy:.4f}"
        print(f"{phase} L2 penalty {grid[index]:.3g}: val accuracy {scored}, {iterations} iterations ({seconds:.1f} s)", flush=True)
        progress.report("training", len(fits), None, milestone=True, l2_penalty=float(grid[index]), val_accuracy=accuracy)
        return accuracy

    # Coarse, strongest first, each fit from the one before.
    coarse = list(range(0, len(grid), COARSE_STRIDE))
    coarse += [len(grid) - 1] if coarse[-1] != len(grid) - 1 else []
    best, below = coarse[0], 0
    for position, index in enumerate(coarse):
        accuracies[index] = fit(index, "coarse", coarse[position - 1] if position else None, SEARCH_MAX_ITERATIONS)
        if accuracies[index] > accuracies[best]:
            best, below = index, 0
        elif accuracies[best] > accuracies[coarse[0]]:
            # Past a peak: the strongest penalties all predict one class, a plateau to cross, not a fall.
            below += 1
            if below == PATIENCE:
                break
    # Fine, between the best coarse value and its better neighbour (where the peak of a parabola
    # through the three lies), each fit from the nearest stronger penalty's solution.
    neighbours = [i for i in (best - COARSE_STRIDE, best + COARSE_STRIDE) if i in accuracies]
    side = min(neighbours, key=lambda i: (-accuracies[i], i)) if neighbours else best
    for index in range(min(best, side) + 1, max(best, side)):
        accuracies[index] = fit(index, "fine", max(i for i in solutions if i < index), SEARCH_MAX_ITERATIONS)
    chosen = min(accuracies, key=lambda i: (-accuracies[i], i))
    if final is not None:
        del x  # one copy of the features at a time
        x, mean, scale = _standardised(final[0])
        labels, x_val = np.tile(np.asarray(final[1]), len(final[0])), None
    fit(chosen, "final", chosen, FINAL_MAX_ITERATIONS)

    # Back to the raw features: (x - mean) / scale @ coef.T + b = x @ (coef / scale).T + (b - (mean / scale) @ coef.T).
    coef, intercept = solutions[chosen]
    weights = (coef / scale).T
    bias = intercept - (mean / scale) @ coef.T
    solver_seconds = sum(f.solver_seconds for f in fits)
    return LinearProbe(float(grid[chosen]), weights, bias, tuple(fits), solver_seconds, time.perf_counter() - start)


def _standardised(variants: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the rows of ``variants`` stacked and standardised in place, their mean, their deviation)."""
    x = stacked(variants)
    mean, scale = moments(x)
    return standardise(x, mean, scale), mean, scale


# `bench cost`: the solver timed on random standardised features of this many rows.
COST_ROWS = 8192
COST_ITERATIONS = 10


def solver_images_per_second(feature_dim: int, num_classes: int, repeats: int, rows: int = COST_ROWS, iterations: int = COST_ITERATIONS) -> float:
    """Rows x L-BFGS iterations per second of this module's solver (median over ``repeats``
    timed fits of ``iterations`` iterations), for ``bench cost``: a split of ``n`` rows takes
    about ``n * iterations / rate`` seconds to fit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, feature_dim), dtype=np.float32)
    labels = np.arange(rows) % num_classes
    rates = []
    for _ in range(repeats):
        # tol=0: no early stop; a moderate penalty, as near the optimum of real features.
        model = LogisticRegression(solver="lbfgs", C=1.0 / (1e-3 * rows), tol=0.0, max_iter=iterations)
        with warnings.catch_warnings(), threadpool_limits(SOLVER_THREADS):
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            model.fit(x, labels)
            seconds = time.perf_counter() - start
        rates.append(rows * int(model.n_iter_[0]) / seconds)
    return float(np.median(rates))


def load_into_head(head, probe: LinearProbe) -> None:
    """Set a head of one Dense softmax layer (``bench.models.build_head`` with no hidden layer) to the probe's coefficients."""
    (dense,) = [layer for layer in head.layers if layer.weights]
    dense.set_weights([probe.weights.astype("float32"), probe.bias.astype("float32")])
