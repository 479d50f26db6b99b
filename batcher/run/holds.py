"""Holding back a model's submissions after the provider refused a batch for its queue limit.

OpenAI refuses a batch with `token_limit_exceeded` when the organisation already has too many
tokens enqueued for that model. Sending it again at once is refused again, so submissions of
that model wait: until one of the batches that were running then ends, or, when none was,
for a delay that doubles with each refusal in a row ("strike"). Too many strikes with nothing
of the model running means the batch can never fit, and the run stops for a person.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

MAX_TOKEN_LIMIT_STRIKES = 6  # token_limit_exceeded with nothing of the model running


class NeverFits(Exception):
    """The model's batches were refused MAX_TOKEN_LIMIT_STRIKES times with nothing running."""

    def __init__(self, strikes: int):
        super().__init__(strikes)
        self.strikes = strikes


@dataclass
class Hold:
    """Submissions of one model wait: until fewer than `open_then` of its batches run, or
    until `not_before` when none was running."""

    open_then: int
    not_before: float
    strikes: int


class Holds:
    """The holds of one run's models, as the driver sees them between loops."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.by_model: dict[str, Hold] = {}

    def blocks(self, model: str, running: int) -> bool:
        """Whether a batch of `model` must wait, with `running` of its batches at the provider."""
        hold = self.by_model.get(model)
        if hold is None:
            return False
        if running < hold.open_then or (running == 0 and time.monotonic() >= hold.not_before):
            return False
        return True

    def refused(self, model: str, running: int) -> float:
        """A batch of `model` was refused for the queue limit: hold the model. Returns the
        delay when nothing of it runs (0 when it waits for a running batch); NeverFits after
        too many strikes in a row."""
        previous = self.by_model.get(model)
        strikes = (previous.strikes if previous else 0) + (1 if running == 0 else 0)
        if strikes >= MAX_TOKEN_LIMIT_STRIKES:
            raise NeverFits(strikes)
        delay = self.interval_s * 2**strikes
        self.by_model[model] = Hold(running, time.monotonic() + delay, strikes)
        return 0.0 if running else delay

    def accepted(self, model: str) -> None:
        """A batch of `model` went through: its strikes start again from zero."""
        hold = self.by_model.get(model)
        if hold is not None:
            hold.strikes = 0
