"""A tuning study per (backbone, stage): Optuna's ask-and-tell, each trial an ordinary cell.

Every study of an output folder lives in one journal file there (Optuna's process-safe
``JournalStorage``), so a killed run resumes and several workers (processes sharing the
folder) share a study. A worker loops: under the study's lock it fails the trials whose
worker died (their lock file is free again: the kernel drops a dead process's locks) and
enqueues their values once more, stops once the finished trials (complete or pruned) and
the running ones reach the budget, else asks for a trial and takes that trial's lock. It
then runs the trial as a cell carrying the drawn recipe, in its own process
(``bench.executors``), appends the trial's record to ``trials.jsonl`` and tells the study
how it ended. A trial number is asked once: a retried trial gets a new one, and only
finished trials count, so a study ends with exactly its budget of finished trials.

Trial n's values are drawn by a TPE sampler seeded with (seed, n): the draws depend on the
seed and the trials before, not on kills or on which worker asks. The first trial is the
stage's default recipe, so every study measures the default under its own budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np

from bench import files, record_store
from bench.errors import UsageError
from bench.grid import Cell, RunOptions
from bench.live import format_seconds
from bench.provenance import stamped
from bench.recipes import RECIPES_DIR, Recipe, write_recipe
from bench.records import TRIALS, Record
from bench.search_space import Range, defaults_in, search_space, tunable
from bench.trial_link import TrialLink, journal_storage

JOURNAL_FILE = "tuning-journal.log"
LOCKS_DIR = "tuning-locks"
# Random draws before TPE models the results (the default recipe, trial 0, counts among them).
SAMPLER_STARTUP_TRIALS = 5


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """One study: the cell every trial varies, the ranges it varies and the budget.

    Attributes:
        base: the cell at the stage's default recipe; each trial is this cell with a recipe.
        space: the ranges of its search space (``bench.search_space``).
        trials: the finished trials (complete or pruned) the study ends with.
        max_epochs: the epoch cap every trial keeps to (the same for every study of a run).
        seed: the cells' seed and the sampler's.
    """

    base: Cell
    space: tuple[Range, ...]
    trials: int
    max_epochs: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.base.backbone}-{self.base.stage}"

    @property
    def budget(self) -> dict:
        return {"trials": self.trials, "max_epochs": self.max_epochs}

    def setup(self) -> dict:
        """What a resumed study must share with the one in the journal: all but the trial count."""
        space = [dataclasses.asdict(range_) for range_ in self.space]
        return json.loads(json.dumps({"cell": self.base.identity(), "space": space, "max_epochs": self.max_epochs, "seed": self.seed}))

    def distributions(self) -> dict:
        """The space as Optuna distributions, by recipe field."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        def distribution(range_: Range):
            if range_.choices:
                return CategoricalDistribution(range_.choices)
            if range_.step:
                return IntDistribution(int(range_.low), int(range_.high), step=range_.step)
            return FloatDistribution(range_.low, range_.high, log=range_.log)

        return {range_.field: distribution(range_) for range_ in self.space}

    def trial_cell(self, number: int, values: dict) -> Cell:
        recipe = Recipe(self.base.backbone, self.base.stage, tuple(sorted(values.items())), self.name, number)
        return dataclasses.replace(self.base, recipes=(recipe,))


def plan_studies(cells: list[Cell], trials: int, max_epochs: int, seed: int) -> tuple[list[StudyPlan], list[str]]:
    """A study per planned cell whose stage has a search space, every one with the same budget;
    and a note per stage passed over (one that chooses what it needs on validation itself)."""
    from backbones import get_backbone

    plans = [StudyPlan(cell, search_space(get_backbone(cell.backbone), cell.stage, max_epochs), trials, max_epochs, seed) for cell in cells if tunable(cell.stage)]
    skipped = sorted({cell.stage for cell in cells if not tunable(cell.stage)})
    return plans, [f"note: {stage} has no search space (it chooses what it needs on validation itself): not tuned" for stage in skipped]


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """How a worker left a study: its finished and pruned trials, a failed trial's record (or why
    a trial's record could not be written), the recipe written."""

    name: str
    finished: int
    pruned: int
    failed: Record | None = None
    recipe: Path | None = None
    write_error: str = ""


def _optuna():
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is this module's to say
    return optuna


def _sampler(seed: int, number: int):
    """The sampler that draws trial ``number``: seeded by (seed, number), whoever asks."""
    state = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
    return _optuna().samplers.TPESampler(seed=state, n_startup_trials=SAMPLER_STARTUP_TRIALS, multivariate=True)


def trial_lock(out_dir: Path, study: str, number: int) -> Path:
    """The file a worker holds an exclusive lock on while it runs trial ``number``."""
    return Path(out_dir) / LOCKS_DIR / f"{study}.trial-{number}.lock"


def _study_lock(out_dir: Path, study: str) -> Path:
    return Path(out_dir) / LOCKS_DIR / f"{study}.lock"


def open_studies(plans: list[StudyPlan], out_dir: Path) -> None:
    """Create each plan's study in ``out_dir``'s journal (its first trial the default recipe),
    or check that the study there was started with the same settings.

    Raises:
        UsageError: a study was started with other settings; nothing has run.
    """
    optuna = _optuna()
    (Path(out_dir) / LOCKS_DIR).mkdir(parents=True, exist_ok=True)
    storage = journal_storage(Path(out_dir) / JOURNAL_FILE)
    for plan in plans:
        with files.exclusive_lock(_study_lock(out_dir, plan.name)):
            study = optuna.create_study(study_name=plan.name, storage=storage, direction="maximize", load_if_exists=True)
            setup = study.user_attrs.get("setup")
            if setup is None:
                study.set_user_attr("setup", plan.setup())
                study.enqueue_trial(defaults_in(plan.space, plan.base.recipe()), user_attrs={"default": True})
            elif setup != plan.setup():
                changed = sorted(key for key in plan.setup() if plan.setup()[key] != setup.get(key))
                raise UsageError(
                    f"study {plan.name} in {Path(out_dir) / JOURNAL_FILE} was started with other settings ({', '.join(changed)} differ); "
                    "rerun with the settings it was started with, or pick another --out"
                )


def _retry_abandoned(study, out_dir: Path) -> list[int]:
    """Fail the running trials whose worker died (their lock is free) and enqueue their values again."""
    from optuna.trial import TrialState

    abandoned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if not files.is_locked(trial_lock(out_dir, study.study_name, t.number))]
    for trial in abandoned:
        trial_lock(out_dir, study.study_name, trial.number).unlink(missing_ok=True)  # its dead worker's
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **({"default": True} if trial.user_attrs.get("default") else {})})
    return [trial.number for trial in abandoned]


def _counts(study) -> tuple[int, int, int]:
    """(finished, of them pruned, running) trials."""
    from optuna.trial import TrialState

    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    pruned = states.count(TrialState.PRUNED)
    return states.count(TrialState.COMPLETE) + pruned, pruned, states.count(TrialState.RUNNING)


def _tell(study, number: int, record: Record) -> str:
    """Tell the study how trial ``number`` ended; returns the state's name. A trial whose loss
    diverged stopped early, as a pruned one does; any other failure fails it."""
    from optuna.trial import TrialState

    if record.status == "ok" and not record.pruned:
        return study.tell(number, record.val_accuracy).state.name
    state = TrialState.PRUNED if record.pruned or record.failure == "diverged" else TrialState.FAIL
    return study.tell(number, state=state).state.name


def run_study(plan: StudyPlan, out_dir: Path, runner, options: RunOptions = RunOptions(), command: str = "", log=None) -> StudyResult:
    """Run ``plan``'s study in ``out_dir`` (opened by ``open_studies``) until it has its budget
    of finished trials, one trial at a time through ``runner`` (``bench.executors``); then
    write its chosen recipe to ``out_dir/recipes``. Stops at a trial that fails."""
    optuna, out_dir = _optuna(), Path(out_dir)
    journal = out_dir / JOURNAL_FILE
    distributions = plan.distributions()
    failed = None
    while failed is None:
        with contextlib.ExitStack() as holding:
            with files.exclusive_lock(_study_lock(out_dir, plan.name)):
                study = optuna.load_study(study_name=plan.name, storage=journal_storage(journal))
                for number in _retry_abandoned(study, out_dir):
                    _say(log, f"  {plan.name} trial {number}: its worker stopped; failed, its values retried under a new number")
                finished, _, running = _counts(study)
                if finished + running >= plan.trials:
                    break
                study.sampler = _sampler(plan.seed, len(study.get_trials(deepcopy=False)))
                trial = study.ask(distributions)
                # Released before the file goes: a finished trial's lock file is not left behind.
                holding.callback(trial_lock(out_dir, plan.name, trial.number).unlink, missing_ok=True)
                holding.enter_context(files.exclusive_lock(trial_lock(out_dir, plan.name, trial.number)))
            cell = plan.trial_cell(trial.number, trial.params)
            record = runner.run(cell, dataclasses.replace(options, trial=TrialLink(str(journal), plan.name, trial.number)))
            role = {"default_recipe": bool(trial.user_attrs.get("default")), "retry_of": trial.user_attrs.get("retry_of")}
            record = dataclasses.replace(stamped(record, command=command), study=plan.name, trial=trial.number, tuning={**plan.budget, **role})
            try:
                record_store.append(out_dir, TRIALS, record)
            except OSError as error:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                message = f"could not write trial {trial.number}'s record to {out_dir}: {error.strerror or error}; free space or fix permissions, then rerun: the study resumes"
                return StudyResult(plan.name, *_counts(study)[:2], failed=record, write_error=message)
            state = _tell(study, trial.number, record)
            failed = record if state == "FAIL" else None
            _say(log, _trial_line(plan, trial.number, record, state, _counts(study)[0]))
    with files.exclusive_lock(_study_lock(out_dir, plan.name)):
        study = optuna.load_study(study_name=plan.name, storage=journal_storage(journal))
        finished, pruned, _ = _counts(study)
        recipe = _write_chosen(plan, study, out_dir, finished, pruned) if finished >= plan.trials and failed is None else None
    return StudyResult(plan.name, finished, pruned, failed, recipe)


def _write_chosen(plan: StudyPlan, study, out_dir: Path, finished: int, pruned: int) -> Path | None:
    """The best complete trial's values as ``out_dir/recipes/<backbone>-<stage>.json``."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = max(complete, key=lambda trial: (trial.value, -trial.number))
    default = next((trial for trial in complete if trial.user_attrs.get("default")), None)
    recipe = Recipe(plan.base.backbone, plan.base.stage, tuple(sorted(best.params.items())), plan.name, best.number)
    return write_recipe(
        out_dir / RECIPES_DIR,
        recipe,
        best_val_accuracy=best.value,
        budget=plan.budget,
        trials_finished=finished,
        trials_pruned=pruned,
        defaults=defaults_in(plan.space, plan.base.recipe()),
        default_val_accuracy=default.value if default else None,
    )


def _trial_line(plan: StudyPlan, number: int, record: Record, state: str, finished: int) -> str:
    planned = record.identity.get("epochs")
    if record.status == "ok":
        outcome = f"val {record.val_accuracy:.1%}" + (f", pruned after epoch {record.epochs} of {planned}" if record.pruned else f", {record.epochs} epochs")
    else:
        outcome = f"{state.lower()}: {(record.error or '').splitlines()[0][:160] if record.error else record.failure}"
    return f"  {plan.name} trial {number}: {outcome} in {format_seconds(record.wall_seconds or 0)} ({finished} of {plan.trials} finished)"


def _say(log, line: str) -> None:
    if log is not None:
        print(line, file=log, flush=True)
