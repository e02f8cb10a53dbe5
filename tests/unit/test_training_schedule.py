"""The trainer's schedule (issue 5, point 3): fitted to the deadline, early stopping, and the
best epoch as the saved model, whatever ends the run.

Most tests replace the validation scores with a script (``ScriptedEvaluation``: the real
evaluation runs, its accuracy and loss are overridden) so that the best epoch and the
stopping point are known in advance. Tests of the deadline run on a ``FakeClock``: every
training step and every evaluation takes a fixed number of fake seconds, so what fits the
budget does not depend on the load of the machine. One test keeps the wall clock, with
generous tolerances.

Runs are tiny: MobileNetV3-Small (performance_first) on 8x8 digits, in one thread. All but the
wall-clock test train on 32 or 128 of them in batches of 16 (``small_batches``): 2 or 8 steps
an epoch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from tests.unit.test_training import CLASSES, digits  # noqa: F401 - digits: a fixture
from trainyard.services.trainer import training
from trainyard.services.trainer.presets import get_preset
from trainyard.services.trainer.training import Progress, Sample, TrainConfig

PREFERENCE = "performance_first"
PRESET = get_preset(PREFERENCE)
SMALL_BATCH = 16

State = dict[str, torch.Tensor]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches in one thread: on shared, busy cores two threads wait on each other at every
    operation (measured: 50 s instead of 0.7 s for the same three-epoch run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def subset(digits, train: int, held_out: int = 20) -> tuple[list[Sample], dict[str, bytes]]:  # noqa: F811
    """The first ``train`` training and ``held_out`` validation digits."""
    samples, images = digits
    kept = [s for s in samples if s.usage == "TRAIN"][:train]
    kept += [s for s in samples if s.usage == "EVAL"][:held_out]
    return kept, images


@pytest.fixture
def small(digits, monkeypatch) -> tuple[list[Sample], dict[str, bytes]]:  # noqa: F811
    """32 training digits in batches of SMALL_BATCH: epochs of two steps (``small_batches``)."""
    small_batches(monkeypatch)
    return subset(digits, 2 * SMALL_BATCH)


def small_batches(monkeypatch) -> None:
    """The preset with batches of SMALL_BATCH, so that a few dozen images make several steps."""
    preset = dataclasses.replace(PRESET, batch_size=SMALL_BATCH)
    monkeypatch.setattr(training, "get_preset", lambda name: preset)


@dataclass
class FakeClock:
    """Stands in for the ``time`` module in ``training``: time passes only when the run trains
    a step (``step_seconds(i)`` for the i-th step, from 0) or evaluates (``eval_seconds``)."""

    now: float
    step_seconds: Callable[[int], float] = lambda i: 1.0
    eval_seconds: float = 1.0
    steps: int = 0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock(now=time.time())
    monkeypatch.setattr(training, "time", fake)
    # _Run's `started` defaults to the real time.time, bound when the class was defined.
    real_run = training._Run
    monkeypatch.setattr(training, "_Run", lambda **kw: real_run(**kw, started=fake.time()))
    real_augment = training.augment

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        fake.now += fake.step_seconds(fake.steps)  # once per training step
        fake.steps += 1
        return real_augment(x, generator)

    monkeypatch.setattr(training, "augment", augment)
    return fake


@dataclass
class ScriptedEvaluation:
    """Replaces ``training.evaluate``: runs the real one, then reports the scripted
    (accuracy, loss) of that call (the real values when there is no script). Records the
    weights each call evaluated and when it returned (real or fake time)."""

    real: Callable[..., dict[str, Any]]
    scores: list[tuple[float, float]] | None = None
    clock: FakeClock | None = None
    states: list[State] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)

    def __call__(self, model: training.InferenceModel, x, y, **kwargs) -> dict[str, Any]:
        result = self.real(model, x, y, **kwargs)
        if self.clock is not None:
            self.clock.now += self.clock.eval_seconds
        call = len(self.states)
        self.states.append(
            {k: v.detach().to("cpu", copy=True) for k, v in model.net.state_dict().items()}
        )
        self.ended.append(self.clock.time() if self.clock is not None else time.time())
        if self.scores is None:
            return result
        assert call < len(self.scores), f"evaluated {call + 1} times; the script has {len(self.scores)}"
        accuracy, loss = self.scores[call]
        return {**result, "accuracy": accuracy, "loss": loss}


def script(monkeypatch, scores=None, clock=None) -> ScriptedEvaluation:
    evaluation = ScriptedEvaluation(training.evaluate, scores, clock)
    monkeypatch.setattr(training, "evaluate", evaluation)
    return evaluation


def same_weights(a: State, b: State) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def padded(scores: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The scores, then the last one repeated up to the preset's epochs (a run never needs more)."""
    return scores + [scores[-1]] * (PRESET.epochs - len(scores))


def config(**overrides: Any) -> TrainConfig:
    return TrainConfig(classes=CLASSES, preference=PREFERENCE, seed=5, **overrides)


# --- the schedule is fitted to the deadline ---------------------------------------------------


def test_the_schedule_is_cut_to_the_deadline_and_its_learning_rate_decays_in_time(
    digits, clock, monkeypatch  # noqa: F811 - the fixture
):
    small_batches(monkeypatch)
    samples, images = subset(digits, 8 * SMALL_BATCH)  # epochs of 8 steps
    steps_per_epoch = 8
    clock.step_seconds = lambda i: 1.0
    clock.eval_seconds = 2.0
    evaluation = script(monkeypatch, clock=clock)
    budget = 40.0
    started = clock.time()
    deadline = started + budget
    stop_at = deadline - training._margin(budget)  # no test-time augmentation in this preset
    epoch_seconds = steps_per_epoch * 1.0 + 2.0
    fits = int((stop_at - started) // epoch_seconds)
    assert fits == 3 < PRESET.epochs  # the budget allows 3 of the preset's 10 epochs

    reports: list[Progress] = []
    result = training.train(samples, images, config(deadline=deadline), progress=reports.append)

    assert result.stop_reason == "duration_limit"
    assert result.epochs_run == fits
    assert started + result.history[-1]["elapsed_seconds"] <= stop_at
    assert evaluation.ended[-1] <= stop_at  # the last epoch's evaluation, too
    # The first steps are timed, and the schedule is cut during the first epoch.
    calibrated = 1 + training.CALIBRATION_STEPS
    first_epoch = [p for p in reports if p.epoch == 1]
    assert {p.epochs_total for p in first_epoch if p.step < calibrated} == {PRESET.epochs}
    assert {p.epochs_total for p in first_epoch if p.step >= calibrated} == {fits}
    # The learning rate follows the cut schedule: it ends the last epoch at the end of the decay...
    steps_total = fits * steps_per_epoch
    for h in result.history:
        expected = training.learning_rate(
            h["epoch"] * steps_per_epoch, steps_total, PRESET.lr, PRESET.warmup_fraction
        )
        assert h["learning_rate"] == pytest.approx(expected, rel=1e-6), h["epoch"]
    final = result.history[-1]["learning_rate"]
    assert final == pytest.approx(training.FINAL_LR_FRACTION * PRESET.lr, rel=1e-3)
    # ...where the preset's own schedule would still be near its peak.
    uncut = training.learning_rate(
        steps_total, PRESET.epochs * steps_per_epoch, PRESET.lr, PRESET.warmup_fraction
    )
    assert uncut > 0.5 * PRESET.lr


def test_on_the_wall_clock_training_ends_before_the_deadline_less_its_margin(
    digits, monkeypatch  # noqa: F811 - the fixture
):
    # The real preset on all 560 training digits: about 1 s an epoch on two idle cores, so the
    # budget fits about five of its ten; far fewer on a loaded machine (the asserts allow it).
    samples, images = digits
    evaluation = script(monkeypatch)
    step_starts: list[float] = []
    real_augment = training.augment

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        step_starts.append(time.time())
        return real_augment(x, generator)

    monkeypatch.setattr(training, "augment", augment)
    budget = 6.0
    started = time.time()
    deadline = started + budget
    stop_at = deadline - training._margin(budget)
    reports: list[Progress] = []
    result = training.train(samples, images, config(deadline=deadline), progress=reports.append)
    returned = time.time()

    assert result.stop_reason == "duration_limit"
    assert result.epochs_run < PRESET.epochs
    calibrated = [p for p in reports if p.epoch >= 1 and p.step >= 1 + training.CALIBRATION_STEPS]
    assert all(p.epochs_total < PRESET.epochs for p in calibrated)
    # No step starts after the stop; a step, an evaluation or the final one may run over on a
    # loaded machine: seconds of tolerance.
    assert step_starts and step_starts[-1] <= stop_at + 0.5
    if result.epochs_run:
        assert evaluation.ended[result.epochs_run - 1] <= stop_at + 2.0
    assert returned <= deadline + 5.0


# --- early stopping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accuracies", "best_epoch"),
    [
        ([0.5, 0.6, 0.6, 0.6, 0.6], 2),
        ([0.5, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7], 4),  # an improvement restarts the patience
    ],
)
def test_training_stops_when_validation_accuracy_stops_improving(
    small, monkeypatch, accuracies, best_epoch
):
    samples, images = small
    evaluation = script(monkeypatch, padded([(a, 1.0) for a in accuracies]))
    result = training.train(samples, images, config())

    assert result.stop_reason == "converged"
    assert result.best_epoch == result.checkpoint["epoch"] == best_epoch
    assert result.epochs_run == best_epoch + PRESET.patience == len(accuracies) < PRESET.epochs
    assert len(evaluation.states) == result.epochs_run
    assert [h["val_accuracy"] for h in result.history] == accuracies


# --- the saved model is the best epoch ------------------------------------------------------

BEST_AT_2 = [(0.5, 1.0), (0.9, 0.5), (0.7, 0.8), (0.6, 0.9), (0.6, 0.9)]


@pytest.mark.parametrize(
    ("ending", "stop_reason", "epochs_run"),
    [
        ("patience", "converged", 2 + PRESET.patience),
        ("deadline", "duration_limit", 4),  # at an epoch's end
        ("deadline mid-epoch", "duration_limit", 3),  # steps slow down in epoch 4
        ("stop request", "cancelled", 3),
    ],
)
def test_the_saved_model_is_the_best_epoch_not_the_last(
    small, monkeypatch, request, ending, stop_reason, epochs_run
):
    samples, images = small
    overrides: dict[str, Any] = {}
    should_stop: Callable[[], str | None] = lambda: None  # noqa: E731
    fake: FakeClock | None = None
    if ending.startswith("deadline"):
        # Two steps of 1 s and an evaluation of 1 s per epoch; 13.5 s before the stop: 4 epochs.
        fake = request.getfixturevalue("clock")
        fake.eval_seconds = 1.0
        if ending == "deadline mid-epoch":  # from the 7th step (epoch 4's first), 4 s a step
            fake.step_seconds = lambda i: 1.0 if i < 6 else 4.0
        overrides["deadline"] = fake.time() + 15.0
    evaluation = script(monkeypatch, padded(BEST_AT_2), clock=fake)
    if ending == "stop request":
        should_stop = lambda: "cancelled" if len(evaluation.states) >= 3 else None  # noqa: E731

    result = training.train(samples, images, config(**overrides), should_stop=should_stop)

    assert result.stop_reason == stop_reason
    assert result.epochs_run == epochs_run
    assert result.best_epoch == result.checkpoint["epoch"] == 2
    assert len(evaluation.states) == epochs_run
    assert same_weights(result.checkpoint["state_dict"], evaluation.states[1])
    assert not same_weights(result.checkpoint["state_dict"], evaluation.states[-1])


# --- ties -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "best_epoch"),
    [
        ([(0.5, 0.3), (0.7, 1.0), (0.7, 0.8), (0.7, 0.9)], 3),  # equal accuracy: lower loss wins
        ([(0.5, 0.3), (0.7, 1.0), (0.6, 0.1)], 2),  # accuracy first, whatever the loss
    ],
)
def test_equal_accuracy_is_won_by_the_lower_validation_loss(small, monkeypatch, scores, best_epoch):
    samples, images = small
    evaluation = script(monkeypatch, scores)
    result = training.train(samples, images, config(max_epochs=len(scores)))

    assert result.stop_reason == "converged" and result.epochs_run == len(scores)
    assert result.best_epoch == result.checkpoint["epoch"] == best_epoch
    assert same_weights(result.checkpoint["state_dict"], evaluation.states[best_epoch - 1])


def test_a_lower_loss_at_equal_accuracy_is_kept_but_does_not_restart_the_patience(
    small, monkeypatch
):
    # docs/trainer.md: training stops when validation *accuracy* has not improved for the
    # preset's patience; the model kept is the best by accuracy, then by lower loss.
    samples, images = small
    scores = [(0.5, 1.0), (0.6, 1.0), (0.6, 0.9), (0.6, 0.8), (0.6, 0.7)]
    evaluation = script(monkeypatch, padded(scores))
    result = training.train(samples, images, config())

    assert result.stop_reason == "converged"
    assert result.epochs_run == 2 + PRESET.patience == 5
    assert result.best_epoch == result.checkpoint["epoch"] == 5
    assert same_weights(result.checkpoint["state_dict"], evaluation.states[4])
