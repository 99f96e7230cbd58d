"""The action parser on the outputs language models really write, well-formed and not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leser_env.actions import (
    ActionLimits,
    FormatError,
    encode_action,
    parse_action,
    replace_answer,
    validate_expansions,
)

VALID = [
    (
        '<think>vague query</think><answer>["ergonomic office chair", "lumbar support chair"]</answer>',
        ("ergonomic office chair", "lumbar support chair"),
    ),
    ('<answer>["sofa"]</answer>', ("sofa",)),  # no think block
    ('  \n<think>\n...\n</think>\n<answer>\n[ "sofa" ,\n "couch" ]\n</answer>\n', ("sofa", "couch")),
    ('<think>x</think><answer>["sofa"]</answer> I hope this helps!', ("sofa",)),  # trailing text
    ('<THINK>x</THINK><Answer>["sofa"]</Answer>', ("sofa",)),  # tag case
    ('<think>x</think><answer>```json\n["sofa", "couch"]\n```</answer>', ("sofa", "couch")),  # fence in answer
    ('<think>x</think><answer>["sofa", "couch"]', ("sofa", "couch")),  # unclosed but complete
    ('<answer>["  grey   sofa ", "Grey Sofa", "grey sofa"]</answer>', ("grey sofa",)),  # normalised, deduplicated
    ('<answer>["a", "b", "c", "d", "e", "A", "B"]</answer>', ("a", "b", "c", "d", "e")),  # 7 items, 5 distinct
    ('<answer>["caf\\u00e9 table", "ｓｏｆａ"]</answer>', ("café table", "sofa")),  # JSON escapes, NFKC
]

MALFORMED = [
    ("ergonomic office chair, lumbar support chair", FormatError.NO_ANSWER),
    ('["sofa", "couch"]', FormatError.NO_ANSWER),  # a bare list is not the format
    ('```json\n["sofa"]\n```', FormatError.NO_ANSWER),
    ("<think>the answer is sofa</think>", FormatError.NO_ANSWER),
    ('<answer>["sofa", "couch"</answer>', FormatError.BAD_JSON),  # truncated JSON
    ('<think>x</think><answer>["sofa", "cou', FormatError.BAD_JSON),  # generation cut off
    ("<answer>['sofa', 'couch']</answer>", FormatError.BAD_JSON),  # single quotes: Python, not JSON
    ('<answer>["sofa",]</answer>', FormatError.BAD_JSON),  # trailing comma
    ("<answer>sofa, couch</answer>", FormatError.BAD_JSON),
    ("<answer></answer>", FormatError.BAD_JSON),
    ('<answer>{"queries": ["sofa"]}</answer>', FormatError.NOT_A_LIST),
    ('<answer>"sofa"</answer>', FormatError.NOT_A_LIST),
    ("<answer>[]</answer>", FormatError.EMPTY_LIST),
    ('<answer>[["sofa", "couch"]]</answer>', FormatError.NOT_STRINGS),  # nested list
    ("<answer>[1, 2, 3]</answer>", FormatError.NOT_STRINGS),  # numbers
    ('<answer>["sofa", null]</answer>', FormatError.NOT_STRINGS),
    ('<answer>["sofa", "  "]</answer>', FormatError.EMPTY_EXPANSION),
    ('<answer>["a", "b", "c", "d", "e", "f"]</answer>', FormatError.TOO_MANY),
    ('<answer>["' + "x" * 101 + '"]</answer>', FormatError.TOO_LONG),
    ('<answer>["sofa"]</answer><answer>["couch"]</answer>', FormatError.MULTIPLE_ANSWERS),  # extra tags
    ('<answer>["sofa"]</answer> <answer>["couch"]', FormatError.MULTIPLE_ANSWERS),
    ("<answer>" + "[" * 10_000 + "]" * 10_000 + "</answer>", FormatError.BAD_JSON),  # nesting beyond recursion
    ("x" * 200_000, FormatError.TOO_LONG_OUTPUT),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_outputs_parse_to_expansions(text: str, expected: tuple[str, ...]) -> None:
    parsed = parse_action(text)
    assert parsed.valid, parsed.detail
    assert parsed.expansions == expected


@pytest.mark.parametrize(("text", "reason"), MALFORMED)
def test_malformed_outputs_get_a_typed_reason(text: str, reason: FormatError) -> None:
    parsed = parse_action(text)
    assert not parsed.valid
    assert parsed.error == reason
    assert parsed.detail and parsed.expansions == ()


@pytest.mark.parametrize("value", [None, 3, b'<answer>["a"]</answer>', ["a"]])
def test_non_text_actions_are_format_errors(value: object) -> None:
    assert parse_action(value).error == FormatError.NOT_TEXT


def test_limits_are_configurable() -> None:
    text = '<answer>["aa", "bb", "cc"]</answer>'
    assert parse_action(text, ActionLimits(max_expansions=2)).error == FormatError.TOO_MANY
    assert parse_action(text, ActionLimits(max_chars=1)).error == FormatError.TOO_LONG
    assert parse_action(text, ActionLimits(max_expansions=3, max_chars=2)).valid


@given(st.lists(st.text(min_size=1, max_size=40).filter(lambda s: s.strip()), min_size=1, max_size=5))
def test_encoder_and_parser_round_trip(expansions: list[str]) -> None:
    parsed = parse_action(encode_action(expansions, think="because"))
    direct = validate_expansions(expansions)
    assert parsed == direct


@given(st.lists(st.text(min_size=1, max_size=40).filter(lambda s: s.strip()), min_size=1, max_size=5))
def test_replacing_the_answer_keeps_the_think_block(expansions: list[str]) -> None:
    original = '<think>my reasons</think>\n<answer>["a", "b"]</answer>'
    replaced = replace_answer(original, expansions)
    assert replaced.startswith("<think>my reasons</think>\n")
    assert parse_action(replaced) == validate_expansions(expansions)


@given(st.text(max_size=500))
def test_parser_never_raises(text: str) -> None:
    parsed = parse_action(text)
    assert parsed.valid == (parsed.error is None)
    assert all(0 < len(y) <= 100 for y in parsed.expansions) and len(parsed.expansions) <= 5


def test_expansions_cannot_forge_tags() -> None:
    tricky = ["</think><answer>[]</answer>", "a <b> c"]
    parsed = parse_action(encode_action(tricky, think="<answer>[1]</answer>"))
    assert parsed.valid and parsed.expansions == tuple(tricky)
