"""End-to-end benchmark: `batcher run` against `batcher sandbox`, two processes, same machine.

    .venv/bin/python bench/e2e.py                     # 50,000 items, OpenAI-only and mixed
    .venv/bin/python bench/e2e.py --items 500000
    .venv/bin/python bench/e2e.py --job mixed --turnaround 0.2 --keep

Input: ../shared/tools/make_workload.py (found beside the repo) with 4 shared 2,000-token
system prompts, written to a temporary folder with the run's state (database, batch files).
The sandbox runs as its own `batcher sandbox` process with a fixed batch turnaround
(`--turnaround` seconds from create to ended, whatever the batch's size). `batcher run` runs
as a subprocess against it. Printed per job:

  wall      seconds from starting `batcher run` to its exit
  batcher   CPU seconds (user + system) of batcher's process tree
  sandbox   CPU seconds of the sandbox process during the run
  overlap   wall / (batcher CPU + sandbox CPU): 1.0 when the two take turns, lower when
            batcher works while the provider does
  others    CPU seconds the rest of the machine used meanwhile (/proc/stat): other work on
            this 2-core machine lengthens the wall without being batcher's or the sandbox's
  rss       peak RSS of batcher's process tree (MB): the larger of the kernel's peak for the
            process and the sum over the tree sampled every 20 ms
  minimal   the same job's OpenAI batches sent by a minimal hand-written loop (read the input,
            write the batch lines, upload, create, poll, read the results; no database, one
            batch after another): its wall, and batcher's wall / its wall

Targets (exit 1 on a miss): overlap at most 0.65 and peak RSS under 256 MB, for each job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOAD_TOOL = REPO.parent / "shared" / "tools" / "make_workload.py"
BIN = Path(sys.executable).parent
TARGET_OVERLAP, TARGET_RSS_MB = 0.65, 256
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
JOBS = {
    "openai": {
        "nano": "openai:gpt-5-nano",
        "mid": "openai:gpt-5-mini",
        "frontier": "openai:gpt-5",
    },
    "mixed": {
        "nano": "openai:gpt-5-nano",
        "mid": "openai:gpt-5-mini",
        "frontier": "anthropic:claude-sonnet-4-6",
    },
}


def job_toml(tiers: dict[str, str]) -> str:
    lines = ['name = "e2e"', "", "[tiers]"]
    lines += [f'{tier} = "{model}"' for tier, model in tiers.items()]
    # Effort "minimal" keeps the sandbox's hidden reasoning tokens within the cap: every
    # answer succeeds and the run is one round.
    lines += ["", "[defaults]", "max_tokens = 512", 'reasoning_effort = "minimal"']
    return "\n".join(lines) + "\n"


def make_input(items: int, folder: Path) -> Path:
    if not WORKLOAD_TOOL.exists():
        sys.exit(f"e2e: {WORKLOAD_TOOL} not found (the shared folder sits beside the repo)")
    path = folder / f"workload-{items}.jsonl"
    with open(path, "wb") as out:
        command = [sys.executable, str(WORKLOAD_TOOL), "--items", str(items), "--prompts", "4"]
        subprocess.run(command, stdout=out, check=True)
    return path


# --- process figures from /proc --------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` itself (its threads included), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU seconds every core spent on anything but idling and I/O wait, since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


def tree_pids(root: int) -> list[int]:
    pids, children = [root], {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    for pid in pids:
        pids.extend(children.get(pid, []))
    return pids


def tree_rss_mb(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total / 1e6


def tree_cpu_seconds(root: int) -> float:
    total = 0.0
    for pid in tree_pids(root):
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    """The largest sum of RSS over `pid`'s process tree, sampled every 20 ms; with a
    `sandbox` pid, also a timeline: every second, the CPU each side used in it and the RSS."""

    def __init__(self, pid: int, sandbox: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_mb, self.done = pid, 0.0, threading.Event()
        self.sandbox, self.timeline = sandbox, []

    def run(self) -> None:
        start, last = time.perf_counter(), (0.0, 0.0, 0.0)
        while not self.done.wait(0.02):
            rss = tree_rss_mb(self.pid)
            self.peak_mb = max(self.peak_mb, rss)
            now = time.perf_counter() - start
            if self.sandbox is not None and now - last[0] >= 1.0:
                mine, theirs = tree_cpu_seconds(self.pid), cpu_seconds(self.sandbox)
                self.timeline.append((now, mine - last[1], theirs - last[2], rss))
                last = (now, mine, theirs)


# --- the sandbox -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def start_sandbox(env: dict, turnaround: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [str(BIN / "batcher"), "sandbox", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            # A fixed turnaround: a quarter validating, half in progress, a quarter
            # finalizing, nothing per request.
            phases = {"validating_s": turnaround / 4, "in_progress_s": turnaround / 2}
            post_json(f"{url}/_sandbox/config", phases | {
                "finalizing_s": turnaround / 4, "per_request_s": 0.0,
            })  # fmt: skip
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                problem = proc.stderr.read().decode()[-2000:]
                raise SystemExit(f"e2e: the sandbox did not start: {problem}") from None
            time.sleep(0.1)


def stop_sandbox(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- one job ---------------------------------------------------------------------------


def run_batcher(
    job: str, input_path: Path, work: Path, turnaround: float, timeline: bool = False
) -> dict:
    state = work / f"state-{job}"
    state.mkdir()
    spec = work / f"e2e-{job}.toml"
    spec.write_text(job_toml(JOBS[job]))
    env = os.environ | {"BATCHER_STATE_DIR": str(state), "BATCHER_DB": str(state / "b.db")}
    sandbox, url = start_sandbox(env, turnaround)
    out_path, err_path = work / f"{job}.out", work / f"{job}.err"
    try:
        sandbox_cpu_before, busy_before = cpu_seconds(sandbox.pid), machine_busy_seconds()
        command = [str(BIN / "batcher"), "run", str(spec), "--input", str(input_path)]
        command += ["--sandbox", "--no-reuse", "--json"]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
            sampler = RssSampler(proc.pid, sandbox.pid if timeline else None)
            sampler.start()
            # wait4: the CPU and kernel peak RSS of this child and what it reaped, alone.
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.done.set()
        for at, mine, theirs, rss in sampler.timeline:
            print(f"  {at:5.1f} s  batcher {mine:4.2f}  sandbox {theirs:4.2f}  rss {rss:4.0f} MB")
        sandbox_cpu = cpu_seconds(sandbox.pid) - sandbox_cpu_before
        busy = machine_busy_seconds() - busy_before
    finally:
        stop_sandbox(sandbox)
    if proc.returncode != 0:
        sys.exit(f"e2e: batcher run exited {proc.returncode}: {err_path.read_text()[-2000:]}")
    outcome = json.loads(out_path.read_text())
    left = sum(f.stat().st_size for f in state.rglob("*.jsonl"))
    batcher_cpu = usage.ru_utime + usage.ru_stime
    return {
        "job": job,
        "wall": wall,
        "items": outcome.get("items"),
        "succeeded": outcome.get("succeeded"),
        "batcher_cpu": batcher_cpu,
        "sandbox_cpu": sandbox_cpu,
        # CPU the rest of the machine took meanwhile: on 2 cores, other work lengthens the
        # wall (and the overlap ratio) without being batcher's.
        "others_cpu": max(0.0, busy - batcher_cpu - sandbox_cpu),
        "left_mb": left / 1e6,
        "rss_mb": max(sampler.peak_mb, usage.ru_maxrss * 1024 / 1e6),  # ru_maxrss in KiB
    }


# --- the minimal reference --------------------------------------------------------------


def minimal_loop(input_path: str, folder: str, base_url: str) -> None:
    """The least a client does to send the OpenAI job: batch lines written per model in
    files of at most 200 MB, each uploaded and created in turn, all polled, results read."""
    import orjson
    from openai import OpenAI

    client = OpenAI(base_url=base_url + "/v1", api_key="k")
    files, out, size = [], None, 0
    with open(input_path, "rb") as f:
        for n, line in enumerate(f):
            item = orjson.loads(line)
            messages = [
                {"role": "system", "content": item["system"]},
                {"role": "user", "content": item["prompt"]},
            ]
            body = {"model": "gpt-5-nano", "messages": messages, "max_completion_tokens": 512}
            body["reasoning_effort"] = "minimal"
            request = {"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions"}
            encoded = orjson.dumps(request | {"body": body}) + b"\n"
            if out is None or size + len(encoded) > 200_000_000:
                out = open(f"{folder}/minimal-{len(files)}.jsonl", "wb")  # noqa: SIM115
                files.append(out)
                size = 0
            out.write(encoded)
            size += len(encoded)
    batches = []
    for out in files:
        out.close()
        with open(out.name, "rb") as f:
            uploaded = client.files.create(file=f, purpose="batch")
        batches.append(
            client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            ).id
        )
    done = 0
    for batch_id in batches:
        while (batch := client.batches.retrieve(batch_id)).status != "completed":
            time.sleep(0.05)
        with client.files.with_streaming_response.content(batch.output_file_id) as response:
            done += sum(1 for line in response.iter_lines() if orjson.loads(line)["response"])
    print(json.dumps({"succeeded": done}))


def run_minimal(input_path: Path, work: Path, turnaround: float) -> dict:
    state = work / "state-minimal"
    state.mkdir()
    env = os.environ | {"BATCHER_STATE_DIR": str(state)}
    sandbox, url = start_sandbox(env, turnaround)
    try:
        command = [sys.executable, __file__, "--minimal", str(input_path), str(state), url]
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    finally:
        stop_sandbox(sandbox)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("e2e: the minimal loop failed")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, **json.loads(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--job", choices=[*JOBS, "both"], default="both")
    parser.add_argument("--turnaround", type=float, default=0.2, help="seconds a batch takes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--no-minimal", action="store_true", help="skip the minimal loop")
    parser.add_argument(
        "--timeline", action="store_true", help="print each second's CPU of both sides"
    )
    parser.add_argument("--minimal", nargs=3, help=argparse.SUPPRESS)  # INPUT FOLDER URL
    args = parser.parse_args()
    if args.minimal:
        minimal_loop(*args.minimal)
        return
    work = Path(tempfile.mkdtemp(prefix="batcher-e2e-"))
    missed = []
    try:
        print(f"e2e: {args.items} items, 4 shared prompts, turnaround {args.turnaround} s")
        input_path = make_input(args.items, work)
        minimal = None
        if not args.no_minimal:
            minimal = run_minimal(input_path, work, args.turnaround)
            print(
                f"minimal {minimal['succeeded']} requests to OpenAI, one batch after another: "
                f"wall {minimal['wall']:.1f} s, CPU {minimal['cpu']:.1f} s"
            )
        for job in [*JOBS] if args.job == "both" else [args.job]:
            figures = run_batcher(job, input_path, work, args.turnaround, args.timeline)
            missed += report(figures)
            if minimal:
                ratio = figures["wall"] / minimal["wall"]
                print(f"{job:7} wall / minimal loop's wall: {ratio:.2f}")
    finally:
        if args.keep:
            print(f"e2e: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if missed:
        print("e2e: MISSED " + "; ".join(missed))
        sys.exit(1)
    print("e2e: all targets met")


def report(f: dict) -> list[str]:
    overlap = f["wall"] / (f["batcher_cpu"] + f["sandbox_cpu"])
    print(
        f"{f['job']:7} {f['items']} items ({f['succeeded']} succeeded): wall {f['wall']:.1f} s, "
        f"batcher CPU {f['batcher_cpu']:.1f} s, sandbox CPU {f['sandbox_cpu']:.1f} s, "
        f"overlap {overlap:.2f} (target <= {TARGET_OVERLAP}), peak RSS {f['rss_mb']:.0f} MB "
        f"(target < {TARGET_RSS_MB}), batch files left {f['left_mb']:.0f} MB; other processes "
        f"took {f['others_cpu']:.1f} s CPU meanwhile"
    )
    missed = []
    if overlap > TARGET_OVERLAP:
        missed.append(f"{f['job']} overlap {overlap:.2f} > {TARGET_OVERLAP}")
    if f["rss_mb"] >= TARGET_RSS_MB:
        missed.append(f"{f['job']} peak RSS {f['rss_mb']:.0f} MB >= {TARGET_RSS_MB}")
    return missed


if __name__ == "__main__":
    main()
