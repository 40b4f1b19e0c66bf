"""A tuning trial's link to its study, used from inside the trial's own process: the journal
storage both processes open, the pruner, and the hook ``bench.training.train`` calls after
each epoch.

The parent (``bench.study``) asks the study for a trial and runs it as a cell in a child
process (``bench.isolation``); the child opens the same journal file (Optuna's process-safe
``JournalStorage``), reports each epoch's validation accuracy to the trial and stops when
the pruner says so; the parent then tells the study how the trial ended. Optuna is
imported only when a study or a trial runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class TrialLink:
    """Which trial of which study a cell is: what its process needs to report to it."""

    journal: str  # the study's journal file
    study: str
    number: int


def journal_storage(path: Path):
    """Optuna's journal storage over one file, shared by every process of a study."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


# Median pruning: a trial stops when its validation accuracy is below the median of the
# finished trials' at the same share of their schedules. Shares, not epochs: a short cosine
# schedule reaches its accuracy sooner, so comparing epoch 5 of 10 with epoch 5 of 40 would
# prune every long schedule.
PRUNER_STARTUP_TRIALS = 3  # trials that finish before any is pruned
PRUNER_WARMUP_PERCENT = 30  # share of its schedule a trial runs before it can be pruned


# A trial whose validation accuracy after a whole epoch is at most this multiple of chance
# (1 / classes) has collapsed: MobileNetV2's finetune trial at rate 8.8e-4 with 23 layers
# unfrozen sat at 10.0 % from its first epoch to its timeout. The median pruner cannot stop
# such a trial while fewer than PRUNER_STARTUP_TRIALS have finished, which in a 4-trial study
# is most of them, so a collapsed trial would spend a quarter of the budget on nothing.
COLLAPSED_AT_CHANCE_TIMES = 1.2


def make_pruner():
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_PERCENT)


def schedule_percent(epoch: int, epochs: int) -> int:
    """The step a trial reports after ``epoch`` of ``epochs``: the whole percent of its schedule done."""
    return round(100 * epoch / epochs)


def collapsed(val_accuracy: float, num_classes: int) -> bool:
    """Whether a trial's accuracy after an epoch is no better than guessing (``COLLAPSED_AT_CHANCE_TIMES``)."""
    return val_accuracy <= COLLAPSED_AT_CHANCE_TIMES / num_classes


def pruning_hook(link: TrialLink, num_classes: int):
    """``should_stop(epoch, epochs, metrics) -> bool`` for ``bench.training.train``: reports the
    epoch's validation accuracy to the trial and says whether it stops, pruned by the median
    pruner or collapsed to chance (never after the last epoch: that trial has finished)."""
    import optuna

    storage = journal_storage(Path(link.journal))
    study = optuna.load_study(study_name=link.study, storage=storage, pruner=make_pruner())
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(link.study), link.number)
    trial = optuna.trial.Trial(study, trial_id)

    def should_stop(epoch: int, epochs: int, metrics: dict) -> bool:
        trial.report(metrics["val_accuracy"], schedule_percent(epoch, epochs))
        return epoch < epochs and (collapsed(metrics["val_accuracy"], num_classes) or bool(trial.should_prune()))

    return should_stop
