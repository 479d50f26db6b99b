"""A test seam: kill this process with SIGKILL at a named step of the run loop.

Set `BATCHER_CRASH_AT=<step>` in a runner's environment and it kills itself, without any
cleanup, the first time it reaches that step; the kill tests then check that `batcher resume`
finishes the run with nothing lost and nothing submitted twice. Steps:

- `after_intent`: a batch is marked `submitting`, nothing sent yet
- `after_upload`: OpenAI has the input file, no batch was created
- `after_create`: the provider created the batch; its ids are not recorded yet
- `after_record`: the provider ids are recorded
- `while_polling`: a batch was polled and is not finished
- `mid_reconcile`: half of a batch's results have been read by the reconciler
- `mid_layout`: a deferred plan's first batch is laid out (and may be going out), the rest not

Unset (the normal case) it costs one dictionary lookup per step.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "BATCHER_CRASH_AT"
STEPS = (
    "after_intent",
    "after_upload",
    "after_create",
    "after_record",
    "while_polling",
    "mid_reconcile",
    "mid_layout",
)


def crash_point(step: str) -> None:
    """Kill this process now when BATCHER_CRASH_AT names `step`."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
