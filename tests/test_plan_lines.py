"""Batch lines joined from a cache group's template are byte for byte the rendered ones, for
every provider whose renderer copies messages as they are; anything else is rendered."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.plan.lines import LineTemplate
from batcher.plan.requests import request_from
from batcher.providers import NAMES, google, wire_format
from batcher.spec import parse_spec

VERBATIM = [name for name in NAMES if wire_format(name).MESSAGES_VERBATIM]
TIERS = {"nano": "openai:gpt-5-nano", "frontier": "anthropic:claude-sonnet-4-6"}
SYSTEMS = [None, 'Label the ticket. Quote "exactly", keep \\ and ü, 日本.', "x" * 5000]
SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60)
content = st.one_of(text, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text})))
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]), "content": content}
)


def renderer(name, spec, system, cache_key, ttl, model="m-1"):
    wire = wire_format(name)

    def render(custom_id, messages):
        request = request_from(
            {"messages": messages}, spec, custom_id, model,
            system=system, cache_key=cache_key, cache_ttl=ttl,
        )  # fmt: skip
        return wire.render_line(request)

    return render


def test_the_verbatim_providers_are_the_chat_and_messages_formats():
    assert set(VERBATIM) == {"openai", "anthropic", "xai", "deepseek"}


@pytest.mark.parametrize("name", VERBATIM)
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("settings_", [{}, {"temperature": 0.3, "reasoning_effort": "low"}])
@settings(max_examples=40, deadline=None)
@given(messages=st.lists(message, min_size=1, max_size=4), n=st.integers(1, 10**9))
def test_a_joined_line_is_the_rendered_line(name, system, settings_, messages, n):
    spec = parse_spec(
        {"name": "t", "tiers": TIERS, "defaults": {"max_tokens": 99, **settings_},
         "validation": {"json_schema": SCHEMA}},
        "jobs/t.toml",
    )  # fmt: skip
    render = renderer(name, spec, system, "g0123456789abcdef", "1h" if system else None)
    template = LineTemplate.cut(render)
    assert template is not None
    stored = orjson.dumps({"messages": messages})
    custom_id = f"i{n}-a1"
    assert template.join(custom_id, stored) == render(custom_id, messages)
    assert template.join(custom_id, stored.decode()) == render(custom_id, messages)


@pytest.mark.parametrize(
    "stored",
    [
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        {"messages": [{"role": "user", "content": "hi"}], "params": {"stop": ["a"]}},
        {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        {"messages": []},
    ],
)
def test_a_request_with_settings_of_its_own_is_not_joined(stored):
    spec = parse_spec({"name": "t", "tiers": TIERS}, "jobs/t.toml")
    template = LineTemplate.cut(renderer("openai", spec, "Be brief.", None, None))
    assert template is not None
    assert template.join("i1-a1", orjson.dumps(stored)) is None
    spaced = '{"messages": [{"role": "user", "content": "hi"}]}'  # json.dumps, not the ingest's
    assert template.join("i1-a1", spaced) is None


def test_a_renderer_that_rewrites_messages_gets_no_template():
    spec = parse_spec({"name": "t", "tiers": TIERS}, "jobs/t.toml")

    def gemini(custom_id, messages):
        return google.render_line(request_from({"messages": messages}, spec, custom_id, "g"))

    def twice(custom_id, messages):  # the messages copied twice: no single place to join at
        return orjson.dumps({"custom_id": custom_id, "a": messages, "b": messages}) + b"\n"

    assert LineTemplate.cut(gemini) is None
    assert LineTemplate.cut(twice) is None
