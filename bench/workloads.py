"""Finding and generating the benches' inputs, from a clean clone beside `../shared`.

The workload generator is `shared/tools/make_workload.py`, looked for in order:
`$BATCHER_SHARED`, `shared/` beside this clone, and `shared/` beside the main checkout when
this clone is a git worktree elsewhere. Generated workloads are cached in `state/bench/`
(written to a temporary name first, so an interrupted generation leaves nothing half-made).
A missing generator ends the bench with exit code 1 and says where it looked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOL = Path("tools") / "make_workload.py"


def _main_checkout() -> Path | None:
    """The main checkout of this clone when it is a git worktree (None otherwise)."""
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(common).parent if common else None


def shared_candidates() -> list[Path]:
    """Where the shared folder may be, in the order it is looked for."""
    found = []
    if os.environ.get("BATCHER_SHARED"):
        found.append(Path(os.environ["BATCHER_SHARED"]))
    found.append(REPO.parent / "shared")
    main = _main_checkout()
    if main is not None and main != REPO:
        found.append(main.parent / "shared")
    return found


def shared_file(relative: str | Path) -> Path:
    """`relative` inside the shared folder; exits 1, naming the places tried, when absent."""
    tried = [folder / relative for folder in shared_candidates()]
    for path in tried:
        if path.is_file():
            return path
    places = ", ".join(str(p) for p in tried)
    sys.exit(f"bench: {relative} not found (looked in {places}); set BATCHER_SHARED")


def workload(items: int, *args: str, name: str) -> Path:
    """state/bench/workload-{items}-{name}.jsonl, made by the generator with `args` when it
    is not there yet."""
    path = REPO / "state" / "bench" / f"workload-{items}-{name}.jsonl"
    if path.exists():
        return path
    tool = shared_file(TOOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating {path} ...", file=sys.stderr)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        done = subprocess.run([sys.executable, str(tool), "--items", str(items), *args], stdout=out)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        sys.exit(f"bench: {tool} failed with exit code {done.returncode}")
    tmp.rename(path)
    return path
