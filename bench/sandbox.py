"""Benchmark: 10,000 requests sharing a 2,500-token system prompt through the sandbox.

Run: .venv/bin/python bench/sandbox.py [--requests N] [--provider openai|anthropic|both]
Prints the time to upload + create + wait + download, and the cached-token share. The
sandbox models a batch's concurrency: the first `cold_requests` of a cache group in a batch
(16 on OpenAI, 100 on Anthropic by default) miss and write; the others read.

    .venv/bin/python bench/sandbox.py --cpu [--requests 10000]

The sandbox's CPU per request, in process (no HTTP): an upload's multipart split, the
batch's validation and its materializing (results, usage, output file) for e2e.py's
workload (4 shared 2,000-token system prompts), best of 3; next to a minimal loop that does
the least any emulator must: parse each line, tokenize its user text, write a result line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import openai
import orjson

from batcher.plan.tokens import _quicktok, count_tokens, encoding
from batcher.sandbox import start_sandbox
from batcher.sandbox.config import SandboxConfig
from batcher.sandbox.http import Joined, split_parts
from batcher.sandbox.openai_batches import create_batch
from batcher.sandbox.state import SandboxState

COLD = SandboxConfig().cold_requests

CHAT = "/v1/chat/completions"


def system_prompt(tokens: int = 2500) -> str:  # Sonnet 4.6 caches from 2,048
    words, text = [], ""
    while count_tokens(text) < tokens:
        words.extend(f"Guideline {len(words)}: label the ticket by its main intent.".split())
        text = " ".join(words)
    return text


def bench_openai(box, system: str, n: int) -> None:
    client = openai.OpenAI(base_url=box.openai_base_url, api_key="k")
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": CHAT,
            "body": {
                "model": "gpt-5-nano",
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"Ticket {i}: my invoice is wrong"},
                ],
            },
        }
        for i in range(n)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    start = time.perf_counter()
    upload = client.files.create(file=("bench.jsonl", data), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint=CHAT, completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    text = client.files.content(batch.output_file_id).text
    elapsed = time.perf_counter() - start
    rows = {r["custom_id"]: r for r in map(json.loads, text.splitlines())}
    cached = [
        rows[f"r{i}"]["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"]
        for i in range(n)
    ]
    cold = min(n, COLD["openai"])
    hits = sum(1 for c in cached[cold:] if c > 0)
    print(
        f"openai    {n} requests, {len(data) / 1e6:.1f} MB: {batch.status} in {elapsed:.2f} s; "
        f"first {cold} cold (cached {max(cached[:cold])}), cached on {hits}/{n - cold} "
        f"others ({cached[-1]} tokens each)"
    )
    assert not any(cached[:cold]) and hits == n - cold


def bench_anthropic(box, system: str, n: int) -> None:
    client = anthropic.Anthropic(base_url=box.anthropic_base_url, api_key="k")
    block = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    requests = [
        {
            "custom_id": f"a-{i}",
            "params": {
                "model": "claude-sonnet-4-6",
                "max_tokens": 64,
                "system": block,
                "messages": [{"role": "user", "content": f"Ticket {i}: my invoice is wrong"}],
            },
        }
        for i in range(n)
    ]
    start = time.perf_counter()
    batch = client.messages.batches.create(requests=requests)
    while batch.processing_status != "ended":
        time.sleep(0.05)
        batch = client.messages.batches.retrieve(batch.id)
    got = {r.custom_id: r.result.message.usage for r in client.messages.batches.results(batch.id)}
    elapsed = time.perf_counter() - start
    cold = min(n, COLD["anthropic"])
    misses = sum(1 for i in range(cold) if got[f"a-{i}"].cache_read_input_tokens == 0)
    reads = sum(1 for i in range(cold, n) if got[f"a-{i}"].cache_read_input_tokens > 0)
    print(
        f"anthropic {n} requests: ended in {elapsed:.2f} s; first {cold} cold, each wrote "
        f"{got['a-0'].cache_creation_input_tokens}; read on {reads}/{n - cold} others"
    )
    assert misses == cold and reads == n - cold


WORKLOAD_TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "make_workload.py"


def workload_file(n: int) -> bytes:
    """Batch input lines as batcher writes them for e2e.py's workload."""
    command = [sys.executable, str(WORKLOAD_TOOL), "--items", str(n), "--prompts", "4"]
    items = map(
        json.loads, subprocess.run(command, capture_output=True, check=True).stdout.splitlines()
    )
    lines = []
    for item in items:
        messages = [
            {"role": "system", "content": item["system"]},
            {"role": "user", "content": item["prompt"]},
        ]
        body = {"model": "gpt-5-nano", "messages": messages, "max_completion_tokens": 512}
        body["reasoning_effort"] = "minimal"
        lines.append({"custom_id": item["id"], "method": "POST", "url": CHAT, "body": body})
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def sandbox_cpu(data: bytes) -> tuple[float, float, float]:
    """CPU seconds of the multipart split, create_batch and materialize of one upload."""
    delimiter = b"--bench"
    head = b'\r\nContent-Disposition: form-data; name="file"; filename="b.jsonl"\r\n\r\n'
    body = delimiter + head + data + b"\r\n" + delimiter + b"--\r\n"
    chunks = [body[at : at + 65536] for at in range(0, len(body), 65536)]
    state = SandboxState(SandboxConfig())
    start = time.process_time()
    fields = split_parts(Joined(chunks), delimiter)
    split = time.process_time()
    batch = create_batch(state, CHAT, "file-bench", "24h", None, fields["file"].value)
    created = time.process_time()
    batch.materialize(state)
    done = time.process_time()
    assert batch.counts["completed"] == len(batch.lines), batch.errors[:1]
    return split - start, created - split, done - created


def minimal_cpu(data: bytes) -> float:
    """CPU seconds of the least an emulator does: parse, tokenize the user text, answer
    (with the faster of the two cl100k tokenizers at hand)."""
    encode = _quicktok("cl100k_base").encode_ordinary
    start = time.process_time()
    out = []
    for raw in data.splitlines():
        line = orjson.loads(raw)
        prompt = len(encode(line["body"]["messages"][-1]["content"]))
        usage = {"prompt_tokens": prompt, "completion_tokens": 8, "total_tokens": prompt + 8}
        result = {"custom_id": line["custom_id"], "response": {"body": {"usage": usage}}}
        out.append(orjson.dumps(result) + b"\n")
    b"".join(out)
    return time.process_time() - start


def bench_cpu(n: int) -> None:
    data = workload_file(n)
    encoding().encode_ordinary("warm")  # the tokenizer's tables load once per process
    runs = [sandbox_cpu(data) for _ in range(3)]
    split, validate, materialize = min(runs, key=sum)
    total = split + validate + materialize
    minimal = min(minimal_cpu(data) for _ in range(3))
    print(
        f"sandbox   {n} requests, {len(data) / 1e6:.0f} MB: split {split:.3f} s, validate "
        f"{validate:.3f} s, materialize {materialize:.3f} s: {total * 1e6 / n:.0f} us a request"
    )
    print(
        f"minimal   {minimal * 1e6 / n:.0f} us a request; sandbox / minimal {total / minimal:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--provider", choices=["openai", "anthropic", "both"], default="both")
    parser.add_argument("--cpu", action="store_true", help="CPU per request, in process")
    args = parser.parse_args()
    if args.cpu:
        bench_cpu(args.requests)
        return
    system = system_prompt()
    print(f"shared system prompt: {count_tokens(system)} tokens; default sandbox speed")
    with start_sandbox() as box:
        if args.provider in ("openai", "both"):
            bench_openai(box, system, args.requests)
        if args.provider in ("anthropic", "both"):
            bench_anthropic(box, system, args.requests)


if __name__ == "__main__":
    main()
