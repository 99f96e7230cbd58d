"""LESER-v0 as a Gymnasium user meets it: registration, spaces, seeding, vector envs, group scoring."""

from __future__ import annotations

import re
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import agents
import leser_env  # noqa: F401  (registers LESER-v0)
from catalogs import Catalog, Split
from leser_env.actions import ActionLimits, encode_action
from leser_env.env import ExpansionListAction, LeserEnv
from leser_env.prompt import PARTIAL_MATCH_HEADING, RESULTS_HEADING, render_messages
from leser_env.reward import Reward, RewardBreakdown, RewardConfig

INFO_KEYS = {
    "query_id",
    "query",
    "reward_breakdown",
    "expansions",
    "query_results",
    "expansion_results",
    "union_results",
    "served_results",
    "metrics",
}


@pytest.fixture(scope="module")
def env(synthetic: Catalog) -> LeserEnv:
    return gym.make("LESER-v0", catalog="synthetic", split="train").unwrapped


def test_check_env_passes(env: LeserEnv) -> None:
    check_env(env, skip_render_check=True)


def test_random_text_actions_get_the_format_penalty(env: LeserEnv) -> None:
    env.action_space.seed(0)
    for seed in range(20):
        observation, _ = env.reset(seed=seed)
        assert env.observation_space.contains(observation)
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert terminated and not truncated
        assert reward == env.reward.config.format_penalty and not info["reward_breakdown"]["valid"]


def test_an_episode_is_one_query_with_the_documented_info(env: LeserEnv) -> None:
    observation, reset_info = env.reset(seed=1)
    assert observation["query"] == env.catalog.queries[reset_info["query_id"]]
    product_lines = observation["context"].split("\n")
    assert len(product_lines) == len(reset_info["context_ids"]) and all(line.startswith("- ") for line in product_lines)
    _, reward, terminated, _, info = env.step(encode_action(["grey sofa", "oak desk"]))
    assert terminated and set(info) == INFO_KEYS
    assert info["reward_breakdown"]["reward"] == reward and info["expansions"] == ["grey sofa", "oak desk"]
    assert set(info["query_results"]) <= set(info["union_results"])
    assert info["metrics"]["labelled"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(encode_action(["sofa"]))  # the episode is over


def test_reset_is_deterministic_by_seed(env: LeserEnv) -> None:
    def queries(seed: int) -> list[str]:
        first = env.reset(seed=seed)[0]["query"]
        return [first] + [env.reset()[0]["query"] for _ in range(9)]

    assert queries(7) == queries(7)
    assert queries(7) != queries(8)
    assert {env.reset()[1]["query_id"] for _ in range(50)} <= set(env.catalog.query_ids(Split.TRAIN))


def test_constructor_seed_seeds_the_first_reset(synthetic: Catalog) -> None:
    first = LeserEnv(catalog="synthetic", seed=5).reset()[0]
    assert first == LeserEnv(catalog="synthetic", seed=5).reset()[0]


def test_pinned_queries(env: LeserEnv, synthetic: Catalog) -> None:
    query_id = synthetic.query_ids(Split.TEST)[0]  # any split can be pinned by id
    observation, info = env.reset(options={"query_id": query_id})
    assert observation["query"] == synthetic.queries[query_id] and info["query_id"] == query_id
    observation, info = env.reset(options={"query": "chair for back pain 🎉"})
    assert observation["query"].startswith("chair for back pain") and info["query_id"] is None
    assert env.observation_space.contains(observation)
    _, _, _, _, step_info = env.step(encode_action(["lumbar support office chair"]))
    assert not step_info["metrics"]["labelled"]
    with pytest.raises(ValueError, match="unknown query id"):
        env.reset(options={"query_id": "no-such-query"})


def test_context_falls_back_to_disjunctive_matching_and_says_so_in_a_flag(env: LeserEnv) -> None:
    observation, info = env.reset(options={"query": "chair for my aching back after long workdays"})
    assert env.engine.count(observation["query"]) == 0
    lines = observation["context"].split("\n")
    assert observation["partial_match"] == 1 and len(lines) == len(info["context_ids"]) == env.context_k
    assert all(line.startswith("- ") for line in lines)  # product lines only: the flag carries the fallback
    assert PARTIAL_MATCH_HEADING in render_messages(observation)[1]["content"]
    observation, _ = env.reset(options={"query": "grey sofa"})
    assert observation["partial_match"] == 0 and observation["context"].startswith("- ")
    assert RESULTS_HEADING in render_messages(observation)[1]["content"]


def test_score_group_equals_stepping_each_action(env: LeserEnv) -> None:
    actions = [
        encode_action(["grey sofa"]),
        encode_action(["oak desk", "grey sofa"]),
        "garbage",
        encode_action(["lumbar support office chair", "ergonomic chair"]),
    ]
    observation, _ = env.reset(seed=3)
    query_id = env.query_id
    rewards, infos = env.score_group(observation["query"], actions, query_id)
    assert env.observation is not None  # scoring a group does not end the episode
    for action, reward, info in zip(actions, rewards, infos, strict=True):
        env.reset(options={"query_id": query_id})
        _, stepped, _, _, step_info = env.step(action)
        assert stepped == reward and step_info == info


def test_list_action_wrapper(synthetic: Catalog) -> None:
    wrapped = ExpansionListAction(gym.make("LESER-v0", catalog="synthetic"))
    wrapped.reset(seed=2)
    query_id = wrapped.unwrapped.query_id
    _, listed, *_ = wrapped.step(["grey sofa", "oak desk"])
    plain = gym.make("LESER-v0", catalog="synthetic")
    plain.reset(options={"query_id": query_id})
    _, texted, *_ = plain.step(encode_action(["grey sofa", "oak desk"]))
    assert listed == texted
    assert isinstance(wrapped.action_space.sample(), tuple)


def test_heavy_objects_are_shared_within_a_process(env: LeserEnv) -> None:
    other = LeserEnv(catalog="synthetic", split="test")
    assert other.engine is env.engine and other.reward.relevance is env.reward.relevance


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_env(mode: str, env: LeserEnv) -> None:
    vector = gym.make_vec("LESER-v0", num_envs=4, vectorization_mode=mode, catalog="synthetic")
    try:
        observations, _infos = vector.reset(seed=11)
        assert len(observations["query"]) == 4 and all(observations["query"])
        expected = []
        for index in range(4):
            env.reset(seed=11 + index)
            expected.append(env.observation["query"])
        assert list(observations["query"]) == expected  # each sub-env seeded seed + index
        actions = [encode_action([query]) for query in observations["query"]]
        _, rewards, terminated, _, _ = vector.step(actions)
        assert np.all(rewards == 0.0) and np.all(terminated)  # the query itself scores exactly 0
        next_observations, *_ = vector.step(actions)  # autoreset: a fresh episode, real text
        assert all(next_observations["query"]) and all(next_observations["context"])
    finally:
        vector.close()


def test_prompt_renders_the_format_and_the_observation(env: LeserEnv) -> None:
    observation, _ = env.reset(seed=4)
    messages = render_messages(observation, env.action_limits)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "<answer>" in messages[0]["content"] and "every word" in messages[0]["content"]
    user = messages[1]["content"]
    assert observation["query"] in user and observation["context"] in user and observation["evidence"] in user
    assert "1 to 3 expansion" in render_messages(observation, ActionLimits(max_expansions=3))[0]["content"]


def test_reward_config_and_mode_arguments(synthetic: Catalog) -> None:
    loose = LeserEnv(catalog="synthetic", reward={"size_weight": 0.0}, mode="or")
    assert loose.reward.config.mode == "or" and loose.reward.config.size_weight == 0.0 and loose.matching == "or"
    assert loose.reward.config.page_weight == 1.0  # the other fields come from the default preset
    with pytest.raises(ValueError, match="format_penalty"):
        LeserEnv(catalog="synthetic", reward={"format_penalty": 0.0})
    with pytest.raises(ValueError, match="unknown reward preset"):
        LeserEnv(catalog="synthetic", reward="nonsense")
    with pytest.raises(ValueError, match="unknown reward config field"):
        LeserEnv(catalog="synthetic", reward={"lambda": 0.2})


def test_presets_are_picked_by_name_through_gym_make(synthetic: Catalog) -> None:
    paper = gym.make("LESER-v0", catalog="synthetic", reward="paper").unwrapped
    default = gym.make("LESER-v0", catalog="synthetic").unwrapped
    assert paper.reward.config == RewardConfig.preset("paper") and default.reward.config == RewardConfig()
    custom = gym.make("LESER-v0", catalog="synthetic", reward=RewardConfig(size_weight=0.3)).unwrapped
    assert custom.reward.config.size_weight == 0.3


class LengthPenalty:
    """A reward variant as a researcher would write one: a class wrapping the built-in reward."""

    def __init__(self, inner: Reward, per_expansion: float) -> None:
        self.inner, self.per_expansion = inner, per_expansion

    def score_group(self, query, actions) -> list[RewardBreakdown]:
        scored = self.inner.score_group(query, actions)
        return [
            b if not b.valid else replace(b, reward=b.reward - self.per_expansion * len(b.expansions)) for b in scored
        ]


def test_a_custom_reward_object_plugs_into_the_env(env: LeserEnv) -> None:
    custom = LeserEnv(catalog="synthetic", reward=LengthPenalty(env.reward, 0.25))
    observation, info = custom.reset(seed=5)
    action = encode_action(["grey sofa", "oak desk"])
    _, reward, _, _, step_info = custom.step(action)
    plain, _ = env.score_group(observation["query"], [action], info["query_id"])
    assert reward == pytest.approx(plain[0] - 0.5) and step_info["reward_breakdown"]["reward"] == reward
    with pytest.raises(ValueError, match="not a reward object"):
        LeserEnv(catalog="synthetic", reward=LengthPenalty(env.reward, 0.1), engine_check=True)


class RelevanceOnly(Reward):
    """A reward variant as a subclass: only the paper's relevance term counts."""

    def combine(self, r_rel: float, r_page: float, r_size: float) -> float:
        return r_rel


def test_a_reward_subclass_is_used_as_it_is(env: LeserEnv) -> None:
    custom = LeserEnv(catalog="synthetic", reward=RelevanceOnly(env.reward.engine, env.reward.relevance))
    custom.reset(options={"query": "chair for my aching back after long workdays"})  # matches nothing alone
    _, reward, _, _, step_info = custom.step(encode_action(["office chair"]))
    terms = step_info["reward_breakdown"]
    assert reward == terms["r_rel"] and terms["r_page"] > 0 and terms["r_size"] > 0


def test_observe_and_score_group_are_stateless(env: LeserEnv, synthetic: Catalog) -> None:
    env.reset(seed=9)
    current = env.observation
    query_id = synthetic.query_ids(Split.TEST)[3]
    observation, info = env.observe(query_id)
    assert info["query_id"] == query_id and observation == env.reset(options={"query_id": query_id})[0]
    env.reset(seed=9)
    assert env.observe(text="grey sofa")[0]["query"] == "grey sofa" and env.observation == current
    rewards, infos = env.score_group("grey sofa", [encode_action(["grey sofa"])])
    assert rewards[0] == 0.0 and env.observation == current and infos[0]["query_id"] is None
    with pytest.raises(TypeError, match="list of actions"):
        env.score_group("grey sofa", encode_action(["grey sofa"]))
    with pytest.raises(TypeError, match="options must be a dict"):
        env.reset(options=["x"])
    with pytest.raises(ValueError, match="exactly one"):
        env.observe()


def test_feedback_evidence_is_on_by_default_and_switchable(env: LeserEnv) -> None:
    observation, _ = env.observe(text="office chair")
    lines = observation["evidence"].split("\n")
    assert lines[0].startswith("Feedback terms (weight): ") and lines[1].startswith("Query words the catalog matches")
    assert "chair" in lines[1] and env.observation_space.contains(observation)
    plain = LeserEnv(catalog="synthetic", feedback_evidence=False)
    assert plain.observe(text="office chair")[0]["evidence"] == ""
    assert "Feedback terms" not in render_messages(plain.observe(text="office chair")[0])[1]["content"]


def annotated(text: str) -> list[tuple[str, str]]:
    """``word (number), word (number)`` as (word, number) pairs; the number must be in parentheses."""
    pairs = [re.fullmatch(r"(.+) \(([\d.]+)\)", item) for item in text.split(", ")]
    assert all(pairs), text
    return [(pair.group(1), pair.group(2)) for pair in pairs if pair]


@pytest.mark.parametrize("query", ["rattan high chair", "grey swivel chair", "farmhouse bureau", "office chair"])
def test_feedback_evidence_counts_are_the_engines_conjunctive_matches(env: LeserEnv, query: str) -> None:
    """The "match together" lines say what the engine finds for those words searched together."""
    lines = dict(line.split(": ", 1) for line in env.observe(text=query)[0]["evidence"].split("\n"))
    product_word = lines["Product word"]
    [(core_text, core_count)] = annotated(lines["Words that match together (products)"])
    core = core_text.split()
    assert product_word in core and len(core) <= 2 and int(core_count) > 0
    assert env.engine.search(" ".join(core), 0, "and").total == int(core_count)
    terms = [term for term, _ in annotated(lines["Feedback terms (weight)"])]
    with_core = annotated(lines["Feedback terms with them (products)"])
    assert [term for term, _ in with_core] == terms
    for term, count in with_core:
        assert env.engine.search(f"{term} {' '.join(core)}", 0, "and").total == int(count)
    if len(core) == 1:  # no other query word matches together with the product word
        for other, _ in annotated(lines["Query words the catalog matches (products)"].split(";")[0]):
            if other != product_word:
                assert env.engine.search(f"{other} {product_word}", 0, "and").total == 0


@pytest.mark.parametrize("query", ["52x84 in drapes", "42 inch long seat", "mid century night table", "zzqx qqzx"])
def test_feedback_evidence_ends_with_prfs_expansions_and_keeps_numbers_apart_from_words(
    env: LeserEnv, query: str
) -> None:
    """The last line is exactly what the prf baseline sends; a count is never written like a word."""
    evidence = env.observe(text=query)[0]["evidence"]
    expansions, _ = agents.make("prf", catalog="synthetic").expand(query)
    classic = [line for line in evidence.split("\n") if line.startswith("Classic expansions (prf): ")]
    assert [line.split(": ", 1)[1].split("; ") for line in classic] == ([expansions] if expansions else [])
    for line in evidence.split("\n"):
        if "(products)" in line or "(weight)" in line:
            for item in line.split(": ", 1)[1].split("; no match")[0].split(", "):
                assert item == "(none)" or re.fullmatch(r"\S.* \([\d.]+\)", item), line


def test_feedback_evidence_without_a_product_word_has_no_core(env: LeserEnv) -> None:
    assert "match together" not in env.observe(text="zzqx qqzx")[0]["evidence"]


def test_engine_check_drops_expansions_that_match_nothing(env: LeserEnv) -> None:
    checked = LeserEnv(catalog="synthetic", engine_check=True)
    action = encode_action(["grey sofa", "zzqx nonexistent"])
    plain = env.score_group("sofa", [action])[1][0]["reward_breakdown"]
    kept = checked.score_group("sofa", [action])[1][0]["reward_breakdown"]
    assert kept["expansions"] == ["grey sofa"] and kept["dropped_expansions"] == ["zzqx nonexistent"]
    assert kept["reward"] > plain["reward"]  # a zero-relevance expansion no longer drags the mean down
    nothing = checked.score_group("sofa", [encode_action(["zzqx nonexistent"])])[0]
    assert nothing[0] == 0.0  # every expansion dropped: the query alone is served


@pytest.mark.parametrize(
    "action",
    ["<answer>[" + "9" * 5000 + "]</answer>", "<answer>" + "[" * 2000 + "]" * 2000 + "</answer>", None, 12, {"a": 1}],
)
def test_hostile_actions_get_the_format_penalty(env: LeserEnv, action: object) -> None:
    env.reset(seed=1)
    _, reward, terminated, _, info = env.step(action)
    assert terminated and reward == env.reward.config.format_penalty and not info["reward_breakdown"]["valid"]
    wrapped = ExpansionListAction(LeserEnv(catalog="synthetic"))
    wrapped.reset(seed=1)
    assert wrapped.step(action)[1] == env.reward.config.format_penalty
