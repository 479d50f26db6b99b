"""Usage numbers against a reference worked out from the tokenizer alone.

The sandbox memoizes token counts and prefix chains by text; these tests hold the numbers it
reports to what counting every request from scratch gives."""

from __future__ import annotations

from sandbox_fixtures import (  # noqa: F401 - fixtures
    chat_line,
    oai_fixture,
    read_file,
    sandbox_fixture,
    served_fixture,
    submit,
    wait_openai,
)

from batcher.plan.tokens import count_tokens, encode
from batcher.sandbox.prompts import IM_END, IM_START

SYSTEM_A = " ".join(f"Rule {i}: label the ticket by its main intent." for i in range(200))
SYSTEM_B = " ".join(f"Policy {i}: answer in one short sentence." for i in range(220))


def prompt_tokens(system: str, user: str) -> list[int]:
    """The prompt as OpenAI counts it: each message framed by two special tokens."""
    toks: list[int] = []
    for role, text in (("system", system), ("user", user)):
        toks += [IM_START, *encode(role), *encode(text), IM_END]
    return toks


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_usage_of_repeated_and_distinct_prompts_is_what_counting_each_gives(sandbox, oai):
    sandbox.configure(cold_requests={"openai": 0})
    prompts = [
        ("a0", SYSTEM_A, "Ticket 1: my invoice is wrong"),
        ("a1", SYSTEM_A, "Ticket 2: the app crashes on login"),
        ("a1-again", SYSTEM_A, "Ticket 2: the app crashes on login"),
        ("b0", SYSTEM_B, "Ticket 1: my invoice is wrong"),
        ("b1", SYSTEM_B, "Ticket 3: where is my parcel?"),
        ("a2", SYSTEM_A, "Ticket 1: my invoice is wrong"),
    ]
    lines = [
        chat_line(cid, user, system=system, reasoning_effort="minimal")
        for cid, system, user in prompts
    ]
    out = read_file(oai, wait_openai(oai, submit(oai, lines).id).output_file_id)
    seen: list[list[int]] = []
    for cid, system, user in prompts:
        toks = prompt_tokens(system, user)
        shared = max((common_prefix(toks, old) for old in seen), default=0)
        seen.append(toks)
        body = out[cid]["response"]["body"]
        usage = body["usage"]
        assert usage["prompt_tokens"] == len(toks) + 3  # + the reply's priming
        cached = shared // 128 * 128 if shared >= 1024 else 0
        assert usage["prompt_tokens_details"]["cached_tokens"] == cached, cid
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        visible = count_tokens(body["choices"][0]["message"]["content"])
        assert usage["completion_tokens"] == visible + reasoning
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert out["a0"]["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    again = out["a1-again"]["response"]["body"]["usage"]
    assert again["prompt_tokens"] == out["a1"]["response"]["body"]["usage"]["prompt_tokens"]
    assert (
        again["prompt_tokens_details"]["cached_tokens"] == (again["prompt_tokens"] - 3) // 128 * 128
    )


def test_context_refusal_counts_the_prompt_as_tokenized_from_scratch(sandbox, oai):
    fits = len(prompt_tokens(SYSTEM_A, "short")) + 3
    sandbox.configure(context_windows={"gpt-5-nano": fits + 10})
    user = "a much longer question about the refund of a damaged parcel, " * 3
    lines = [
        chat_line("fits", "short", system=SYSTEM_A),
        chat_line("long", user, system=SYSTEM_A, max_completion_tokens=20),
    ]
    batch = wait_openai(oai, submit(oai, lines).id)
    assert set(read_file(oai, batch.output_file_id)) == {"fits"}
    error = read_file(oai, batch.error_file_id)["long"]["response"]["body"]["error"]
    prompt = len(prompt_tokens(SYSTEM_A, user)) + 3
    assert error["code"] == "context_length_exceeded"
    assert (
        f"you requested {prompt + 20} tokens ({prompt} in the messages, 20 in" in (error["message"])
    )
