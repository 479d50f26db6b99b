"""Typed errors of the library. The CLI turns each into one line and an exit code."""

from __future__ import annotations


class BatcherError(Exception):
    """Base of every error batcher raises on purpose. `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(BatcherError):
    """Bad input from the user: a spec, an input file, an option. Exit code 2."""

    exit_code = 2


class SpecError(UsageError):
    """A job spec is invalid: names the file, the key and what is wrong."""

    def __init__(self, path: str, key: str, problem: str):
        self.path, self.key, self.problem = path, key, problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class StoreError(BatcherError):
    """The state database cannot be opened or migrated."""


class StateError(BatcherError):
    """A status change that the state machine does not allow."""


class LeaseHeld(BatcherError):
    """Another process drives this run."""
