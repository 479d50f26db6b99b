"""Running: the engine's API and the run loop that submits, polls, reconciles and
plans follow-ups, under the run's lease, with progress shown as it goes.
"""
