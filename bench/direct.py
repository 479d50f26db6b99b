"""Benchmark: direct mode's throughput against the sandbox with a fixed per-request latency.

Run: .venv/bin/python bench/direct.py [--requests N] [--concurrency C] [--latency S]

The sandbox serves DeepSeek-style chat completions in its own process, each answered after
`--latency` seconds. With C requests in flight the most anyone can do is C / latency requests
a second. Two phases, each in its own subprocess (so its peak RSS is its own), send the same
N requests:

- `batcher`: a direct-mode batch through batcher.providers.direct (journal and all), from
  `submit` until `poll` says it ended;
- `minimal`: a hand-written asyncio loop with the SDK's async client and a semaphore, no
  journal, as the reference.

Targets: batcher reaches at least 0.8 of C / latency at concurrency 64, in under 256 MB.
Exits 1 on a miss.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TARGET_SHARE = 0.8
TARGET_RSS_MB = 256
MODEL = "deepseek-chat"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def request_body(i: int) -> dict:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Label the support ticket: billing or technical."},
            {"role": "user", "content": f"Ticket {i}: my invoice is wrong"},
        ],
        "max_completion_tokens": 16,
    }


def write_batch(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": request_body(i)}  # fmt: skip
            f.write(json.dumps(line) + "\n")


def phase_batcher(base_url: str, n: int, concurrency: int) -> dict:
    from batcher.providers.calls import RetryPolicy
    from batcher.providers.direct import DirectProvider, DirectSettings

    folder = Path(os.environ["BATCHER_STATE_DIR"])
    path = folder / "bench.jsonl"
    write_batch(path, n)
    provider = DirectProvider(
        "deepseek", base_url=base_url, api_key="k",
        settings=DirectSettings(concurrency=concurrency), policy=RetryPolicy(attempts=3),
    )  # fmt: skip
    start = time.perf_counter()
    state = provider.submit("bench", path, MODEL)
    while not state.ended:
        time.sleep(0.01)
        state = provider.poll(state.provider_batch_id)
    elapsed = time.perf_counter() - start
    ok = sum(1 for r in provider.results(state) if r.outcome == "succeeded")
    return {"elapsed": elapsed, "ok": ok, "rss_mb": peak_rss_mb()}


def phase_minimal(base_url: str, n: int, concurrency: int) -> dict:
    import openai

    async def main() -> int:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> int:
            async with gate:
                await client.post("/chat/completions", body=request_body(i), cast_to=object)
                return 1

        done = sum(await asyncio.gather(*(one(i) for i in range(n))))
        await client.close()
        return done

    start = time.perf_counter()
    ok = asyncio.run(main())
    return {"elapsed": time.perf_counter() - start, "ok": ok, "rss_mb": peak_rss_mb()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sandbox(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = f"from batcher.sandbox import serve; serve(port={port}, log_level='warning')"
    proc = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url + "/_sandbox/stats", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit("the sandbox did not start")
            time.sleep(0.1)
    body = json.dumps({"chat_latency_s": latency}).encode()
    request = urllib.request.Request(
        url + "/_sandbox/config", body, {"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=5).read()
    return proc, url


def run_phase(name: str, base_url: str, n: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-direct-") as folder:
        env = {**os.environ, "BATCHER_STATE_DIR": folder}
        args = [sys.executable, __file__, "--phase", name, "--base-url", base_url,
                "--requests", str(n), "--concurrency", str(concurrency)]  # fmt: skip
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"phase {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2560)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--phase", choices=("batcher", "minimal"))
    parser.add_argument("--base-url")
    args = parser.parse_args()
    phases = {"batcher": phase_batcher, "minimal": phase_minimal}
    if args.phase:
        print(json.dumps(phases[args.phase](args.base_url, args.requests, args.concurrency)))
        return
    sandbox, url = start_sandbox(args.latency)
    try:
        base_url = url + "/deepseek"
        results = {name: run_phase(name, base_url, args.requests, args.concurrency)
                   for name in ("minimal", "batcher")}  # fmt: skip
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    limit = args.concurrency / args.latency
    print(f"{args.requests} requests, concurrency {args.concurrency}, latency {args.latency} s: "
          f"limit {limit:.0f} req/s")  # fmt: skip
    for name, r in results.items():
        rate = r["ok"] / r["elapsed"]
        print(f"  {name:8} {rate:7.1f} req/s ({rate / limit:.2f} of the limit), "
              f"{r['ok']}/{args.requests} answered in {r['elapsed']:.2f} s, "
              f"peak RSS {r['rss_mb']:.0f} MB")  # fmt: skip
    mine = results["batcher"]
    share = mine["ok"] / mine["elapsed"] / limit
    ok = share >= TARGET_SHARE and mine["rss_mb"] < TARGET_RSS_MB and mine["ok"] == args.requests
    print(
        f"target: >= {TARGET_SHARE} of the limit and < {TARGET_RSS_MB} MB: "
        + ("met" if ok else "MISSED")
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
