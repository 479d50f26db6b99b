"""Where a command's provider calls go: the real providers (keys and base URLs from the
environment), or with --sandbox the local sandbox."""

from __future__ import annotations

from contextlib import ExitStack

import click

from batcher.errors import UsageError
from batcher.providers import Clients

sandbox_option = click.option(
    "--sandbox",
    is_flag=True,
    help="Talk to the local sandbox (no real calls): the one `batcher sandbox` serves, "
    "else one started in this process.",
)


def sandbox_clients(stack: ExitStack, *, outlive: bool = False) -> Clients:
    """Clients for the sandbox recorded in the state folder when it answers; otherwise a
    sandbox started in this process (recorded while it lives, so other commands can reach
    it). `outlive`: the batches must outlast this command, which an in-process sandbox
    cannot do, so a missing sandbox is a UsageError."""
    from batcher.sandbox import start_sandbox
    from batcher.sandbox.running import recorded, running_sandbox

    found = running_sandbox()
    if found is not None:
        return Clients.for_sandbox(found)
    if outlive:
        raise UsageError(
            "no sandbox is running, and one started by this command would end with it, "
            "taking the batches along: start `batcher sandbox` in another terminal first"
        )
    sandbox = stack.enter_context(start_sandbox())
    stack.enter_context(recorded(sandbox.url))
    return Clients.for_sandbox(sandbox)


def clients_for(stack: ExitStack, sandbox: bool, *, outlive: bool = False) -> Clients | None:
    """`sandbox_clients` with --sandbox, else None (the SDKs' environment)."""
    return sandbox_clients(stack, outlive=outlive) if sandbox else None
