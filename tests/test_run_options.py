"""A run keeps its options (--no-reuse, --poll-interval, --sandbox; the budget is in its spec
snapshot) and `resume` honours them: a --no-reuse run resumed pays for every request again."""

from __future__ import annotations

import json

from cli_helpers import (  # noqa: F401 - fixtures
    cli_db_url_fixture,
    env_sandbox_fixture,
    invoke,
)
from engine_helpers import (  # noqa: F401 - fixtures
    sandbox_fixture,
    served_fixture,
    write_job,
)


def test_resume_of_a_no_reuse_run_does_not_reuse(tmp_path, db_url, env_sandbox):
    spec = str(write_job(tmp_path, 3))
    assert invoke("run", spec, "--db", db_url, "--poll-interval", "0.03").exit_code == 0
    refused = invoke("run", spec, "--db", db_url, "--no-reuse", "--poll-interval", "0.03",
                     "--max-usd", "0.000001")  # fmt: skip
    assert refused.exit_code == 1 and "over the budget" in refused.stderr
    status = json.loads(invoke("status", "2", "--db", db_url, "--json").stdout)
    assert status["options"] == {"reuse": False, "poll_interval_s": 0.03, "sandbox": False}
    table = invoke("status", "2", "--db", db_url).stdout
    assert " --no-reuse --poll-interval 0.03 │" in table
    resumed = invoke("resume", "2", "--db", db_url, "--max-usd", "10", "--json")
    assert resumed.exit_code == 0, resumed.output
    outcome = json.loads(resumed.stdout)
    assert outcome["succeeded"] == 3 and float(outcome["cost_usd"]) > 0  # nothing reused
    again = json.loads(invoke("status", "2", "--db", db_url, "--json").stdout)
    assert again["options"]["reuse"] is False


def test_a_run_without_stored_options_resumes_with_the_defaults(tmp_path, db_url, env_sandbox):
    spec = str(write_job(tmp_path, 2))
    assert invoke("run", spec, "--db", db_url, "--poll-interval", "0.03").exit_code == 0
    refused = invoke("run", spec, "--db", db_url, "--max-usd", "0.000001")
    assert refused.exit_code == 1
    resumed = invoke("resume", "2", "--db", db_url, "--max-usd", "10", "--json")
    assert json.loads(resumed.stdout)["cost_usd"] == "0"  # reused, as the run asked
