"""Per-provider parameters, structured output and reasoning effort, end to end: the planner
renders each provider's own fields, plan refuses what a model rejects, and the runs go
through the real SDKs to the sandbox, which refuses what the services refuse."""

from __future__ import annotations

import orjson
import pytest
from engine_helpers import (  # noqa: F401 - fixtures
    POLL,
    attempts,
    batches,
    clients_fixture,
    db_fixture,
    sandbox_fixture,
    served_fixture,
)

from batcher.errors import UsageError
from batcher.run import engine
from batcher.spec import load_spec

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["billing", "technical", "account"]},
        "urgent": {"type": "boolean"},
    },
    "required": ["label", "urgent"],
    "additionalProperties": False,
}
SCHEMA_TOML = (
    "{ type = 'object', properties = { label = { type = 'string', enum = ['billing', "
    "'technical', 'account'] }, urgent = { type = 'boolean' } }, required = ['label', "
    "'urgent'], additionalProperties = false }"
)


def job(tmp_path, body: str, n: int = 6) -> str:
    """A spec (tiers nano on gpt-5-nano, frontier on Sonnet 4.6, plus `body`) and its input."""
    with open(tmp_path / "input.jsonl", "wb") as f:
        for i in range(n):
            f.write(orjson.dumps({"id": f"t{i}", "prompt": f"Ticket {i}: I cannot log in."}))
            f.write(b"\n")
    path = tmp_path / "job.toml"
    path.write_text(
        'name = "params"\ninput = "input.jsonl"\n'
        '[tiers]\nnano = "openai:gpt-5-nano"\nfrontier = "anthropic:claude-sonnet-4-6"\n'
        + body
        + "\n[batching]\nkeep_files = true\n"  # the tests read what was sent
    )
    return str(path)


def sent_lines(db, run_id: int) -> dict[str, list[dict]]:
    """The lines of the run's batch files (what the SDKs sent), by provider."""
    lines: dict[str, list[dict]] = {}
    for batch in batches(db, run_id):
        with open(batch["path"], "rb") as f:
            lines.setdefault(batch["provider"], []).extend(orjson.loads(x) for x in f)
    return lines


def run(db, clients, path: str):
    spec = load_spec(path)
    run_id = engine.start_run(db, spec, spec.input_file())
    engine.drive_run(db, run_id, clients=clients, poll=POLL)
    return run_id, attempts(db, run_id)


def test_defect4_params_are_rendered_per_provider_and_plan_refuses_what_a_model_rejects(
    db, sandbox, clients, tmp_path
):
    # temperature 0 on gpt-5-nano: every line would be refused, so plan refuses the spec.
    bad = job(tmp_path, '[defaults]\ntemperature = 0\n[validation]\nlabels = ["a"]\n')
    with pytest.raises(UsageError, match=r"tiers\.nano \(openai:gpt-5-nano\): temperature"):
        engine.start_run(db, load_spec(bad), load_spec(bad).input_file())
    # An OpenAI-only field given to every provider would reach Anthropic: refused too.
    bad = job(tmp_path, "[defaults.params]\nresponse_format = {type = 'json_object'}\n")
    with pytest.raises(UsageError, match=r"tiers\.frontier .*params\.response_format"):
        engine.start_run(db, load_spec(bad), load_spec(bad).input_file())
    # Keyed by provider, each gets its own.
    good = job(
        tmp_path,
        '[defaults]\nsystem = "You label tickets.\\nAllowed labels: billing, technical"\n'
        "[defaults.params.anthropic]\ntemperature = 0\nstop_sequences = ['###']\n"
        "[defaults.params.openai]\nseed = 7\n"
        "[routing]\nclassifier = 'fixed:nano'\n"
        "[[routing.rules]]\ntier = 'frontier'\nprompt_regex = 'Ticket [024]'\n"
        '[validation]\nlabels = ["billing", "technical"]\n',
    )
    spec = load_spec(good)
    run_id = engine.start_run(db, spec, spec.input_file())
    engine.drive_run(db, run_id, clients=clients, poll=POLL)
    lines = sent_lines(db, run_id)
    claude = [line["params"] for line in lines["anthropic"]]
    gpt = [line["body"] for line in lines["openai"]]
    assert claude and gpt
    assert all(p["temperature"] == 0 and p["stop_sequences"] == ["###"] for p in claude)
    assert not any({"openai", "anthropic", "seed"} & set(p) for p in claude)
    assert all(b["seed"] == 7 and "temperature" not in b and "anthropic" not in b for b in gpt)
    assert {a["status"] for a in attempts(db, run_id)} == {"succeeded"}


def test_defect5_json_schema_is_sent_as_structured_output(db, sandbox, clients, tmp_path):
    # A third of nano's free answers would be malformed; structured output constrains them.
    sandbox.configure(malformed={"gpt-5-nano": 0.34, "claude-sonnet-4-6": 0.34})
    path = job(
        tmp_path,
        "[routing]\nclassifier = 'fixed:nano'\n"
        "[[routing.rules]]\ntier = 'frontier'\nprompt_regex = 'Ticket [01]'\n"
        f"[validation]\njson_schema = {SCHEMA_TOML}\n",
        n=9,
    )
    run_id, rows = run(db, clients, path)
    assert [a["status"] for a in rows] == ["succeeded"] * 9  # every first attempt valid
    lines = sent_lines(db, run_id)
    fmt = lines["openai"][0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == SCHEMA
    output = lines["anthropic"][0]["params"]["output_config"]["format"]
    assert output["type"] == "json_schema" and output["schema"]["required"] == ["label", "urgent"]


def test_defect6_gpt5_requests_carry_the_specs_reasoning_effort(db, sandbox, clients, tmp_path):
    # max_tokens 512 covers reasoning and answer; at the default (medium) effort the sandbox,
    # like the service, would spend most of it reasoning and cut answers off.
    path = job(
        tmp_path,
        "[defaults]\nmax_tokens = 512\n"
        'system = "You label tickets.\\nAllowed labels: billing, technical"\n'
        "[routing]\nclassifier = 'fixed:nano'\n"
        '[validation]\nlabels = ["billing", "technical"]\n',
        n=12,
    )
    run_id, rows = run(db, clients, path)
    bodies = [line["body"] for line in sent_lines(db, run_id)["openai"]]
    assert {b["reasoning_effort"] for b in bodies} == {"low"}
    assert [a["status"] for a in rows] == ["succeeded"] * 12
    assert all(0 < a["reasoning_tokens"] <= 256 for a in rows)


def test_defect7_cache_plan_ttl_and_report_compare_expected_reads(db, sandbox, clients, tmp_path):
    from batcher.report.build import build_report

    system = "hello" + " hello" * 2999  # 3,000 tokens: over Sonnet 4.6's measured 2,048
    path = job(
        tmp_path,
        f'[defaults]\nmax_tokens = 300\nsystem = "{system}"\n'
        "[routing]\nclassifier = 'fixed:frontier'\n",
        n=250,  # 100 cold 1h writes (2x) are repaid from about 212 requests
    )
    # The service turns out colder than planned: every request of the batch misses.
    sandbox.configure(cold_requests={"anthropic": 1000})
    run_id, rows = run(db, clients, path)
    assert len(rows) == 250  # one round
    params = [line["params"] for line in sent_lines(db, run_id)["anthropic"]]
    assert {p["system"][0]["cache_control"]["ttl"] for p in params} == {"1h"}
    assert sum(a["cache_read_tokens"] for a in rows) == 0
    (group,) = build_report(db, [run_id]).cache_groups
    # planned: the first 100 of the batch miss, the other 150 read the prefix
    assert group.expected_read_tokens >= 150 * 3000 and group.read_low
