"""batcher.sandbox: a local emulator of OpenAI Files + Batches, Anthropic Message Batches and
Gemini batch mode.

Start it with `batcher sandbox --port N`, or in-process with `start_sandbox(...)`, and point
the official SDKs at it (`base_url=sandbox.openai_base_url` / `sandbox.anthropic_base_url` /
`sandbox.gemini_base_url`).
Admin endpoints: GET/POST /_sandbox/config, POST /_sandbox/clock, POST /_sandbox/reset,
GET /_sandbox/stats, GET /_sandbox/billed. The fault grammar is in batcher.sandbox.faults,
the responders' conventions in batcher.sandbox.responders.
"""

from batcher.sandbox.config import SandboxConfig
from batcher.sandbox.faults import FaultSpecError, parse_faults
from batcher.sandbox.server import Sandbox, make_config, serve, start_sandbox

__all__ = [
    "FaultSpecError",
    "Sandbox",
    "SandboxConfig",
    "make_config",
    "parse_faults",
    "serve",
    "start_sandbox",
]
