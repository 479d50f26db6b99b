"""Requests as token sequences: counts and prefix identities for usage and cache accounting.

A prompt is a tuple of parts: text (tokenized with the real offline cl100k tokenizer, cached
by text in batcher.plan.tokens) or an int (one special token framing a message, so a message costs
its content plus 3 tokens, as OpenAI's counting recipe says). Prefix identities are chained
hashes of 128-token chunks, memoized by the parts before a prompt's last text, so 10,000
requests sharing a 2,000-token system prompt tokenize and hash it once.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache

from batcher.plan import tokens

IM_START, IM_END = 100264, 100265
CHUNK = 128
REPLY_PRIMING = 3  # every reply is primed with <|im_start|>assistant<|im_sep|>

Part = str | int


@dataclass(frozen=True)
class Chain:
    """Hashes of each complete 128-token chunk of a prefix, plus the incomplete tail."""

    hashes: tuple[int, ...]
    tail: tuple[int, ...]
    length: int

    def extend(self, toks: tuple[int, ...]) -> Chain:
        buf = self.tail + toks
        hashes = list(self.hashes)
        full = len(buf) - len(buf) % CHUNK
        for start in range(0, full, CHUNK):
            prev = hashes[-1] if hashes else 0
            hashes.append(hash((prev, buf[start : start + CHUNK])))
        return Chain(tuple(hashes), buf[full:], self.length + len(toks))


def part_tokens(part: Part) -> tuple[int, ...]:
    return (part,) if isinstance(part, int) else text_tokens(part)


@lru_cache(maxsize=4096)
def text_tokens(text: str) -> tuple[int, ...]:
    """The cl100k tokens of `text`, as tokens.encode gives them."""
    return tuple(_ids(text))


@lru_cache(maxsize=4096)
def text_count(text: str) -> int:
    """The number of cl100k tokens in `text`, as tokens.count_tokens gives it."""
    return len(_ids(text))


def fresh_count(text: str) -> int:
    """text_count of a text seen once (an answer's tag): not cached."""
    return len(_ids(text))


def _ids(text: str) -> list[int]:
    """cl100k ids of `text`. ASCII text, the usual prompt, goes to quicktok, which ships
    cl100k in its wheel and gives tiktoken's ids (tests/test_sandbox_tokens.py compares
    them) in a third of the time: tokenizing each request's own text was a seventh of a
    batch's CPU. Other text goes to tiktoken, whose Unicode tables stay the reference for
    what a letter or a digit is. encode_ordinary is tiktoken's encode(text,
    disallowed_special=()) (its docstring says so) without the scan for special tokens."""
    if text.isascii():
        return tokens._quicktok("cl100k_base").encode_ordinary(text)
    return tokens.encoding().encode_ordinary(text)


class SharedTexts:
    """The long texts requests repeat (a shared system prompt), one str object each.

    Every parsed request holds its own copy of a 2,000-token system prompt: each copy is
    hashed again by the first cache that looks it up (3 us for 11 KB) and compared byte by
    byte by the others, and 10,000 copies hold 110 MB. Recent long texts are compared,
    not hashed (unequal texts differ early or in length); an equal one is replaced by the
    first seen, whose hash is known and which every cache finds by identity."""

    def __init__(self, size: int = 8, minimum: int = 1024) -> None:
        self.size, self.minimum = size, minimum
        self._texts: list[str] = []
        self._lock = threading.Lock()  # batches may be created in several threads

    def shared(self, text: object) -> object:
        """The known str equal to `text`, else `text` (kept if long)."""
        if type(text) is not str or len(text) < self.minimum:
            return text
        with self._lock:
            texts = self._texts
            for index, known in enumerate(texts):
                if known == text:
                    if index:
                        texts.insert(0, texts.pop(index))
                    return known
            texts.insert(0, text)
            del texts[self.size :]
            return text

    def share_messages(self, messages: object) -> None:
        """Shares the string content of each message, and the texts of its content blocks."""
        if not isinstance(messages, list):
            return
        for message in messages:
            if isinstance(message, dict) and "content" in message:
                message["content"] = self.share_blocks(message["content"])

    def share_blocks(self, content: object) -> object:
        """`content` (a string or a list of blocks) with its long texts shared."""
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and "text" in block:
                    block["text"] = self.shared(block["text"])
            return content
        return self.shared(content)


shared_texts = SharedTexts()


def part_count(part: Part) -> int:
    return 1 if isinstance(part, int) else text_count(part)


def chain(parts: tuple[Part, ...]) -> Chain:
    """The chunk chain of `parts`.

    What comes before the last text part is memoized (requests share it: a system prompt,
    earlier turns); the last text and what follows are extended per call. Memoizing every
    prompt in full kept two chains per request that no later request asked for, and the
    cycle collector walked them all; only the latest result is kept, for the cache
    accounting that follows the context check of the same request."""
    recent = _recent[0]
    if recent is not None and recent[0] == parts:
        return recent[1]
    cut = len(parts) - 1
    while cut > 0 and not isinstance(parts[cut], str):
        cut -= 1
    cut = max(cut, 0)
    rest: tuple[int, ...] = ()
    for part in parts[cut:]:
        rest += part_tokens(part)
    links = _prefix_chain(parts[:cut]).extend(rest)  # extending once or part by part: one chain
    _recent[0] = (parts, links)
    return links


_recent: list[tuple[tuple[Part, ...], Chain] | None] = [None]


@lru_cache(maxsize=200_000)
def _prefix_chain(parts: tuple[Part, ...]) -> Chain:
    """The chunk chain of `parts` (memoized on every prefix of parts)."""
    if not parts:
        return Chain((), (), 0)
    return _prefix_chain(parts[:-1]).extend(part_tokens(parts[-1]))


def count(parts: tuple[Part, ...]) -> int:
    return sum(part_count(p) for p in parts)


def text_of(content: object) -> str:
    """Text of a message content: a string, or the text of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for block in content:
            if isinstance(block, dict):
                texts.append(
                    block.get("text")
                    if isinstance(block.get("text"), str)
                    else json.dumps(block, sort_keys=True)
                )
            else:
                texts.append(str(block))
        return "\n".join(texts)
    return "" if content is None else json.dumps(content, sort_keys=True)


def message_parts(role: str, content: object) -> tuple[Part, ...]:
    return (IM_START, role, text_of(content), IM_END)


def openai_parts(body: dict, endpoint: str) -> tuple[Part, ...]:
    """The prompt of an OpenAI request body, in the order the provider caches it."""
    parts: list[Part] = []
    for key in ("tools", "response_format", "text"):
        if body.get(key):
            parts.append(json.dumps(body[key], sort_keys=True))
    if endpoint == "/v1/responses":
        if body.get("instructions"):
            parts.extend(message_parts("system", body["instructions"]))
        inp = body.get("input")
        messages = [{"role": "user", "content": inp}] if isinstance(inp, str) else inp or []
    elif endpoint == "/v1/completions":
        messages = [{"role": "user", "content": body.get("prompt", "")}]
    elif endpoint == "/v1/embeddings":
        inp = body.get("input", "")
        return (inp if isinstance(inp, str) else json.dumps(inp),)
    else:
        messages = body.get("messages") or []
    for message in messages:
        if isinstance(message, dict):
            parts.extend(message_parts(str(message.get("role", "user")), message.get("content")))
    return tuple(parts)


def last_user_text(messages: list) -> str | None:
    """Text of the last user message (what the replay responder matches on)."""
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return None


@dataclass(frozen=True)
class Breakpoint:
    """A cache_control marker: the prompt prefix of `end` parts is cacheable for `ttl`."""

    end: int
    ttl: str


def _block_text(block: object) -> str:
    if isinstance(block, dict) and isinstance(block.get("text"), str):
        return block["text"]
    if isinstance(block, dict):
        return json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)
    return str(block)


def _mark(parts: list[Part], marks: list[Breakpoint], block: object) -> None:
    control = block.get("cache_control") if isinstance(block, dict) else None
    if isinstance(control, dict):
        marks.append(Breakpoint(len(parts), str(control.get("ttl", "5m"))))


def anthropic_parts(params: dict) -> tuple[tuple[Part, ...], list[Breakpoint]]:
    """Prompt parts of Messages params (tools, system, messages) and their breakpoints."""
    parts: list[Part] = []
    marks: list[Breakpoint] = []
    for tool in params.get("tools") or []:
        parts.append(_block_text(tool))
        _mark(parts, marks, tool)
    system = params.get("system")
    if isinstance(system, str) and system:
        parts.extend(message_parts("system", system))
    elif isinstance(system, list):
        parts.extend((IM_START, "system"))
        for block in system:
            parts.append(_block_text(block))
            _mark(parts, marks, block)
        parts.append(IM_END)
    for message in params.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list) else [content]
        parts.extend((IM_START, str(message.get("role", "user"))))
        for block in blocks:
            parts.append(_block_text(block) if block is not None else "")
            _mark(parts, marks, block)
        parts.append(IM_END)
    return tuple(parts), marks
