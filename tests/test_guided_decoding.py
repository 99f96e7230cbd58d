"""Guided decoding: completions held to the action format, on the tiny model and the real one."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from outlines_core import Guide

import agents
from agents import grpo
from agents.guided_decoding import MAX_THINK_CHARS, ActionFormat, action_regex, token_bytes
from leser_env.actions import ActionLimits, encode_action, parse_action
from leser_env.env import LeserEnv

OBSERVATIONS = [
    {"query": "chair for back pain", "context": "- Ergonomic Office Chair | Furniture > Chairs | black; mesh"},
    {"query": "grey couch", "context": "- Three Seat Sofa | Furniture > Sofas | grey"},
]
EXPANSION = st.text(st.characters(codec="utf-8", exclude_characters='"\\<>'), min_size=1, max_size=30)


WORDS = st.from_regex(r"[a-z0-9][a-z0-9 ]{0,20}", fullmatch=True)


@given(st.lists(EXPANSION, min_size=1, max_size=8))
def test_what_the_format_lets_through_the_parser_accepts(expansions: list[str]) -> None:
    limits = ActionLimits(max_expansions=5, max_chars=1000)
    text = encode_action(expansions, think="brief")
    if re.fullmatch(action_regex(limits), text, flags=re.DOTALL):
        parsed = parse_action(text, limits)
        assert parsed.valid, parsed.detail
        assert len(expansions) <= 5


@given(st.lists(WORDS, min_size=1, max_size=5))
def test_the_format_lets_plain_answers_through(expansions: list[str]) -> None:
    assert re.fullmatch(action_regex(ActionLimits()), encode_action(expansions, think="brief"))


def test_the_format_takes_answers_as_written_and_refuses_what_made_real_ones_invalid() -> None:
    regex = action_regex(ActionLimits(max_expansions=5))
    accepted = [
        '<think>x</think><answer>["a b", "c"]</answer>',
        '<think>x</think>\n<answer>[" cabinet blue storage","bedding > bedroom bed"]</answer>\n',  # as v19 wrote
        '<answer>["a"]</answer>',  # the parser takes an answer without a think block
    ]
    for text in accepted:
        assert re.fullmatch(regex, text) and parse_action(text).valid, text
    refused = [
        '<think>x</think><answer>["a", "b", "c", "d", "e", "f"]</answer>',  # too many (v19, q-00553)
        '<think>x</think><answer>["switch foot", lamps foot"]</answer>',  # a missing quote (v19, q-01274)
        '<think>x</think><answer>[" "]</answer>',  # an expansion of whitespace
        '<think>x</think><answer>["a"]</answer> and more',  # text after the answer
        '<think>x</think><answer>["a</answer>"]</answer>',  # a tag inside an expansion
    ]
    for text in refused:
        assert not re.fullmatch(regex, text), text


def test_the_format_bounds_the_think_block_and_each_expansion() -> None:
    """A think block of at most MAX_THINK_CHARS characters and expansions of at most max_chars
    (counted from the first character that is not a space): what a sample may write before the
    token limit cuts it."""
    limits = ActionLimits(max_expansions=3, max_chars=10)
    regex = action_regex(limits)
    think = "x" * MAX_THINK_CHARS
    assert re.fullmatch(regex, f'<think>{think}</think><answer>["{"a" * 10}", "  {"b" * 10}"]</answer>')
    assert not re.fullmatch(regex, f'<think>{think}y</think><answer>["a"]</answer>')
    assert not re.fullmatch(regex, f'<think>x</think><answer>["a", "{"b" * 11}"]</answer>')
    assert not parse_action(f'<answer>["{"b" * 11}"]</answer>', limits).valid  # the parser refuses it too
    assert re.fullmatch(action_regex(limits, max_think_chars=3), '<think>abc</think><answer>["a"]</answer>')


def test_a_guided_think_block_is_closed_at_its_bound(tiny_policy) -> None:
    """After MAX_THINK_CHARS characters of thinking the only way on is to close the block."""
    policy = tiny_policy()
    processor = ActionFormat(policy.tokenizer, policy.stop_id, policy.limits)
    prefix = policy.tokenizer("<think>" + "a" * MAX_THINK_CHARS, add_special_tokens=False)["input_ids"]
    vocabulary = len(policy.tokenizer)
    for position in range(len(prefix) + 1):
        scores = processor(torch.tensor([[policy.pad_id, *prefix[:position]]]), torch.zeros(1, vocabulary))
    allowed = {policy.tokenizer.decode([token]) for token in torch.isfinite(scores[0]).nonzero().flatten().tolist()}
    assert allowed and all(text.startswith("<") for text in allowed), sorted(allowed)[:10]


def test_token_bytes_spell_the_byte_level_vocabulary(smollm_tokenizer) -> None:
    spelled = token_bytes(smollm_tokenizer)
    ids = {token_id for token_ids in spelled.values() for token_id in token_ids}
    assert not ids & set(smollm_tokenizer.all_special_ids)
    by_id = {token_id: data for data, token_ids in spelled.items() for token_id in token_ids}
    for text in ["lumbar support", ' ["a", "b"]', "café 30x56 in"]:
        token_ids = smollm_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert b"".join(by_id[token_id] for token_id in token_ids) == text.encode()


def in_the_format_so_far(policy, ids: list[int]) -> bool:
    """Whether the format's automaton takes each token of a completion (up to its end of turn)."""
    guide = Guide(ActionFormat(policy.tokenizer, policy.stop_id, policy.limits).index)
    return guide.accepts_tokens(ids[:-1] if ids and ids[-1] == policy.stop_id else ids)


def test_guided_samples_stay_in_the_format_and_keep_the_models_logprobs(tiny_policy) -> None:
    """A random tiny model writes garbage; guided, every completion is a prefix of a valid action
    (the automaton accepts each token), and its log-probabilities are the model's, before the mask."""
    policy = tiny_policy(max_new_tokens=40)
    unguided = policy.sample(OBSERVATIONS, n=4)
    assert not any(in_the_format_so_far(policy, ids) for ids in unguided.completion_ids)
    samples = policy.sample(OBSERVATIONS, n=4, guided=True)
    for ids, text in zip(samples.completion_ids, samples.texts, strict=True):
        assert in_the_format_so_far(policy, ids)
        if ids[-1] == policy.stop_id:
            assert parse_action(text, policy.limits).valid
    prompts = [p for p in samples.prompt_ids for _ in range(4)]
    again = policy.completion_logprobs(prompts, samples.completion_ids, grad=False)
    for first, second in zip(samples.logprobs, again, strict=True):
        torch.testing.assert_close(first, second)


def test_a_completed_guided_answer_ends_the_turn(tiny_policy) -> None:
    """After ``</answer>`` the only tokens allowed are whitespace and the end of turn."""
    policy = tiny_policy()
    processor = ActionFormat(policy.tokenizer, policy.stop_id, policy.limits)
    answer = policy.tokenizer('<think>t</think><answer>["a"]</answer>', add_special_tokens=False)["input_ids"]
    prompt = [policy.pad_id]
    vocabulary = len(policy.tokenizer)
    for position in range(len(answer) + 1):
        scores = processor(torch.tensor([prompt + answer[:position]]), torch.zeros(1, vocabulary))
        allowed = torch.isfinite(scores[0]).nonzero().flatten().tolist()
        if position < len(answer):
            assert answer[position] in allowed
    assert policy.stop_id in allowed
    spelling = {token: data for data, tokens in token_bytes(policy.tokenizer).items() for token in tokens}
    for token in set(allowed) - {policy.stop_id}:  # whitespace, or bytes of a multi-byte space (U+3000...)
        assert all(byte >= 0x80 or chr(byte).isspace() for byte in spelling[token]), spelling[token]


def test_grpo_samples_guided_and_its_run_acts_guided(tiny_policy, tiny_model_dir: Path, tmp_path: Path) -> None:
    env = LeserEnv(catalog="synthetic", split="train")
    config = grpo.GRPOConfig(
        max_steps=1, queries_per_step=1, num_generations=3, max_completion_length=12, guided_decoding=True
    )
    policy = tiny_policy()
    policy.config = replace(policy.config, model=str(tiny_model_dir))
    samples, _, _ = grpo.collect(policy, env, config)
    assert all(in_the_format_so_far(policy, ids) for ids in samples.completion_ids)
    grpo.run(config, env, tmp_path, policy=policy, progress=False)
    assert json.loads((tmp_path / "agent.json").read_text())["config"]["decoding"] == "guided"
    agent = agents.load(tmp_path)
    assert agent.label == "grpo+guided" and agent.decoding == "guided"
    assert all(in_the_format_so_far(policy, policy.encode_completion(text)[:-1]) for text in agent.act(OBSERVATIONS))
    assert agents.load(tmp_path, decoding="greedy").label == "grpo", "a decoding given at load time wins"


@pytest.mark.slow
def test_the_untouched_model_answers_validly_when_guided(smollm_tokenizer) -> None:
    """The default model before any warm-up writes no valid answer (the warm-up's report: 0%); held
    to the format, greedy, it answers the first test queries validly (one may be cut by the token limit)."""
    from agents.policy import LLMPolicy, PolicyConfig

    env = LeserEnv(catalog="synthetic", split="test")
    observations = [env.observe(query_id)[0] for query_id in env.query_ids[:4]]
    texts = LLMPolicy(PolicyConfig(device="cpu")).act(observations, guided=True)  # the default model
    assert sum(parse_action(text).valid for text in texts) >= 3, texts
