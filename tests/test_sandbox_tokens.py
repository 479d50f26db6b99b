"""The sandbox's token ids and counts are tiktoken's cl100k ones, whichever library made them."""

import random
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.plan import tokens
from batcher.sandbox import prompts

PIECES = [*string.printable, "'s", "'LL", "'ve", "  ", "\r\n", " \n ", "1234", " hello", "HTTP"]
PIECES += ["<|endoftext|>", "<|im_start|>", "...", '{"a": 1}', "\\u00e9", "café", "日本語", "😀"]


def tiktoken_ids(text: str) -> tuple[int, ...]:
    return tuple(tokens.encoding().encode(text, disallowed_special=()))


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=80).map("".join))
def test_text_tokens_and_counts_are_tiktoken_s(text):
    assert prompts.text_tokens(text) == tiktoken_ids(text)
    assert prompts.text_count(text) == tokens.count_tokens(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(st.characters(max_codepoint=127), max_size=200))
def test_any_ascii_text_tokenizes_as_tiktoken_does(text):
    assert prompts.text_tokens(text) == tiktoken_ids(text)


def test_long_prompts_tokenize_as_tiktoken_does():
    rng = random.Random(7)
    words = "ticket invoice refund it's We'LL 2026-12-04 $1,234.56 e.g. (see #42) URL:".split()
    for _ in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 400)))
        text += rng.choice(["", "\n", "\n\n", "  ", "."])
        assert prompts.text_tokens(text) == tiktoken_ids(text)
        assert prompts.text_count(text) == len(tiktoken_ids(text))
