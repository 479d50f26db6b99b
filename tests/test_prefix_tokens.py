"""Prefix tokens of a cache group: exact in the model's own encoding where a cache decision
may depend on them, the cl100k count where the prefix is far too short to be cached, or
ASCII and far long enough."""

from __future__ import annotations

from batcher.plan.tokens import count_tokens, count_tokens_with
from batcher.providers import openai
from batcher.providers.capabilities import prefix_tokens

CAPS = openai.model_caps("gpt-5-nano")  # o200k, caches from 1,024 tokens


def test_a_short_prefix_is_counted_with_cl100k():
    short = "You label support tickets. " * 40  # ~240 tokens: nowhere near 1,024
    assert CAPS.encoding == "o200k_base"
    assert prefix_tokens(CAPS, short) == count_tokens(short)


def test_a_prefix_near_the_caching_minimum_is_counted_exactly():
    near = "Label the ticket by its main intent, then explain. " * 60  # ~600 cl100k tokens
    assert count_tokens(near) * 2 >= CAPS.min_cache_tokens
    assert prefix_tokens(CAPS, near) == count_tokens_with("o200k_base", near)[0]


def test_a_long_ascii_prefix_is_counted_with_cl100k():
    long = "Label the ticket by its main intent, then explain. " * 200  # ~2,000 tokens
    assert count_tokens(long) * 2 >= CAPS.min_cache_tokens * 3
    assert prefix_tokens(CAPS, long) == count_tokens(long)


def test_a_long_prefix_in_another_script_is_counted_exactly():
    # o200k needs several times fewer tokens than cl100k for Devanagari: cl100k's count
    # says nothing of whether the prefix reaches the caching minimum.
    hindi = "टिकट को उसके मुख्य उद्देश्य के अनुसार लेबल करें। " * 60
    assert count_tokens(hindi) * 2 >= CAPS.min_cache_tokens * 3
    exact = count_tokens_with("o200k_base", hindi)[0]
    assert prefix_tokens(CAPS, hindi) == exact < count_tokens(hindi) * 2 / 3


def test_released_tokenizers_load_again_with_the_same_counts():
    from batcher.plan import tokens

    text = "Tickets about refunds go to billing. " * 30

    def counts():
        o200k = tokens._quicktok("o200k_base")
        return len(tokens.encoding().encode(text)), len(o200k.encode_ordinary(text))

    before, tables = counts(), tokens.encoding()
    tokens.release()
    assert tokens.encoding() is not tables  # dropped, and built anew when asked
    assert counts() == before
