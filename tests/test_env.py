"""LESER-v0 as a Gymnasium user meets it: registration, spaces, seeding, vector envs, group scoring."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import leser_env  # noqa: F401  (registers LESER-v0)
from catalogs import Catalog, Split
from leser_env.actions import encode_action
from leser_env.env import PARTIAL_MATCH_NOTE, ExpansionListAction, LeserEnv
from leser_env.prompt import render_messages

INFO_KEYS = {
    "query_id",
    "query",
    "reward_breakdown",
    "expansions",
    "query_results",
    "expansion_results",
    "union_results",
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
        assert reward == env.config.format_penalty and not info["reward_breakdown"]["valid"]


def test_an_episode_is_one_query_with_the_documented_info(env: LeserEnv) -> None:
    observation, reset_info = env.reset(seed=1)
    assert observation["query"] == env.catalog.queries[reset_info["query_id"]]
    product_lines = observation["context"].removeprefix(PARTIAL_MATCH_NOTE + "\n").split("\n")
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


def test_context_falls_back_to_disjunctive_matching(env: LeserEnv) -> None:
    observation, info = env.reset(options={"query": "chair for my aching back after long workdays"})
    assert env.engine.count(observation["query"]) == 0
    note, *lines = observation["context"].split("\n")
    assert note == PARTIAL_MATCH_NOTE and len(lines) == len(info["context_ids"]) == env.context_k
    assert all(line.startswith("- ") for line in lines)
    observation, _ = env.reset(options={"query": "grey sofa"})
    assert observation["context"].startswith("- ") and PARTIAL_MATCH_NOTE not in observation["context"]


def test_score_group_equals_stepping_each_action(env: LeserEnv) -> None:
    actions = [
        encode_action(["grey sofa"]),
        encode_action(["oak desk", "grey sofa"]),
        "garbage",
        encode_action(["lumbar support office chair", "ergonomic chair"]),
    ]
    env.reset(seed=3)
    query_id = env.query_id
    rewards, infos = env.score_group(actions)
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
    assert other.engine is env.engine and other.reward_model.relevance is env.reward_model.relevance


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
    messages = render_messages(observation, env.config)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "<answer>" in messages[0]["content"] and "every word" in messages[0]["content"]
    assert observation["query"] in messages[1]["content"] and observation["context"] in messages[1]["content"]


def test_reward_config_and_mode_arguments(synthetic: Catalog) -> None:
    loose = LeserEnv(catalog="synthetic", reward_config={"size_weight": 0.0}, mode="or")
    assert loose.config.mode == "or" and loose.config.size_weight == 0.0
    with pytest.raises(ValueError, match="format_penalty"):
        LeserEnv(catalog="synthetic", reward_config={"format_penalty": 0.0})
