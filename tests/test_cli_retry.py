"""`batcher retry RUN`: a new round inside the same run for the items that did not succeed,
estimated and budget-checked before anything is sent, then driven and reported as any round."""

from __future__ import annotations

import json
import re

from cli_helpers import (  # noqa: F401 - fixtures
    cli_db_url_fixture,
    env_sandbox_fixture,
    invoke,
)
from engine_helpers import (  # noqa: F401 - fixtures
    batches,
    sandbox_fixture,
    served_fixture,
    write_job,
)

from batcher.store import open_store


def failed_run(tmp_path, db_url, sandbox) -> None:
    """Run 1: three items whose answers nano gets wrong, with nothing above nano to climb."""
    spec = write_job(tmp_path, 3)
    spec.write_text(spec.read_text().replace('["nano", "mid", "frontier"]', '["nano"]'))
    sandbox.configure(malformed={"gpt-5-nano": 1.0})
    ran = invoke("run", str(spec), "--db", db_url, "--poll-interval", "0.03", "--json")
    assert ran.exit_code == 1 and json.loads(ran.stdout)["failed"] == 3


def test_retry_sends_the_failed_items_again_in_the_same_run(tmp_path, db_url, env_sandbox):
    failed_run(tmp_path, db_url, env_sandbox)
    result = invoke("retry", "1", "--failed", "--tier", "mid", "--db", db_url,
                    "--poll-interval", "0.03")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"run 1: round 2 retries 3 items \(3 failed\), estimated \$0\.\d{4,}; submitting",
        result.stderr.splitlines()[0],
    ), result.stderr
    assert "By tier" in result.stdout
    assert "run 1 completed: 3/3 succeeded, 0 failed, 0 cancelled; paid $" in result.stdout
    rounds = [(b["round"], b["provider"]) for b in batches(open_store(db_url), 1)]
    assert rounds == [(1, "openai"), (2, "openai")]
    again = invoke("retry", "1", "--db", db_url)
    assert again.exit_code == 0
    assert again.stderr == "run 1: nothing to retry: no item is failed or cancelled\n"


def test_retry_over_budget_sends_nothing_and_leaves_the_run_as_it_was(
    tmp_path, db_url, env_sandbox
):
    failed_run(tmp_path, db_url, env_sandbox)
    result = invoke("retry", "1", "--tier", "mid", "--max-usd", "0.000001", "--db", db_url)
    assert result.exit_code == 1
    assert re.fullmatch(
        r"Error: run 1: retrying 3 items needs up to \$[\d.]+ more \(\$[\d.]+ in all\) and the "
        r"run spent \$[\d.]+ of its max_usd \$0\.000001; nothing was submitted\. Raise the cap "
        r"with `batcher retry 1 --max-usd 0\.01`\n",
        result.stderr,
    ), result.stderr
    status = json.loads(invoke("status", "1", "--db", db_url, "--json").stdout)
    assert (status["status"], status["failed"], len(status["batches"])) == ("completed", 3, 1)


def test_retry_of_a_run_still_going_says_to_resume(tmp_path, db_url, env_sandbox):
    assert invoke("submit", str(write_job(tmp_path, 2)), "--db", db_url).exit_code == 3
    result = invoke("retry", "1", "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: run 1 is running with 2 unfinished items: `batcher resume 1` finishes it; "
        "retry a finished run\n"
    )
