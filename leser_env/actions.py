"""The action format: ``<think>...</think><answer>["expansion 1", "expansion 2"]</answer>``.

``parse_action`` turns a policy's raw completion into an expansion set or a typed format
error. Tolerant where it is harmless: surrounding whitespace, a missing think block, text
after ``</answer>``, tag case, a Markdown code fence inside the answer, a missing
``</answer>`` when what follows ``<answer>`` is one complete JSON list. Strict where it
matters: the answer must be a JSON list (not Python literals, not a bare list outside the
tag) of 1..max_expansions distinct non-empty strings of at most max_chars characters, and
there must be exactly one answer. Expansions are whitespace-normalised and deduplicated
case-insensitively (first spelling kept) before they are counted.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from leser_env.config_ranges import POSITIVE, check_ranges

MAX_COMPLETION_CHARS = 100_000  # longer raw text is refused before any parsing


class FormatError(StrEnum):
    NOT_TEXT = "not_text"
    TOO_LONG_OUTPUT = "too_long_output"
    NO_ANSWER = "no_answer"
    MULTIPLE_ANSWERS = "multiple_answers"
    BAD_JSON = "bad_json"
    NOT_A_LIST = "not_a_list"
    NOT_STRINGS = "not_strings"
    EMPTY_LIST = "empty_list"
    TOO_MANY = "too_many"
    EMPTY_EXPANSION = "empty_expansion"
    TOO_LONG = "too_long"


@dataclass(frozen=True)
class ActionLimits:
    max_expansions: int = 5
    max_chars: int = 100  # characters an expansion may have

    def __post_init__(self) -> None:
        check_ranges(self, dict.fromkeys(("max_expansions", "max_chars"), POSITIVE))


@dataclass(frozen=True)
class ParsedAction:
    """Either ``expansions`` (valid) or ``error`` with a human-readable ``detail``."""

    expansions: tuple[str, ...] = ()
    error: FormatError | None = None
    detail: str = ""

    @property
    def valid(self) -> bool:
        return self.error is None


_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


def normalize_expansion(text: str) -> str:
    """NFKC, whitespace collapsed, ends trimmed: how an expansion is written and compared."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def validate_expansions(items: object, limits: ActionLimits = ActionLimits()) -> ParsedAction:
    """Check a decoded answer (any Python value) against the format's rules."""
    if not isinstance(items, list | tuple):
        return ParsedAction(error=FormatError.NOT_A_LIST, detail=f"the answer is a {type(items).__name__}, not a list")
    if not items:
        return ParsedAction(error=FormatError.EMPTY_LIST, detail="the answer list is empty")
    distinct: dict[str, str] = {}
    for position, item in enumerate(items):
        if not isinstance(item, str):
            return ParsedAction(
                error=FormatError.NOT_STRINGS, detail=f"item {position} is a {type(item).__name__}, not a string"
            )
        expansion = normalize_expansion(item)
        if not expansion:
            return ParsedAction(error=FormatError.EMPTY_EXPANSION, detail=f"item {position} is empty")
        if len(expansion) > limits.max_chars:
            return ParsedAction(
                error=FormatError.TOO_LONG,
                detail=f"item {position} has {len(expansion)} characters (at most {limits.max_chars})",
            )
        distinct.setdefault(expansion.casefold(), expansion)
    if len(distinct) > limits.max_expansions:
        return ParsedAction(
            error=FormatError.TOO_MANY, detail=f"{len(distinct)} distinct expansions (at most {limits.max_expansions})"
        )
    return ParsedAction(expansions=tuple(distinct.values()))


def parse_action(text: object, limits: ActionLimits = ActionLimits()) -> ParsedAction:
    """Parse a raw completion; never raises."""
    if not isinstance(text, str):
        return ParsedAction(error=FormatError.NOT_TEXT, detail=f"the action is a {type(text).__name__}, not text")
    if len(text) > MAX_COMPLETION_CHARS:
        return ParsedAction(
            error=FormatError.TOO_LONG_OUTPUT, detail=f"{len(text)} characters (at most {MAX_COMPLETION_CHARS})"
        )
    blocks = _ANSWER_BLOCK.findall(text)
    if len(blocks) > 1 or len(_ANSWER_OPEN.findall(text)) > 1:
        return ParsedAction(error=FormatError.MULTIPLE_ANSWERS, detail="more than one <answer> block")
    if blocks:
        body = blocks[0]
    else:
        opening = _ANSWER_OPEN.search(text)
        if opening is None:
            return ParsedAction(error=FormatError.NO_ANSWER, detail="no <answer>...</answer> block")
        body = text[opening.end() :]  # unclosed: accepted only if the rest is exactly one JSON value
    body = body.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, a 5,000-digit number, deep nesting
        message = getattr(error, "msg", type(error).__name__)
        return ParsedAction(error=FormatError.BAD_JSON, detail=f"the answer is not valid JSON ({message})")
    return validate_expansions(decoded, limits)


def replace_answer(text: str, expansions: Sequence[str]) -> str:
    """A valid action text with its answer list replaced and everything around it (the think block) kept."""
    body = encode_action(expansions)
    answer = body[body.index("<answer>") :]
    match = _ANSWER_BLOCK.search(text)
    return body if match is None else text[: match.start()] + answer + text[match.end() :]


def encode_action(expansions: Sequence[str], think: str = "") -> str:
    """The action text for an expansion list (what a programmatic agent sends).

    Angle brackets inside the JSON are written as \\u003c / \\u003e (the same strings once
    decoded), and dropped from the think text, so no expansion can forge an answer tag.
    """
    answer = json.dumps(list(expansions), ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    think = think.replace("<", " ").replace(">", " ")
    return f"<think>{think}</think><answer>{answer}</answer>"
