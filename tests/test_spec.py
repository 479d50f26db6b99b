"""Job specs: loading, file: references, and errors that name the file, the key and the fix."""

from __future__ import annotations

import pytest

from batcher.errors import SpecError, UsageError
from batcher.spec import JobSpec, load_spec, parse_spec, spec_from_snapshot

TIERS = """name = "labels"

[tiers]
nano = "openai:gpt-5-nano"
mid = "openai:gpt-5-mini"
frontier = "anthropic:claude-sonnet-4-5"
"""


def write_spec(tmp_path, text: str, name: str = "job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def spec_error(tmp_path, text: str) -> SpecError:
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.exit_code == 2
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    return caught.value


def test_full_spec_loads_with_file_references(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "billing.txt").write_text("You handle billing.\n")
    (tmp_path / "schema.json").write_text('{"type": "object", "required": ["label"]}')
    path = write_spec(
        tmp_path,
        'input = "items.jsonl"\nmax_usd = 25.5\n'
        + TIERS
        + """
[prompts]
billing = "file:prompts/billing.txt"

[defaults]
system = "You label tickets."
max_tokens = 64
temperature = 0

[routing]
classifier = "heuristic"
ladder = ["nano", "mid", "frontier"]

[[routing.rules]]
tier = "nano"
prompt_regex = "^Classify"

[validation]
json = true
json_schema = "file:schema.json"
labels = ["billing", "bug"]
label_field = "label"

[schedule]
cron = "0 2 * * *"
""",
    )
    spec = load_spec(path)
    assert spec.name == "labels" and spec.path == str(path)
    assert spec.prompts == {"billing": "You handle billing.\n"}
    assert spec.validation.json_schema == {"type": "object", "required": ["label"]}
    assert spec.validation.json_output is True
    assert (spec.defaults.max_tokens, spec.defaults.temperature) == (64, 0)
    assert spec.model_of("frontier") == ("anthropic", "claude-sonnet-4-5")
    assert spec.frontier_tier == "frontier"
    assert spec.max_usd == 25.5 and spec.schedule.cron == "0 2 * * *"
    assert spec.input_file() == str(tmp_path / "items.jsonl")
    assert spec.input_file("other.jsonl") == "other.jsonl"
    again = spec_from_snapshot(spec.snapshot())
    assert again == spec  # the stored snapshot holds the file contents, not the references


def test_defaults_apply(tmp_path):
    spec = load_spec(write_spec(tmp_path, TIERS))
    assert spec.routing.ladder == ["nano", "mid", "frontier"]
    assert spec.defaults.system is None and spec.defaults.max_tokens == 1024
    assert spec.max_usd is None and spec.schedule is None


def test_input_file_without_input_is_a_usage_error(tmp_path):
    path = write_spec(tmp_path, TIERS)
    with pytest.raises(UsageError, match="no input given: pass --input FILE or set `input`"):
        load_spec(path).input_file()


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        (
            "colour = 1\n",  # lands in [tiers]: TOML puts it under the last table
            "tiers.colour",
            "Input should be a valid string",
        ),
        (
            '[defaults]\nsystm = "x"\n',
            "defaults.systm",
            "unknown key: check the spelling; allowed here: system, max_tokens, "
            "temperature, reasoning_effort, params",
        ),
        (
            "[routing]\nladder = ['nano', 'huge']\n",
            "routing.ladder[1]",
            "'huge' is not a tier: use nano, mid, frontier",
        ),
        (
            "[[routing.rules]]\ntier = 'big'\n",
            "routing.rules[0].tier",
            "'big' is not a tier: use nano, mid, frontier",
        ),
        (
            "[routing]\nclassifier = 'fixed:huge'\n",
            "routing.classifier",
            "'fixed:huge' names no tier: use fixed:TIER with TIER one of nano, mid, frontier",
        ),
        (
            "[routing]\nclassifier = 'magic'\n",
            "routing.classifier",
            '\'magic\': use "heuristic" or "fixed:TIER"',
        ),
        (
            "[validation]\nregex = '(['\n",
            "validation.regex",
            "not a valid regular expression: unterminated character set at position 1",
        ),
        (
            "[[routing.rules]]\ntier = 'nano'\nprompt_regex = '(['\n",
            "routing.rules[0].prompt_regex",
            "not a valid regular expression: unterminated character set at position 1",
        ),
        (
            "[validation]\njson_schema = {type = 'nope'}\n",
            "validation.json_schema",
            "not a valid JSON Schema: 'nope' is not valid under any of the given schemas",
        ),
        (
            "[defaults]\nmax_tokens = 0\n",
            "defaults.max_tokens",
            "Input should be greater than or equal to 1",
        ),
        (
            "[retry]\nmax_attempts = 'four'\n",
            "retry.max_attempts",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, extra, key, problem):
    error = spec_error(tmp_path, TIERS + extra)
    assert (error.key, error.problem) == (key, problem)
    assert str(error) == f"{error.path}: {key}: {problem}"


def test_unknown_top_level_key(tmp_path):
    error = spec_error(tmp_path, 'colour = "red"\n' + TIERS)
    assert error.key == "colour"
    assert error.problem.startswith("unknown key: check the spelling; allowed here: name, ")
    assert "max_usd" in error.problem and "path" not in error.problem.split("here: ")[1].split(", ")


def test_path_is_not_a_key_of_the_file(tmp_path):
    error = spec_error(tmp_path, 'path = "/elsewhere"\n' + TIERS)
    assert error.key == "path" and error.problem.startswith("unknown key")


@pytest.mark.parametrize("ref", ["mistral:large", "gpt-5-nano", "openai:"])
def test_bad_provider_model(tmp_path, ref):
    error = spec_error(tmp_path, TIERS.replace("openai:gpt-5-nano", ref))
    assert error.key == "tiers.nano"
    assert error.problem == (
        f"{ref!r}: write PROVIDER:MODEL with PROVIDER one of openai, anthropic, google, xai, "
        'deepseek, e.g. "openai:gpt-5-mini"'
    )


def test_no_tiers(tmp_path):
    error = spec_error(tmp_path, 'name = "x"\n')
    assert (error.key, error.problem) == ("tiers", "required key is missing: add it")
    error = spec_error(tmp_path, 'name = "x"\n[tiers]\n')
    assert error.key == "tiers"
    assert error.problem == 'name at least one tier, e.g. nano = "openai:gpt-5-nano"'


def test_missing_file_reference(tmp_path):
    error = spec_error(tmp_path, TIERS + "[prompts]\nbilling = 'file:prompts/missing.txt'\n")
    assert error.key == "prompts.billing"
    assert error.problem == (
        f"cannot read {tmp_path / 'prompts' / 'missing.txt'}: No such file or directory"
    )


def test_file_reference_to_invalid_json(tmp_path):
    (tmp_path / "schema.json").write_text("{nope")
    error = spec_error(tmp_path, TIERS + "[validation]\njson_schema = 'file:schema.json'\n")
    assert error.key == "validation.json_schema"
    assert error.problem.startswith(f"{tmp_path / 'schema.json'} is not valid JSON: ")


def test_invalid_toml(tmp_path):
    error = spec_error(tmp_path, TIERS + "max_usd = \n")
    assert error.key == ""
    assert error.problem == "not valid TOML: Invalid value (at line 7, column 11)"


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "nope.toml")
    assert str(caught.value) == (
        f"{tmp_path / 'nope.toml'}: cannot read the spec: No such file or directory"
    )


def test_parse_spec_validates_a_mapping():
    spec = parse_spec(
        {"name": "x", "tiers": {"a": "openai:gpt-5-nano"}, "routing": {"ladder": ["a"]}}
    )
    assert isinstance(spec, JobSpec) and spec.frontier_tier == "a"
    with pytest.raises(SpecError, match=r"^<spec>: routing\.ladder\[1\]: 'b' is not a tier"):
        parse_spec(
            {"name": "x", "tiers": {"a": "openai:gpt-5-nano"}, "routing": {"ladder": ["a", "b"]}}
        )


def test_one_and_two_tier_specs_need_no_ladder(tmp_path):
    one = load_spec(write_spec(tmp_path, 'name = "x"\n[tiers]\nonly = "openai:gpt-5-mini"\n'))
    assert one.routing.ladder == ["only"] and one.frontier_tier == "only"
    two = parse_spec(
        {"name": "x", "tiers": {"big": "anthropic:claude-sonnet-4-5", "small": "openai:gpt-5-nano"}}
    )
    assert two.routing.ladder == ["big", "small"]  # spec order, as written
    assert spec_from_snapshot(two.snapshot()).routing.ladder == ["big", "small"]


def test_unknown_key_inside_a_table_of_tables(tmp_path):
    text = (
        TIERS + '\n[pricing."openai:gpt-5-nano"]\ninput_mtok = 0.05\noutput_mtok = 0.4\ncache = 1\n'
    )
    error = spec_error(tmp_path, text)
    assert error.key == "pricing.openai:gpt-5-nano.cache"
    assert error.problem.startswith("unknown key: check the spelling; allowed here: input_mtok, ")
