"""The LLM policy, SFT and GRPO on a tiny randomly initialised model: real code paths in seconds."""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import agents
from agents import baselines, grpo, ppo, sft
from agents.evaluate import run_agent
from agents.policy import LLMPolicy, PolicyConfig
from catalogs import Split
from catalogs.storage import file_digest
from leser_env.actions import ActionLimits, encode_action, parse_action
from leser_env.env import LeserEnv
from leser_env.reward import RewardConfig

OBSERVATIONS = [
    {"query": "chair for back pain", "context": "- Ergonomic Office Chair | Furniture > Chairs | black; mesh"},
    {"query": "grey couch", "context": "- Three Seat Sofa | Furniture > Sofas | grey"},
]


def lora_and_base(policy: LLMPolicy) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    lora, base = {}, {}
    for name, parameter in policy.model.named_parameters():
        (lora if "lora_" in name else base)[name] = parameter.detach().clone()
    return lora, base


def test_sampling_returns_groups_with_their_logprobs(tiny_policy) -> None:
    policy = tiny_policy()
    samples = policy.sample(OBSERVATIONS, n=3)
    assert len(samples.texts) == len(samples.completion_ids) == len(samples.logprobs) == 6
    assert len(samples.prompt_ids) == 2
    for ids, logprobs in zip(samples.completion_ids, samples.logprobs, strict=True):
        assert 0 < len(ids) <= policy.config.max_new_tokens and logprobs.shape == (len(ids),)
        assert torch.all(logprobs <= 0)
    prompts = [p for p in samples.prompt_ids for _ in range(3)]
    again = policy.completion_logprobs(prompts, samples.completion_ids, grad=False)
    for first, second in zip(samples.logprobs, again, strict=True):
        torch.testing.assert_close(first, second)


def tiny_architecture(model_type: str, vocab_size: int, **config) -> torch.nn.Module:
    """A tiny randomly initialised causal LM of another architecture than the default Llama."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    sizes = {"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    heads = {"num_attention_heads": 4, "num_key_value_heads": 2}
    if model_type == "gpt2":
        sizes, heads = {"vocab_size": vocab_size, "n_embd": 64, "n_layer": 2}, {"n_head": 4}
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **sizes, **heads, **config))


SLIDING_WINDOW_GEMMA = {"head_dim": 16, "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]}


@pytest.mark.parametrize(
    ("model_type", "config", "shares_prompts"),
    [("llama", {}, True), ("gpt2", {}, True), ("gemma3_text", SLIDING_WINDOW_GEMMA, False)],
)
def test_other_architectures_sample_and_score_their_completions(
    smollm_tokenizer, model_type: str, config: dict, shares_prompts: bool
) -> None:
    """Any causal LM works by name: a sliding-window cache (Gemma 3, prompts longer than the window)
    cannot be shared by a group's completions, so it is encoded per completion, with the same result.
    The shared cache goes by the name this transformers release knows (no deprecation warning:
    the old name, past_key_values, is removed in later releases)."""
    model = tiny_architecture(model_type, len(smollm_tokenizer), **config)
    policy = LLMPolicy(
        PolicyConfig(max_new_tokens=8, max_prompt_tokens=256, lora_rank=4, lora_alpha=8),
        model=model,
        tokenizer=smollm_tokenizer,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="`past_key_values`", category=FutureWarning)
        samples = policy.sample(OBSERVATIONS, n=3)
        prompts = [p for p in samples.prompt_ids for _ in range(3)]
        grouped = policy.completion_logprobs(prompts, samples.completion_ids, grad=False)
    assert len(samples.texts) == 6 and policy.share_prompts is shares_prompts
    one_by_one = [
        policy.completion_logprobs([p], [c], grad=False)[0]
        for p, c in zip(prompts, samples.completion_ids, strict=True)
    ]
    for sampled, scored, alone in zip(samples.logprobs, grouped, one_by_one, strict=True):
        torch.testing.assert_close(sampled, scored)
        torch.testing.assert_close(scored, alone)


def test_lora_targets_fit_the_architecture_or_name_its_layers(smollm_tokenizer) -> None:
    vocabulary = len(smollm_tokenizer)
    settings = {"max_new_tokens": 8, "lora_rank": 4, "lora_alpha": 8}
    gpt2 = LLMPolicy(PolicyConfig(**settings), model=tiny_architecture("gpt2", vocabulary), tokenizer=smollm_tokenizer)
    assert gpt2.model.peft_config["default"].target_modules == {"c_attn"}  # GPT-2 has no q_proj
    chosen = LLMPolicy(
        PolicyConfig(target_modules=["c_attn", "c_fc"], **settings),
        model=tiny_architecture("gpt2", vocabulary),
        tokenizer=smollm_tokenizer,
    )
    assert chosen.model.peft_config["default"].target_modules == {"c_attn", "c_fc"}  # GPT-2's layers are Conv1D
    every_linear = LLMPolicy(
        PolicyConfig(target_modules="all-linear", **settings),
        model=tiny_architecture("llama", vocabulary),
        tokenizer=smollm_tokenizer,
    )
    adapted = {
        name.rsplit(".", 1)[-1] for name, module in every_linear.model.named_modules() if hasattr(module, "lora_A")
    }
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with pytest.raises(ValueError, match=r"not in this model; its layers with weights are named \[.*'q_proj'"):
        LLMPolicy(
            PolicyConfig(target_modules=["query_key_value"], **settings),
            model=tiny_architecture("llama", vocabulary),
            tokenizer=smollm_tokenizer,
        )


def test_kl_is_zero_with_the_adapter_disabled(tiny_policy) -> None:
    policy = tiny_policy()
    samples = policy.sample(OBSERVATIONS, n=2)
    prompts = [p for p in samples.prompt_ids for _ in range(2)]
    reference = policy.completion_logprobs(prompts, samples.completion_ids, grad=False, reference=True)
    for ours, ref in zip(samples.logprobs, reference, strict=True):  # a fresh adapter is the identity
        torch.testing.assert_close(ours, ref)
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.05)
    moved = policy.completion_logprobs(prompts, samples.completion_ids, grad=False)
    still = policy.completion_logprobs(prompts, samples.completion_ids, grad=False, reference=True)
    assert any(not torch.allclose(a, b) for a, b in zip(moved, reference, strict=True))
    for a, b in zip(still, reference, strict=True):  # the reference is the base model, untouched
        torch.testing.assert_close(a, b)


@given(
    st.lists(st.lists(st.floats(-2, 2), min_size=4, max_size=4), min_size=1, max_size=6),
    st.sampled_from(grpo.SCALE_REWARDS),
)
def test_advantages_sum_to_zero_per_group(rewards: list[list[float]], scale: str) -> None:
    advantages = grpo.group_advantages(np.array(rewards), scale_rewards=scale)
    np.testing.assert_allclose(advantages.sum(axis=1), 0.0, atol=1e-6)


def test_the_invalid_advantage_share_is_the_format_part_of_a_steps_signal() -> None:
    one_invalid = np.array([[True, True, True, False]])
    advantages = grpo.group_advantages(np.array([[1.0, 1.2, 0.8, -2.0]]))  # advantages .75 .95 .55 -2.25
    assert grpo.invalid_advantage_share(advantages, one_invalid) == pytest.approx(0.5)  # valid ones: its mirror
    advantages = grpo.group_advantages(np.array([[1.0, 1.2, -0.5, -2.0]]))  # a valid answer below the mean
    assert grpo.invalid_advantage_share(advantages, one_invalid) == pytest.approx(1.925 / 4.7)
    assert grpo.invalid_advantage_share(advantages, np.ones((1, 4), dtype=bool)) == 0.0
    assert grpo.invalid_advantage_share(np.zeros((1, 4)), np.zeros((1, 4), dtype=bool)) == 0.0  # no signal at all


def test_a_valid_baseline_compares_the_valid_answers_with_one_another() -> None:
    rewards = np.array([[1.0, 1.2, 0.8, -2.0], [0.5, 0.7, 0.9, 1.1], [-2.0, -2.0, -2.0, -2.0]])
    valid = np.array([[True, True, True, False], [True] * 4, [False] * 4])
    advantages = grpo.group_advantages(rewards, valid=valid)
    np.testing.assert_allclose(advantages[0], [0.0, 0.2, -0.2, -2.25])  # valid: against their own mean 1.0
    np.testing.assert_allclose(advantages[1], grpo.group_advantages(rewards[1:2])[0])  # all valid: as before
    np.testing.assert_allclose(advantages[2], 0.0)  # all invalid: no signal, as before
    share = grpo.invalid_advantage_share(advantages[:1], valid[:1])
    assert share == pytest.approx(2.25 / 2.65)  # no mirror: the valid answers' signal is their differences
    assert grpo.GRPOConfig(valid_baseline=True).valid_baseline


def test_groups_are_scored_against_their_own_query() -> None:
    """Row i of the rewards is group i scored for query i, the same as scoring it alone."""
    env = LeserEnv(catalog="synthetic", split="train")
    query_ids = env.query_ids[:2]
    texts = ['<answer>["office chair"]</answer>', "not an action", '<answer>["desk lamp"]</answer>', "{}"] * 2
    queries = [(env.observe(qid)[0]["query"], qid) for qid in query_ids]
    rewards, infos = grpo.score_groups(env, queries, texts, num_generations=4)
    assert rewards.shape == (2, 4) and len(infos) == 8
    assert not np.array_equal(rewards[0], rewards[1]), "the same texts must score differently for other queries"
    for row, query_id in enumerate(query_ids):
        observation, _ = env.reset(options={"query_id": query_id})
        for offset, text in enumerate(texts[row * 4 : (row + 1) * 4]):
            env.reset(options={"query_id": query_id})
            assert env.step(text)[1] == rewards[row, offset]
        assert infos[row * 4]["query_id"] == query_id and infos[row * 4]["query"] == observation["query"]
    assert rewards[0, 1] == env.reward.config.format_penalty
    with pytest.raises(ValueError, match="completions for 2 groups"):
        grpo.score_groups(env, queries, texts[:7], num_generations=4)


def test_token_aggregation_weighs_every_token_alike_and_sequence_aggregation_does_not() -> None:
    short = torch.zeros(2, requires_grad=True)  # log-probabilities of a 2-token completion
    long = torch.zeros(6, requires_grad=True)
    old = [torch.zeros(2), torch.zeros(6)]
    loss, _ = grpo.grpo_loss([short, long], old, old, [1.0, 1.0], 0.2, 0.0, token_normalizer=8.0)
    loss.backward()
    assert torch.allclose(torch.cat([short.grad, long.grad]), torch.full((8,), -1 / 8))
    short.grad, long.grad = None, None
    loss, _ = grpo.grpo_loss([short, long], old, old, [1.0, 1.0], 0.2, 0.0)
    loss.backward()
    assert short.grad[0] == 3 * long.grad[0], "the published average favours the short completion's tokens"
    with pytest.raises(ValueError, match="loss_type"):
        grpo.GRPOConfig(loss_type="mean")
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo.GRPOConfig(scale_rewards=True)


@pytest.mark.parametrize(
    ("config_class", "setting", "message"),
    [
        (grpo.GRPOConfig, {"num_generations": 1}, "GRPOConfig.num_generations must be an integer >= 2, got 1"),
        (grpo.GRPOConfig, {"max_steps": 2.0}, "GRPOConfig.max_steps must be an integer > 0, got 2.0"),
        (grpo.GRPOConfig, {"beta": -0.1}, "GRPOConfig.beta must be a finite number >= 0, got -0.1"),
        (ppo.PPOConfig, {"gamma": 1.5}, "PPOConfig.gamma must be a finite number in [0, 1], got 1.5"),
        (ppo.PPOConfig, {"learning_rate": float("nan")}, "PPOConfig.learning_rate must be a finite number > 0"),
        (sft.SFTConfig, {"per_device_train_batch_size": 0}, "SFTConfig.per_device_train_batch_size must be an"),
        (sft.SFTConfig, {"max_steps": 0}, "SFTConfig.max_steps must be an integer > 0, got 0"),
        (sft.SFTConfig, {"max_edits": -1}, "SFTConfig.max_edits must be an integer >= 0, got -1"),
        (sft.SFTConfig, {"min_edit_gain": -0.1}, "SFTConfig.min_edit_gain must be a finite number >= 0, got -0.1"),
        (PolicyConfig, {"top_p": 0.0}, "PolicyConfig.top_p must be a finite number in (0, 1], got 0.0"),
        (PolicyConfig, {"lora_dropout": 1.0}, "PolicyConfig.lora_dropout must be a finite number in [0, 1)"),
        (PolicyConfig, {"lora_rank": True}, "PolicyConfig.lora_rank must be an integer > 0, got True"),
        (RewardConfig, {"format_penalty": -0.5}, "RewardConfig.format_penalty must be a finite number < -1, got -0.5"),
        (
            RewardConfig,
            {"format_penalty": -math.inf},
            "RewardConfig.format_penalty must be a finite number < -1, got -inf",
        ),
        (RewardConfig, {"size_weight": -0.1}, "RewardConfig.size_weight must be a finite number >= 0, got -0.1"),
        (
            RewardConfig,
            {"relevance_threshold": 1.5},
            "RewardConfig.relevance_threshold must be a finite number in [0, 1], got 1.5",
        ),
        (RewardConfig, {"depth": 10.5}, "RewardConfig.depth must be an integer > 0, got 10.5"),
        (RewardConfig, {"rel_k": 0}, "RewardConfig.rel_k must be an integer > 0, got 0"),
        (ActionLimits, {"max_expansions": 0}, "ActionLimits.max_expansions must be an integer > 0, got 0"),
        (ActionLimits, {"max_chars": True}, "ActionLimits.max_chars must be an integer > 0, got True"),
        (ActionLimits, {"max_chars": 2.5}, "ActionLimits.max_chars must be an integer > 0, got 2.5"),
    ],
)
def test_configs_refuse_values_outside_their_ranges(config_class: type, setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        config_class(**setting)
    config_class()  # the defaults hold
    assert sft.SFTConfig(max_steps=None).max_steps is None  # None: the example count decides


@pytest.mark.parametrize("aggregation", grpo.LOSS_TYPES)
def test_a_grpo_update_changes_only_lora_and_lowers_the_surrogate_loss(tiny_policy, aggregation: str) -> None:
    policy = tiny_policy()
    config = grpo.GRPOConfig(learning_rate=5e-3, beta=0.0, num_generations=4, micro_batch=4, loss_type=aggregation)
    samples = policy.sample(OBSERVATIONS, n=4)
    tokens = {
        "grpo": None,
        "dapo": sum(len(ids) for ids in samples.completion_ids),
        "dr_grpo": len(samples.completion_ids) * config.max_completion_length,
    }[aggregation]
    advantages = grpo.group_advantages(np.array([[1.0, -1.0, 0.5, -0.5], [0.2, -0.2, 1.0, -1.0]]))
    prompts = [p for p in samples.prompt_ids for _ in range(4)]

    def surrogate_loss() -> float:
        new = policy.completion_logprobs(prompts, samples.completion_ids, grad=False)
        loss, _ = grpo.grpo_loss(new, samples.logprobs, new, advantages.reshape(-1).tolist(), 0.2, 0.0, tokens)
        return float(loss)

    lora_before, base_before = lora_and_base(policy)
    before = surrogate_loss()
    optimizer = torch.optim.AdamW(list(policy.trainable_parameters()), lr=config.learning_rate)
    for _ in range(3):
        grpo.update(policy, optimizer, samples, advantages, config)
    lora_after, base_after = lora_and_base(policy)
    assert surrogate_loss() < before
    assert any(not torch.equal(lora_before[k], lora_after[k]) for k in lora_before)
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)


def test_micro_batches_do_not_change_the_grpo_loss_even_with_an_empty_completion(tiny_policy) -> None:
    policy = tiny_policy()
    samples = policy.sample(OBSERVATIONS, n=4)
    samples.completion_ids[1], samples.logprobs[1] = [], torch.zeros(0)  # stopped at once: nothing to learn on
    advantages = grpo.group_advantages(np.array([[1.0, -1.0, 0.5, -0.5], [0.2, -0.2, 1.0, -1.0]]))
    optimizer = torch.optim.SGD(list(policy.trainable_parameters()), lr=0.0)  # measure, do not move
    losses = [
        grpo.update(policy, optimizer, samples, advantages, grpo.GRPOConfig(micro_batch=size))["loss"]
        for size in (8, 2, 1)
    ]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-7)
    assert losses[2] == pytest.approx(losses[0], rel=1e-5, abs=1e-7)


def test_a_grpo_pass_holds_whole_groups_so_each_prompt_is_encoded_once_a_pass() -> None:
    def rows(groups: int, n: int, **config: int) -> list[list[int]]:
        passes = grpo.micro_batches(groups, n, grpo.GRPOConfig(**config))
        covered = [row for part in passes for row in range(groups * n)[part]]
        assert covered == list(range(groups * n))  # every row once, in order
        return [list(range(groups * n)[part]) for part in passes]

    assert rows(4, 8, num_generations=8, micro_batch=8) == [list(range(g * 8, g * 8 + 8)) for g in range(4)]
    assert rows(4, 4, num_generations=4, micro_batch=8) == [list(range(0, 8)), list(range(8, 16))]
    guided = rows(4, 9, num_generations=8, micro_batch=8)  # 8 samples and the guide's completion: one pass a group
    assert guided == [list(range(g * 9, g * 9 + 9)) for g in range(4)]
    assert rows(3, 5, num_generations=4, micro_batch=8) == [list(range(0, 10)), list(range(10, 15))]
    assert rows(2, 4, num_generations=4, micro_batch=3) == [[0, 1, 2], [3], [4, 5, 6], [7]]  # never across groups
    assert rows(2, 4, num_generations=4, micro_batch=1) == [[row] for row in range(8)]


def with_trained_adapter(policy: LLMPolicy) -> LLMPolicy:
    """A fresh adapter is a no-op (LoRA B starts at zero); random B weights make it change the outputs."""
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    return policy


def test_checkpoint_round_trip(tiny_policy, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = with_trained_adapter(tiny_policy())
        samples = policy.sample(OBSERVATIONS, n=1)
        policy.save(tmp_path / "policy")
        base = tiny_policy(base_only=True)  # same seed: the same base weights
        restored = LLMPolicy.load(tmp_path / "policy", model=base, tokenizer=policy.tokenizer)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]  # peft's, not the user's
    again = restored.completion_logprobs(samples.prompt_ids, samples.completion_ids, grad=False)
    for first, second in zip(samples.logprobs, again, strict=True):
        torch.testing.assert_close(first, second)
    assert json.loads((tmp_path / "policy" / "policy.json").read_text())["lora_rank"] == 4


def test_invalid_completions_flow_through_training_as_penalties(tiny_policy, tmp_path: Path) -> None:
    env = LeserEnv(catalog="synthetic", split="train")
    config = grpo.GRPOConfig(max_steps=2, queries_per_step=2, num_generations=3, max_completion_length=8, save_steps=1)
    result = grpo.train(tiny_policy(), env, config, tmp_path, progress=False)
    assert [r["step"] for r in result["log"]] == [1, 2]
    for record in result["log"]:  # a random tiny model writes garbage: every completion is invalid
        assert record["valid_rate"] == 0.0 and record["reward_mean"] == env.reward.config.format_penalty
        assert record["zero_signal"] == 1.0 and np.isfinite(record["loss"])
    assert (tmp_path / "learning_curve.png").is_file() and (tmp_path / "log.jsonl").read_text().count("\n") == 2
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == result["log"] and all(record["step_seconds"] > 0 for record in logged)  # throughput is logged


def test_a_resumed_run_continues_from_the_saved_step(tiny_policy, tmp_path: Path) -> None:
    config = grpo.GRPOConfig(max_steps=3, queries_per_step=2, num_generations=2, max_completion_length=6, save_steps=1)
    straight = grpo.train(tiny_policy(), LeserEnv(catalog="synthetic"), config, tmp_path / "a", progress=False)

    interrupted = grpo.GRPOConfig(**{**config.__dict__, "max_steps": 2})
    grpo.train(tiny_policy(), LeserEnv(catalog="synthetic"), interrupted, tmp_path / "b", progress=False)
    fresh = tiny_policy()
    policy = LLMPolicy.load(tmp_path / "b" / "policy", model=tiny_policy(base_only=True), tokenizer=fresh.tokenizer)
    resumed = grpo.train(policy, LeserEnv(catalog="synthetic"), config, tmp_path / "b", resume=True, progress=False)
    assert [r["step"] for r in resumed["log"]] == [1, 2, 3]
    assert resumed["log"][-1]["completion_tokens"] == straight["log"][-1]["completion_tokens"]
    assert resumed["log"][-1]["loss"] == pytest.approx(straight["log"][-1]["loss"], rel=1e-4, abs=1e-6)


class RunsCode:
    """A pickle payload: unpickling it would call os.getcwd (any callable could be named instead)."""

    def __reduce__(self):
        import os

        return (os.getcwd, ())


@pytest.mark.parametrize("name", ["optimizer.pt", "rng.pt"])
def test_resume_refuses_a_checkpoint_file_that_would_run_code(tiny_policy, tmp_path: Path, name: str) -> None:
    config = grpo.GRPOConfig(max_steps=1, queries_per_step=1, num_generations=2, max_completion_length=4, save_steps=1)
    grpo.train(tiny_policy(), LeserEnv(catalog="synthetic"), config, tmp_path, progress=False)
    torch.save({"optimizer": RunsCode(), "torch": RunsCode()}, tmp_path / name)
    state = json.loads((tmp_path / "trainer_state.json").read_text())  # a forger updates the digest too
    state["files"][name] = file_digest(tmp_path / name)
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    resumed = grpo.GRPOConfig(**{**config.__dict__, "max_steps": 2})
    with pytest.raises(ValueError, match=f"{name}: not a checkpoint file this project wrote"):
        grpo.train(tiny_policy(), LeserEnv(catalog="synthetic"), resumed, tmp_path, resume=True, progress=False)


def test_sft_examples_come_from_train_queries_and_are_valid_actions() -> None:
    env = LeserEnv(catalog="synthetic", split="train")
    examples = sft.build_examples(env, count=40)
    assert len(examples) == 40
    assert [example["query_id"] for example in examples] == sft.warm_up_query_ids(env, 40)  # what RL skips
    train = set(env.catalog.query_ids(Split.TRAIN))
    assert all(example["query_id"] in train for example in examples)
    parsed = [parse_action(example["target"]) for example in examples]
    assert all(p.valid for p in parsed)
    rewards = [env.reward.score(e["observation"]["query"], e["target"]).reward for e in examples]
    assert np.mean(rewards) > 0.3, "warm-up targets should be expansions that help"
    prf = agents.make("prf", catalog="synthetic").act([example["observation"] for example in examples])
    baseline = [env.reward.score(e["observation"]["query"], a).reward for e, a in zip(examples, prf, strict=True)]
    assert np.mean(rewards) > np.mean(baseline), "the targets start from prf's expansions and keep what pays"
    for example, action in zip(examples, parsed, strict=True):
        observation = example["observation"]
        text = f"{observation['query']} {observation['context']} {observation['evidence']}"
        shown = set(sft.WORD.findall(text.lower()))
        written = {word for expansion in action.expansions for word in sft.WORD.findall(expansion.lower())}
        assert written <= shown, "a target the policy cannot read off its observation teaches it to guess"
    for action, prf_action in zip(parsed, prf, strict=True):
        from_prf = [expansion for expansion in action.expansions if expansion in parse_action(prf_action).expansions]
        assert list(action.expansions[: len(from_prf)]) == from_prf, "prf's expansions come first, as prf orders them"
        assert from_prf == [e for e in parse_action(prf_action).expansions if e in from_prf]
    with pytest.raises(ValueError, match="train split"):
        sft.build_examples(LeserEnv(catalog="synthetic", split="test"), count=1)


def test_sft_targets_are_sets_whose_expansions_complement_each_other() -> None:
    """From nothing, the search beats its best single phrase and repeats nothing; with no edit limit it
    stops where no set one edit away (drop, replace, add) scores more."""
    env = LeserEnv(catalog="synthetic", split="train")
    query = "garbage can my dog can't get into"
    candidates = ["waste bin", "waste basket", "pedal bin", "waste bin", "dog bed", "kitchen"]
    chosen = sft.improve_expansion_set(env, query, candidates, max_expansions=5)
    assert chosen and len(chosen) == len(set(chosen)) <= 5
    singles, _ = env.score_group(query, [[phrase] for phrase in candidates])
    best = env.score_group(query, [chosen])[0][0]
    assert best >= singles.max()
    assert sft.improve_expansion_set(env, query, [], max_expansions=5) == []

    start = ["kitchen", "dog bed"]
    local = sft.improve_expansion_set(env, query, candidates, 3, start=start, max_edits=None)
    unused = [phrase for phrase in dict.fromkeys(candidates) if phrase not in local]
    neighbours = [local[:i] + local[i + 1 :] for i in range(len(local)) if len(local) > 1]
    neighbours += [[*local[:i], phrase, *local[i + 1 :]] for i in range(len(local)) for phrase in unused]
    neighbours += [[*local, phrase] for phrase in unused] if len(local) < 3 else []
    rewards, _ = env.score_group(query, [local, start, *neighbours])
    assert rewards[0] >= rewards[1] and rewards[0] >= rewards[2:].max(), "a local optimum at least as good as its start"


def test_sft_target_search_stays_within_its_edits_of_prf() -> None:
    env = LeserEnv(catalog="synthetic", split="train")
    prf = agents.make("prf", catalog="synthetic")
    queries = (env.observe(query_id)[0]["query"] for query_id in env.query_ids)
    query, start = next(
        (q, e) for q in queries if len(e := prf.expand(q)[0]) == 5 and env.score_group(q, [e])[0][0] > 0
    )
    candidates = [*start, "waste bin", "dining chair", "area rug", "table lamp", "bath towels"]
    assert sft.improve_expansion_set(env, query, candidates, 5, start=start, max_edits=0) == start
    for max_edits in (1, 2):
        chosen = sft.improve_expansion_set(env, query, candidates, 5, start=start, max_edits=max_edits)
        assert len(set(start) - set(chosen)) <= max_edits and len(set(chosen) - set(start)) <= max_edits
        assert env.score_group(query, [chosen])[0][0] >= env.score_group(query, [start])[0][0]
        replaced = sft.improve_expansion_set(env, query, candidates, 5, start, max_edits, replace_only=True)
        assert len(replaced) == len(start) and len(set(start) - set(replaced)) <= max_edits
        assert env.score_group(query, [replaced])[0][0] >= env.score_group(query, [start])[0][0]
    assert sft.improve_expansion_set(env, query, candidates, 3, [], 1, replace_only=True), "from nothing it adds"


def test_sft_targets_can_start_from_prf_with_the_words_that_match_together() -> None:
    """With no edits, the target is prf's set with the evidence's core phrase in place of its last: a
    function of the observation."""
    env = LeserEnv(catalog="synthetic", split="train")
    prf = agents.make("prf", catalog="synthetic")
    examples = sft.build_examples(env, 12, max_edits=0, start_with_core=True)
    replaced = 0
    for example in examples:
        query, evidence = example["observation"]["query"], example["observation"]["evidence"]
        expected = prf.expand(query)[0]
        core = " ".join(env.feedback.evidence(query).core)
        assert f"Words that match together (products): {core} (" in evidence or not core  # read off the input
        if core and core.casefold() not in {query.casefold(), *(e.casefold() for e in expected)}:
            expected, replaced = [*expected[:4], core], replaced + 1
        answer = list(parse_action(example["target"]).expansions)
        assert answer in (expected, [query])  # the query alone where the set is worth nothing
    assert replaced >= 8
    plain = sft.build_examples(env, 12, max_edits=0)
    assert [e["target"] for e in plain] != [e["target"] for e in examples]
    with pytest.raises(ValueError, match="start_with_core and evidence candidates read the evidence"):
        without = LeserEnv(catalog="synthetic", split="train", feedback_evidence=False)
        sft.build_examples(without, 2, start_with_core=True)


def test_sft_targets_from_evidence_candidates_distil_reward_search_within_the_edits() -> None:
    """With evidence candidates, every target phrase is one reward-search could choose (composed
    from the evidence), the set is at most ``max_edits`` edits from prf's, and worth at least prf's."""
    env = LeserEnv(catalog="synthetic", split="train")
    prf = agents.make("prf", catalog="synthetic")
    examples = sft.build_examples(env, 12, candidates_per_query=40, max_edits=2, target_candidates="evidence")
    changed = 0
    for example in examples:
        query = example["observation"]["query"]
        phrases = baselines.evidence_phrases(env.feedback.evidence(query), query)
        start = prf.expand(query)[0]
        answer = list(parse_action(example["target"]).expansions)
        if answer == [query]:
            assert env.score_group(query, [start])[0][0] <= 0 if start else True
            continue
        assert set(answer) <= set(phrases), "every phrase is composed from the evidence"
        if start:  # from nothing, the search may add up to max_expansions
            assert len(set(start) - set(answer)) <= 2 and len(set(answer) - set(start)) <= 2
        assert env.score_group(query, [answer])[0][0] >= env.score_group(query, [start])[0][0]
        assert answer == sorted(answer, key=phrases.index), "written in the evidence's order"
        changed += answer != start
    assert changed >= 4, "the reward changes prf's set on many queries"
    options = {"candidates_per_query": 40, "max_edits": 2, "target_candidates": "evidence"}
    kept = sft.build_examples(env, 12, **options, replace_only=True)
    for example in kept:
        query = example["observation"]["query"]
        start, answer = prf.expand(query)[0], list(parse_action(example["target"]).expansions)
        assert answer == [query] or not start or len(answer) == len(start), "replacements keep prf's size"
    assert [e["target"] for e in kept] != [e["target"] for e in examples]
    labelled = sft.build_examples(env, 12, candidates_per_query=40, max_edits=2)
    assert [e["target"] for e in labelled] != [e["target"] for e in examples]
    with pytest.raises(ValueError, match="target_candidates must be one of"):
        sft.SFTConfig(target_candidates="titles")


def test_sft_targets_can_be_a_teacher_agents_actions(tmp_path: Path) -> None:
    """With ``teacher``, each target is that agent's set for the query, in its order: a registered
    name or a saved run (here a learned-edit run); the target search's settings are refused beside it."""
    from agents.learned_edit import LearnedEditConfig
    from agents.learned_edit import run as train_learned_edit

    env = LeserEnv(catalog="synthetic", split="train")
    prf = agents.make("prf", catalog="synthetic")
    examples = sft.build_examples(env, 10, teacher="prf")
    for example in examples:
        taught = parse_action(example["target"]).expansions
        assert taught == parse_action(prf.act([example["observation"]])[0]).expansions
    train_learned_edit(LearnedEditConfig(train_queries=40), env, tmp_path / "teacher", progress=False)
    learned = sft.build_examples(env, 10, teacher=str(tmp_path / "teacher"))
    assert [e["query_id"] for e in learned] == [e["query_id"] for e in examples]  # the same warm-up queries
    assert [e["target"] for e in learned] != [e["target"] for e in examples]
    teacher = agents.load(tmp_path / "teacher")
    for example in learned:
        assert (
            parse_action(example["target"]).expansions
            == parse_action(teacher.act([example["observation"]])[0]).expansions
        )
    with pytest.raises(ValueError, match="unknown agent 'no-such-agent'; available: "):
        sft.build_examples(env, 2, teacher="no-such-agent")
    with pytest.raises(ValueError, match="teacher replaces the target search"):
        sft.SFTConfig(teacher="prf", start_with_core=True)


COVERS = {"a": {1, 2}, "b": {1, 2}, "c": {1, 2}, "d": {3}}  # a, b and c retrieve the same products


class CoverageScorer:
    """A scorer with exact ties: products covered minus 0.1 an expansion."""

    def score_group(self, query: str, actions: list[list[str]]) -> tuple[np.ndarray, list[dict]]:
        rewards = [len(set().union(*(COVERS[p] for p in action))) - 0.1 * len(action) for action in actions]
        return np.array(rewards), [{} for _ in actions]


def test_sft_target_search_keeps_the_earlier_expansion_when_edits_tie() -> None:
    """Dropping a, b or c gains the same; the search drops from the end, so prf's strongest stays."""
    start = ["a", "b", "c", "d"]
    assert sft.improve_expansion_set(CoverageScorer(), "q", start, 5, start=start, max_edits=1) == ["a", "b", "d"]
    assert sft.improve_expansion_set(CoverageScorer(), "q", start, 5, start=start, max_edits=2) == ["a", "d"]


def test_sft_target_search_makes_only_edits_worth_min_edit_gain() -> None:
    """Each drop of a, b or c adds 0.1; adding d to ["a"] adds 0.9."""
    start = ["a", "b", "c", "d"]
    for gain in (0.1, 0.5):
        assert sft.improve_expansion_set(CoverageScorer(), "q", start, 5, start, 2, min_edit_gain=gain) == start
    assert sft.improve_expansion_set(CoverageScorer(), "q", start, 5, start, 2, min_edit_gain=0.05) == ["a", "d"]
    assert sft.improve_expansion_set(CoverageScorer(), "q", start, 5, ["a"], 2, min_edit_gain=0.5) == ["a", "d"]
    assert sft.improve_expansion_set(CoverageScorer(), "q", start, 5, ["a"], 2, min_edit_gain=0.9) == ["a"]


def test_sft_lowers_the_loss_on_its_examples(tiny_policy, tmp_path: Path) -> None:
    env = LeserEnv(catalog="synthetic", split="train")
    examples = sft.build_examples(env, count=8)
    policy = tiny_policy()
    before = float(sft.sft_loss(policy, examples))
    config = sft.SFTConfig(num_train_epochs=3, per_device_train_batch_size=4, learning_rate=5e-3, save_steps=2)
    result = sft.train(policy, examples, config, tmp_path, progress=False)
    assert result["steps"] == 6 and float(sft.sft_loss(policy, examples)) < before
    assert (tmp_path / "policy" / "adapter_config.json").is_file()


def test_the_warm_ups_long_steps_show_progress_bars(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sft.SFTConfig(examples=4, per_device_train_batch_size=4)
    policy_config = PolicyConfig(model=str(tiny_model_dir), max_new_tokens=4, max_prompt_tokens=256, lora_rank=4)
    sft.run(
        config,
        LeserEnv(catalog="synthetic", split="train"),
        tmp_path,
        policy_config=policy_config,
        validation_queries=2,
    )
    shown = capsys.readouterr().out
    for bar in ("warm-up targets", "format-valid check, before", "SFT warm-up", "format-valid check, after"):
        assert bar in shown, bar


def test_gae_matches_a_hand_computation() -> None:
    rewards, values = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.6, 0.7])
    advantages, returns = ppo.gae(rewards, values, gamma=1.0, lam=0.5)
    deltas = [0.0 + 0.6 - 0.5, 0.0 + 0.7 - 0.6, 1.0 - 0.7]
    expected = [deltas[0] + 0.5 * (deltas[1] + 0.5 * deltas[2]), deltas[1] + 0.5 * deltas[2], deltas[2]]
    torch.testing.assert_close(advantages, torch.tensor(expected))
    torch.testing.assert_close(returns, advantages + values)
    shaped = ppo.per_token_rewards(2.0, torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0]), kl_coef=0.1)
    torch.testing.assert_close(shaped, torch.tensor([-0.05, 2.0]))


def test_ppo_value_loss_falls_on_a_fixed_batch(tiny_policy) -> None:
    policy = tiny_policy()
    env = LeserEnv(catalog="synthetic")
    config = ppo.PPOConfig(queries_per_step=3, response_length=6, num_ppo_epochs=1, cliprange_value=100.0)
    value_head = ppo.ValueHead(policy.model.config.hidden_size)
    samples, _, _, batch = ppo.collect(policy, value_head, env, config)
    optimizer = torch.optim.AdamW([*policy.trainable_parameters(), *value_head.parameters()], lr=1e-2)
    losses = [ppo.update(policy, value_head, optimizer, samples, batch, config)["value_loss"] for _ in range(10)]
    assert losses[-1] < 0.5 * losses[0]


def test_ppo_trains_checkpoints_and_resumes(tiny_policy, tmp_path: Path) -> None:
    config = ppo.PPOConfig(max_steps=2, queries_per_step=2, response_length=6, save_steps=1)
    first = ppo.train(tiny_policy(), LeserEnv(catalog="synthetic"), config, tmp_path, progress=False)
    assert [r["step"] for r in first["log"]] == [1, 2] and all(np.isfinite(r["loss"]) for r in first["log"])
    longer = ppo.PPOConfig(**{**config.__dict__, "max_steps": 3})
    policy = LLMPolicy.load(tmp_path / "policy", model=tiny_policy(base_only=True), tokenizer=tiny_policy().tokenizer)
    resumed = ppo.train(policy, LeserEnv(catalog="synthetic"), longer, tmp_path, resume=True, progress=False)
    assert [r["step"] for r in resumed["log"]] == [1, 2, 3]
    torch.testing.assert_close(resumed["log"][0]["loss"], first["log"][0]["loss"])


def test_sft_resumes_from_its_checkpoint(tiny_policy, tmp_path: Path) -> None:
    examples = sft.build_examples(LeserEnv(catalog="synthetic", split="train"), count=8)
    short = sft.SFTConfig(num_train_epochs=1, per_device_train_batch_size=4, save_steps=1)
    sft.train(tiny_policy(), examples[:4], short, tmp_path, progress=False)  # 1 step, then "killed"
    policy = LLMPolicy.load(tmp_path / "policy", model=tiny_policy(base_only=True), tokenizer=tiny_policy().tokenizer)
    resumed = sft.train(
        policy,
        examples,
        sft.SFTConfig(num_train_epochs=1, per_device_train_batch_size=4, save_steps=1),
        tmp_path,
        resume=True,
        progress=False,
    )
    assert [record["step"] for record in resumed["log"]] == [1, 2]


def test_grpo_with_the_engine_check_scores_what_a_search_system_would_serve() -> None:
    env = LeserEnv(catalog="synthetic", split="train")
    checked_env = LeserEnv(catalog="synthetic", split="train", engine_check=True)
    query = (env.observe(env.query_ids[0])[0]["query"], env.query_ids[0])
    with_dud, without = encode_action(["chair", "zzqx qqzz"]), encode_action(["chair"])
    raw, _ = grpo.score_groups(env, [query], [with_dud, without], num_generations=2)
    checked, infos = grpo.score_groups(checked_env, [query], [with_dud, without], num_generations=2)
    assert raw[0, 0] < raw[0, 1]  # unchecked, the dud counts as relevance 0 in the mean
    assert checked[0, 0] == checked[0, 1] == raw[0, 1] and infos[0]["expansions"] == ["chair"]


def test_ppo_with_the_engine_check_scores_what_a_search_system_would_serve(tiny_policy) -> None:
    policy = tiny_policy()
    sample = policy.sample

    def with_a_dud(observations, **options):  # the tiny model writes no valid action of its own
        samples = sample(observations, **options)
        samples.texts = [encode_action(["chair", "zzqx qqzz"])] * len(samples.texts)
        return samples

    policy.sample = with_a_dud
    value_head = ppo.ValueHead(policy.model.config.hidden_size)
    config = ppo.PPOConfig(queries_per_step=2, response_length=4)
    _, _, infos, _ = ppo.collect(policy, value_head, LeserEnv(catalog="synthetic", engine_check=True), config)
    assert [info["expansions"] for info in infos] == [["chair"], ["chair"]]


def test_an_engine_checked_run_is_evaluated_with_the_check(tiny_model_dir: Path, tmp_path: Path) -> None:
    policy = LLMPolicy(PolicyConfig(model=str(tiny_model_dir), max_new_tokens=4, lora_rank=4))
    policy.save(tmp_path / "policy")
    grpo.GRPOAgent.describe(tmp_path, "synthetic", None, engine_check=True)
    agent = agents.load(tmp_path)
    assert agent.engine_check and json.loads((tmp_path / "agent.json").read_text())["config"]["engine_check"]
    assert agent.label == "grpo+check"  # tables tell it from the unchecked policy
    agent.policy.act = lambda observations, guided=False: [encode_action(["chair", "zzqx qqzz"])] * len(observations)
    records = run_agent(agent, "synthetic", "test", limit=2, progress=False)
    assert [record["expansions"] for record in records] == [["chair"], ["chair"]]  # scored behind the check
    assert agents.load(tmp_path, engine_check=False).label == "grpo"


def test_a_killed_warm_up_resumes_without_measuring_the_untouched_model_again(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = []
    real_rate, real_train = sft.format_valid_rate, sft.train

    def counting_rate(policy, observations, batch_size=8, **display):
        measured.append(len(observations))
        return real_rate(policy, observations, batch_size, **display)

    def killed_after_training(*args, **kwargs):
        real_train(*args, **kwargs)
        raise KeyboardInterrupt  # the checkpoint is written, the final report is not

    monkeypatch.setattr(sft, "format_valid_rate", counting_rate)
    monkeypatch.setattr(sft, "train", killed_after_training)
    config = sft.SFTConfig(examples=4, per_device_train_batch_size=4)
    policy_config = PolicyConfig(model=str(tiny_model_dir), max_new_tokens=6, max_prompt_tokens=256, lora_rank=4)
    train_env = LeserEnv(catalog="synthetic", split="train")
    with pytest.raises(KeyboardInterrupt):
        sft.run(config, train_env, tmp_path, policy_config=policy_config, validation_queries=2, progress=False)
    before = json.loads((tmp_path / "sft_report.json").read_text())["format_valid_before"]
    assert measured == [2] and not sft.finished(tmp_path)

    monkeypatch.setattr(sft, "train", real_train)
    report = sft.run(
        config, train_env, tmp_path, resume=True, policy_config=policy_config, validation_queries=2, progress=False
    )
    assert measured == [2, 2]  # only the rate after warm-up: the untouched model's was kept
    assert report["format_valid_before"] == before and report["steps"] == 1 and sft.finished(tmp_path)
    assert report["summary"].endswith("(before: the untouched model)")
    continued = sft.run(config, train_env, tmp_path / "continued", init=tmp_path, validation_queries=2, progress=False)
    assert measured == [2, 2, 2, 2] and continued["format_valid_before_of"] == f"the policy of {tmp_path}"
    assert continued["summary"].endswith(f"(before: the policy of {tmp_path})")


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_rl_from_a_warm_up_draws_only_queries_it_learnt_no_target_for(
    stage: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_config = PolicyConfig(model=str(tiny_model_dir), max_new_tokens=4, max_prompt_tokens=256, lora_rank=4)
    env = LeserEnv(catalog="synthetic", split="train")
    sft.run(
        sft.SFTConfig(examples=8, per_device_train_batch_size=8),
        env,
        tmp_path / "sft",
        policy_config=policy_config,
        validation_queries=1,
        progress=False,
    )
    learnt = set(sft.warm_up_query_ids(env, 8))
    pools: list[list[str]] = []
    real_draw = grpo.draw_queries

    def recording_draw(env, count, query_ids=None):
        pools.append(list(query_ids))
        return real_draw(env, count, query_ids)

    monkeypatch.setattr(grpo if stage == "grpo" else ppo, "draw_queries", recording_draw)
    module = grpo if stage == "grpo" else ppo
    small = {"max_steps": 1, "queries_per_step": 2, "save_steps": 1, "skip_warm_up_queries": True}
    small.update({"num_generations": 2, "max_completion_length": 4} if stage == "grpo" else {"response_length": 4})
    config = (grpo.GRPOConfig if stage == "grpo" else ppo.PPOConfig)(**small)
    module.run(config, env, tmp_path / "rl", init=tmp_path / "sft", progress=False)
    assert set(pools[0]) == set(env.query_ids) - learnt and len(pools[0]) == len(env.query_ids) - 8
    # A resumed run draws from the same queries, --init or not: it reads them from the run.
    longer = replace(config, max_steps=2)
    module.run(longer, env, tmp_path / "rl", resume=True, progress=False)
    assert pools[1] == pools[0]
    (tmp_path / "rl" / "skipped_queries.json").write_text("{truncated")
    with pytest.raises(ValueError, match=r"skipped_queries\.json: not the list of skipped queries"):
        module.run(replace(config, max_steps=3), env, tmp_path / "rl", resume=True, progress=False)
    # Not asked to skip (the default), or started from something that is not a warm-up: every query.
    assert not (grpo.GRPOConfig if stage == "grpo" else ppo.PPOConfig)().skip_warm_up_queries
    module.run(
        replace(config, skip_warm_up_queries=False), env, tmp_path / "all", init=tmp_path / "sft", progress=False
    )
    module.run(config, env, tmp_path / "fresh", policy_config=policy_config, progress=False)
    assert pools[2] == pools[3] == list(env.query_ids)


def test_a_new_stage_keeps_the_warmed_up_policy_as_its_kl_reference(tiny_policy, tmp_path: Path) -> None:
    warmed = with_trained_adapter(tiny_policy())
    samples = warmed.sample(OBSERVATIONS, n=1)
    warmed.save(tmp_path / "sft")
    stage = LLMPolicy.continue_from(tmp_path / "sft", model=tiny_policy(base_only=True), tokenizer=warmed.tokenizer)
    ours = stage.completion_logprobs(samples.prompt_ids, samples.completion_ids, grad=False)
    reference = stage.completion_logprobs(samples.prompt_ids, samples.completion_ids, grad=False, reference=True)
    for expected, a, b in zip(samples.logprobs, ours, reference, strict=True):
        torch.testing.assert_close(a, expected, atol=1e-4, rtol=1e-4)  # the stage starts as the warmed policy
        torch.testing.assert_close(b, expected, atol=1e-4, rtol=1e-4)  # and its reference is that policy
    stage.save(tmp_path / "grpo")
    restored = LLMPolicy.load(tmp_path / "grpo", model=tiny_policy(base_only=True), tokenizer=warmed.tokenizer)
    again = restored.completion_logprobs(samples.prompt_ids, samples.completion_ids, grad=False, reference=True)
    for expected, value in zip(samples.logprobs, again, strict=True):
        torch.testing.assert_close(value, expected, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "grpo" / "frozen" / "0" / "adapter_config.json").is_file()


def test_vote_decoding_answers_with_what_the_samples_agree_on() -> None:
    from agents.llm_agent import vote

    texts = [
        '<answer>["lumbar chair", "desk chair"]</answer>',
        '<answer>["Desk Chair", "office chair", "desk chair"]</answer>',
        "no answer",
        '<answer>["mesh chair", "desk chair", "office chair"]</answer>',
    ]
    assert parse_action(vote(texts, ActionLimits())).expansions == (
        "desk chair",
        "office chair",
        "lumbar chair",
        "mesh chair",
    )  # 3 votes, 2 votes, then the ties in the order first written
    # Under a 2-expansion limit the last sample (3 distinct) is invalid and does not vote.
    assert parse_action(vote(texts, ActionLimits(max_expansions=2))).expansions == ("desk chair", "lumbar chair")
    assert vote(["garbage", "more garbage"], ActionLimits()) == "garbage"


def test_a_voting_agent_is_reproducible_and_labelled(tiny_policy, tiny_model_dir: Path, tmp_path: Path) -> None:
    policy = tiny_policy()
    policy.config = replace(policy.config, model=str(tiny_model_dir))
    policy.save(tmp_path / "policy")
    grpo.GRPOAgent.describe(tmp_path, "synthetic", None)
    agent = agents.load(tmp_path, decoding="vote", vote_samples=3)
    first, again = agent.act(OBSERVATIONS[:2]), agent.act(OBSERVATIONS[:2])
    assert first == again and agent.label == "grpo+vote" and agent.config["vote_samples"] == 3
    with pytest.raises(ValueError, match="decoding must be one of greedy, guided, vote"):
        agents.load(tmp_path, decoding="beam")


def test_an_off_policy_guide_joins_each_group_and_the_policy_moves_towards_it(tiny_policy, tmp_path: Path) -> None:
    env = LeserEnv(catalog="synthetic", split="train")
    env.reset(seed=0)
    config = grpo.GRPOConfig(
        queries_per_step=2, num_generations=3, max_completion_length=96, off_policy_guide="prf", learning_rate=5e-3
    )
    policy = tiny_policy()
    guide = agents.make("prf", catalog=env.catalog_spec)
    samples, rewards, infos = grpo.collect(policy, env, config, guide=guide)
    assert samples.n == 4 and rewards.shape == (2, 4) and len(samples.completion_ids) == len(infos) == 8
    penalty = env.reward.config.format_penalty
    for row, guide_text in enumerate(samples.texts[3::4]):
        query, query_id = infos[row * 4 + 3]["query"], infos[row * 4 + 3]["query_id"]
        action = guide.act([env.observe(query_id)[0]])[0]
        expansions = [text for text in parse_action(action).expansions if text != query]
        assert guide_text == sft.target_action(expansions, query)  # written as the warm-up writes targets
        assert rewards[row, 3] > penalty and (rewards[row, :3] == penalty).all()  # the random model's garbage
    guide_rows = [samples.completion_ids[3], samples.completion_ids[7]]
    before = policy.completion_logprobs(samples.prompt_ids, guide_rows, grad=False)
    torch.testing.assert_close(before, [samples.logprobs[3], samples.logprobs[7]])  # its "sampling" is the policy now
    optimizer = torch.optim.AdamW(list(policy.trainable_parameters()), lr=config.learning_rate)
    grpo.update(policy, optimizer, samples, grpo.group_advantages(rewards), config)
    after = policy.completion_logprobs(samples.prompt_ids, guide_rows, grad=False)
    assert all(new.sum() > old.sum() for new, old in zip(after, before, strict=True))  # pulled towards the guide

    result = grpo.train(policy, env, grpo.GRPOConfig(**{**config.__dict__, "max_steps": 1}), tmp_path, progress=False)
    record = result["log"][0]
    assert record["reward_mean"] == penalty and record["valid_rate"] == 0.0  # the policy's own samples only
    assert record["guide_reward"] > penalty and record["guide_advantage"] > 0 and record["zero_signal"] == 0.0
    # every own sample invalid, the guide valid: the guide's advantage mirrors theirs, half the mass
    assert record["invalid_advantage_share"] == pytest.approx(0.5)
    valid_baseline = grpo.GRPOConfig(**{**config.__dict__, "max_steps": 1, "valid_baseline": True})
    record = grpo.train(policy, env, valid_baseline, tmp_path / "valid_baseline", progress=False)["log"][0]
    assert record["guide_advantage"] == 0.0 and record["invalid_advantage_share"] == pytest.approx(1.0)  # lone valid
    assert (tmp_path / "learning_curve.png").is_file()  # drawn with the guide's reward beside the policy's
    with pytest.raises(ValueError, match="off_policy_guide must be one of prf, reward-search"):
        grpo.GRPOConfig(off_policy_guide="sft")


class RewardWithoutConfig:
    """A reward object (``score_group``) with no ``RewardConfig`` behind it."""

    def __init__(self, reward: object) -> None:
        self.inner = reward

    def score_group(self, query: str, actions: list) -> list:
        return self.inner.score_group(query, actions)


def test_the_reward_search_guide_searches_with_the_training_environments_reward(tiny_policy) -> None:
    env = LeserEnv(catalog="synthetic", split="train", engine_check=True, reward="paper")
    guide = grpo.guide_agent("reward-search", env)
    assert guide.config["reward"] == asdict(env.reward.config) and guide.env.reward.config == env.reward.config
    observation, _ = env.observe(env.query_ids[0])
    (action,) = guide.act([observation])
    assert grpo.guide_texts(guide, [observation], tiny_policy())[0] == sft.target_action(
        [text for text in parse_action(action).expansions if text != observation["query"]], observation["query"]
    )
    assert grpo.guide_agent("prf", env).name == "prf"
    custom = LeserEnv(catalog="synthetic", split="train", reward=RewardWithoutConfig(env.reward))
    with pytest.raises(ValueError, match="reward-search guide needs"):
        grpo.guide_agent("reward-search", custom)


def test_a_trained_agents_run_directory_can_be_the_guide(tiny_policy, tmp_path: Path) -> None:
    """``off_policy_guide=RUN``: the saved agent (here a learned-edit run) writes each group's extra
    completion; a directory without an agent.json is refused when the config is made."""
    from agents.learned_edit import LearnedEditConfig
    from agents.learned_edit import run as train_learned_edit

    env = LeserEnv(catalog="synthetic", split="train", engine_check=True)
    run_dir = tmp_path / "learned"
    train_learned_edit(LearnedEditConfig(train_queries=40), env, run_dir, progress=False)
    config = grpo.GRPOConfig(queries_per_step=2, num_generations=2, off_policy_guide=str(run_dir))
    guide = grpo.guide_agent(config.off_policy_guide, env)
    assert guide.name == "learned-edit"
    samples, rewards, infos = grpo.collect(tiny_policy(), env, config, guide=guide)
    assert samples.n == 3 and rewards.shape == (2, 3)
    for row, guide_text in enumerate(samples.texts[2::3]):
        query, query_id = infos[row * 3 + 2]["query"], infos[row * 3 + 2]["query_id"]
        action = guide.act([env.observe(query_id)[0]])[0]  # the run's agent, loaded once by guide_agent
        assert guide_text == sft.target_action([t for t in parse_action(action).expansions if t != query], query)
        assert rewards[row, 2] > env.reward.config.format_penalty
    with pytest.raises(ValueError, match="a trained agent's run directory"):
        grpo.GRPOConfig(off_policy_guide=str(tmp_path))


def test_a_departure_screen_keeps_the_queries_where_the_policy_is_not_prf(
    tiny_policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = LeserEnv(catalog="synthetic", split="train", engine_check=True)
    prf = agents.make("prf", catalog=env.catalog_spec)
    screened = env.query_ids[:6]
    departing = {env.observe(query_id)[0]["query"] for query_id in screened[1::2]}

    class CopiesPrfOnHalf:
        """A policy whose greedy answer is prf's on half the queries and garbage on the rest."""

        def act(self, observations, guided=False):
            return ["garbage" if o["query"] in departing else prf.act([o])[0] for o in observations]

    kept = grpo.departure_query_ids(CopiesPrfOnHalf(), env, 6, tmp_path, query_ids=screened, batch_size=4)
    assert sorted(kept) == sorted(screened[1::2])  # exactly the garbage ones depart
    written = json.loads((tmp_path / grpo.DEPARTURE_QUERIES_FILE).read_text())
    assert written["screened"] == 6 and written["query_ids"] == kept
    assert written["reward_minus_prf"] < 0  # garbage scores the format penalty, prf's sets more
    with pytest.raises(ValueError, match="serves prf's set on all 3 screened"):
        grpo.departure_query_ids(CopiesPrfOnHalf(), env, 3, tmp_path / "none", query_ids=screened[::2])

    # GRPO then draws only the departures, and a resumed run reads the screen back.
    pools = []
    draw = grpo.draw_queries
    monkeypatch.setattr(
        grpo, "draw_queries", lambda env, count, ids=None: pools.append(list(ids)) or draw(env, count, ids)
    )
    config = grpo.GRPOConfig(
        queries_per_step=2, num_generations=2, max_completion_length=16, max_steps=1, screen_departures=4, save_steps=1
    )
    policy = tiny_policy()
    result = grpo.train(policy, env, config, tmp_path / "run", progress=False, query_ids=screened)
    screen = json.loads((tmp_path / "run" / grpo.DEPARTURE_QUERIES_FILE).read_text())
    assert screen["screened"] == 4 and set(screen["query_ids"]) <= set(screened)
    assert result["drawn_from"] == len(screen["query_ids"])  # what the stage's summary line reports
    assert pools == [screen["query_ids"]]  # the random tiny model writes garbage: it departs everywhere
    (tmp_path / "run" / grpo.DEPARTURE_QUERIES_FILE).write_text(json.dumps({**screen, "query_ids": screened[:1]}))
    grpo.train(policy, env, replace(config, max_steps=2), tmp_path / "run", resume=True, progress=False)
    assert pools[-1] == screened[:1]  # read back, not screened again
    (tmp_path / "run" / grpo.DEPARTURE_QUERIES_FILE).unlink()  # the trained policy must not screen again
    with pytest.raises(ValueError, match=r"departure_queries\.json: missing; the departure screen this run"):
        grpo.train(policy, env, replace(config, max_steps=3), tmp_path / "run", resume=True, progress=False)
