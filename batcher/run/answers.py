"""Answer keys: the comparable part of an answer, so two models' answers can be compared.

The spec says where the answer sits: `validation.answer_field` (a field of a JSON answer),
else `validation.label_field`, else `validation.answer_regex` (its group named `answer`,
else its first group, else the whole match), else the whole reply. The key is normalised so
that answers that mean the same compare equal: surrounding space, case, markdown and LaTeX
wrappers (`$...$`, `\\boxed{...}`), a trailing full stop, and numbers compared as numbers
("1,000" = "1000" = "1000.0"). `None` means the reply holds no answer to compare.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import orjson

from batcher.run.validation import NOT_PARSED, strip_fences
from batcher.spec import Validation

NUMBER_RE = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?$")
BOXED_RE = re.compile(r"^\\boxed\{(.*)\}$", re.S)
SPACE_RE = re.compile(r"\s+")
FENCED_RE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.S)
FRAC_RE = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
RATIO_RE = re.compile(r"^(-?\d+)/(\d+)$")
MAX_KEY = 200  # keys are stored per attempt; a longer one is still compared, cut
MEMO_CHARS, MEMO_SIZE = 64, 4096  # normalised values remembered per AnswerKeys (see _normalised)
_UNSEEN = object()


def normalise(value: Any) -> str | None:
    """The comparable form of an extracted answer (a string, number or JSON value)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return _number(str(value))
    if not isinstance(value, str):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    text = value.strip()
    for _ in range(3):  # wrappers nest: "$\boxed{12}$."
        before = text
        text = text.strip().rstrip(".").strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "$`\"'":
            text = text[1:-1]
        boxed = BOXED_RE.match(text)
        if boxed:
            text = boxed.group(1)
        if text == before:
            break
    # LaTeX that models write in more than one way: \dfrac{5}{4} = \frac{5}{4} = 5/4.
    text = FRAC_RE.sub(r"\1/\2", text.replace("\\left", "").replace("\\right", ""))
    text = SPACE_RE.sub(" ", text).casefold()
    if not text:
        return None
    return _number(text) or _ratio(text) or text


def _ratio(text: str) -> str | None:
    """'10/8' -> '5/4', '4/2' -> '2': a fraction of integers in lowest terms."""
    match = RATIO_RE.match(text.replace(" ", ""))
    if not match or int(match.group(2)) == 0:
        return None
    fraction = Fraction(int(match.group(1)), int(match.group(2)))
    return str(fraction)


def _number(text: str) -> str | None:
    """'1,000' / '1000.0' / '1e3' -> '1000'; None when `text` is not a plain number."""
    if not NUMBER_RE.match(text) or not any(c.isdigit() for c in text):
        return None
    try:
        number = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    if number == number.to_integral_value():
        return str(number.quantize(Decimal(1)))
    return format(number.normalize(), "f")


class AnswerKeys:
    """Extracts and normalises answer keys under one spec's `validation` section."""

    def __init__(self, validation: Validation):
        self.field = validation.answer_field or validation.label_field
        if self.field is not None:
            name = re.escape(orjson.dumps(self.field).decode())
            self.field_re = re.compile(name + r'\s*:\s*("(?:[^"\\]|\\.)*"|[-+\w.]+)')
        pattern = validation.answer_regex
        self.regex = re.compile(pattern) if pattern else None
        self.memo: dict[str, str | None] = {}

    def _normalised(self, value: Any) -> str | None:
        """_cut(normalise(value)), remembered for short strings: a labeling run's answers
        repeat a handful of labels, and normalising one costs a dozen regex calls."""
        if type(value) is not str or len(value) > MEMO_CHARS:
            return _cut(normalise(value))
        key = self.memo.get(value, _UNSEEN)
        if key is _UNSEEN:
            if len(self.memo) >= MEMO_SIZE:
                self.memo.clear()
            key = self.memo[value] = _cut(normalise(value))
        return key

    def key(self, text: str | None, parsed: Any = NOT_PARSED) -> str | None:
        """The normalised answer key of a reply, or None when it holds none. `parsed`: the
        reply's JSON as `Validator.check_parsed` read it, when it did."""
        if type(parsed) is dict and self.field in parsed:  # what _from_json reads first
            return self._normalised(parsed[self.field])
        if text is None or not text.strip():
            return None
        if self.field is not None:
            return self._from_json(text)
        if self.regex is not None:
            return self._from_regex(text)
        return self._normalised(text)

    def _from_json(self, text: str) -> str | None:
        candidates = [strip_fences(text), *FENCED_RE.findall(text)]
        for candidate in candidates:
            try:
                parsed = orjson.loads(candidate)
            except orjson.JSONDecodeError:
                continue
            if isinstance(parsed, dict) and self.field in parsed:
                return self._normalised(parsed[self.field])
        # Models often write LaTeX backslashes unescaped, which no JSON parser accepts: the
        # field's last occurrence, read as written, is still the answer they meant.
        matches = list(self.field_re.finditer(text))
        if not matches:
            return None
        raw = matches[-1].group(1)
        value = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\") if raw[0] == '"' else raw
        return self._normalised(value)

    def _from_regex(self, text: str) -> str | None:
        match = self.regex.search(text)
        if match is None:
            return None
        if "answer" in self.regex.groupindex:
            found = match.group("answer")
        elif self.regex.groups:
            found = match.group(1)
        else:
            found = match.group(0)
        return self._normalised(found)


def _cut(key: str | None) -> str | None:
    return key if key is None or len(key) <= MAX_KEY else key[:MAX_KEY]


_keys: dict[int, tuple[Validation, AnswerKeys]] = {}


def answer_keys_for(validation: Validation) -> AnswerKeys:
    """The compiled AnswerKeys of `validation`, built once per spec section."""
    entry = _keys.get(id(validation))
    if entry is None or entry[0] is not validation:
        if len(_keys) > 64:
            _keys.clear()
        entry = _keys[id(validation)] = (validation, AnswerKeys(validation))
    return entry[1]
