"""`batcher sandbox`: serve the local stand-in for the providers' batch APIs."""

from __future__ import annotations

import signal
import sys

import click

from batcher.cli import cli, handle_errors


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False),
    help="JSONL of recorded outputs to answer from.",
)
@click.option(
    "--model-map",
    metavar="JSON",
    help='Requested model -> recorded model, e.g. \'{"gpt-5-nano": "gemma-2-2b-it"}\'.',
)
@click.option("--faults", metavar="SPEC", help="Faults to inject (see batcher.sandbox.faults).")
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Clock speed: 2 runs batches twice as fast.",
)
@handle_errors
def sandbox(host, port, replay, model_map, faults, speed):
    """Serve a local stand-in for the OpenAI, Anthropic, Gemini and xAI batch APIs (foreground).

    Point the SDKs at it with OPENAI_BASE_URL=http://HOST:PORT/v1,
    ANTHROPIC_BASE_URL=http://HOST:PORT, GOOGLE_GEMINI_BASE_URL=http://HOST:PORT/gemini and
    XAI_BASE_URL=http://HOST:PORT/xai/v1 and DEEPSEEK_BASE_URL=http://HOST:PORT/deepseek (chat
    completions, for direct mode); any API key is accepted. Its URL is recorded in the state
    folder while it serves, and every command's --sandbox talks to it then (batches outlive
    `batcher submit --sandbox`).

    Like the services, it refuses single requests with per-line errors: a prompt (plus
    max_completion_tokens) over the model's context window, or max_tokens, stop, or a
    temperature / top_p other than 1 sent to a gpt-5 or o-series model, as OpenAI 400 lines;
    a strict response_format schema with optional properties or open objects; on Anthropic,
    a prompt over the window, any unknown top-level field ("Extra inputs are not
    permitted") and temperature on models after Opus 4.6, as errored results. An answer
    longer than its cap is cut off with finish_reason "length" or stop_reason "max_tokens".

    Structured output is honoured: OpenAI response_format json_schema (never malformed
    under strict) and Anthropic output_config.format answer with an instance of the schema;
    a forced tool answers with a tool_use block. gpt-5 / o-series models spend hidden
    reasoning tokens by reasoning_effort (medium when none is sent) within the cap, so a
    small cap at the default effort comes back empty and cut off.
    """
    from batcher.sandbox import serve
    from batcher.sandbox.running import recorded

    # uvicorn stops on SIGTERM, then raises it again with the previous handler: this one
    # turns it into an exit that lets the record be removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    with recorded(f"http://{reach}:{port}"):
        serve(host=host, port=port, replay=replay, model_map=model_map, faults=faults, speed=speed)
