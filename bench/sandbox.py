"""Benchmark: 10,000 requests sharing a 2,500-token system prompt through the sandbox.

Run: .venv/bin/python bench/sandbox.py [--requests N] [--provider openai|anthropic|both]
Prints the time to upload + create + wait + download, and the cached-token share. The
sandbox models a batch's concurrency: the first `cold_requests` of a cache group in a batch
(16 on OpenAI, 100 on Anthropic by default) miss and write; the others read.
"""

from __future__ import annotations

import argparse
import json
import time

import anthropic
import openai

from batcher.plan.tokens import count_tokens
from batcher.sandbox import start_sandbox
from batcher.sandbox.config import SandboxConfig

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--provider", choices=["openai", "anthropic", "both"], default="both")
    args = parser.parse_args()
    system = system_prompt()
    print(f"shared system prompt: {count_tokens(system)} tokens; default sandbox speed")
    with start_sandbox() as box:
        if args.provider in ("openai", "both"):
            bench_openai(box, system, args.requests)
        if args.provider in ("anthropic", "both"):
            bench_anthropic(box, system, args.requests)


if __name__ == "__main__":
    main()
