"""A Trainer callback that stops training once a time budget is spent; shared by the training benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

from transformers import TrainerCallback


class TrainingBudget(TrainerCallback):
    """Stops training after the optimiser step at which `clock` has advanced `seconds` since the callback was made.

    clock: time.process_time (CPU time of the process, all threads: what "CPU-minutes" budgets count) or
    time.monotonic (wall time). `stopped_at` is the step it stopped at, None if training ended on its own.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.process_time) -> None:
        self.seconds = seconds
        self.clock = clock
        self.start = clock()
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock() - self.start > self.seconds:
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control
