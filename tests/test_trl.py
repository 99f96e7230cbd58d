"""TRL interop: the dataset renders our prompts, the reward function scores groups like the env,
and a real GRPOTrainer step runs on our reward (the trl extra; CI installs it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import agents
from agents.llm_agent import LLMAgent
from agents.trl import LeserReward, completion_text, make_dataset, save_as_leser_run
from leser_env.env import LeserEnv
from leser_env.prompt import render_messages

pytest.importorskip("trl", reason="the trl extra: pip install -e '.[trl]'")


@pytest.fixture(scope="module")
def env() -> LeserEnv:
    return LeserEnv(catalog="synthetic", split="train")


def test_the_dataset_prompt_is_what_our_policy_renders(tiny_policy, env: LeserEnv) -> None:
    policy = tiny_policy(max_prompt_tokens=380)  # cuts the product context, keeps the rest
    dataset = make_dataset(env=env, limit=6, tokenizer=policy.tokenizer, max_prompt_tokens=380)
    assert dataset.column_names == ["prompt", "query", "query_id"] and len(dataset) == 6
    cut = 0
    for row in dataset:
        observation, _ = env.observe(row["query_id"])
        text = policy.tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == policy.encode_prompt(observation)
        assert row["query"] == observation["query"] and row["prompt"][0]["role"] == "system"
        cut += row["prompt"][1]["content"].count("\n") < render_messages(observation)[1]["content"].count("\n")
    assert cut, "the test should exercise the context cut"


def test_the_dataset_leaves_out_excluded_queries_before_the_limit(env: LeserEnv) -> None:
    excluded = env.query_ids[1:4]  # e.g. the queries a warm-up learnt (agents.sft.queries_learnt_by)
    dataset = make_dataset(env=env, limit=5, exclude_query_ids=excluded)
    assert dataset["query_id"] == [env.query_ids[0], *env.query_ids[4:8]]
    with pytest.raises(ValueError, match=f"no train queries in catalog 'synthetic' once {len(env.query_ids)} are"):
        make_dataset(env=env, exclude_query_ids=env.query_ids)


def test_the_example_refuses_to_skip_warm_up_queries_without_a_warm_up() -> None:
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "examples" / "train_with_trl.py"
    result = subprocess.run(
        [sys.executable, str(script), "--skip-warm-up-queries"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and "--skip-warm-up-queries needs --init RUN" in result.stderr


def test_the_reward_scores_each_querys_completions_as_one_group(env: LeserEnv) -> None:
    queries = [env.catalog.queries[qid] for qid in env.query_ids[:2]]
    completions = [
        [{"role": "assistant", "content": '<think>x</think><answer>["office chair"]</answer>'}],
        [{"role": "assistant", "content": "no answer at all"}],
        '<answer>["desk lamp", "table lamp"]</answer>',
        None,  # not text: the format penalty, no exception
    ]
    query = [queries[0], queries[0], queries[1], queries[1]]
    logged: dict[str, float] = {}
    reward = LeserReward(env=env)
    values = reward(prompts=[[]] * 4, completions=completions, query=query, log_metric=logged.__setitem__)
    texts = [completion_text(c) for c in completions]
    expected = [*env.score_group(queries[0], texts[:2])[0], *env.score_group(queries[1], texts[2:])[0]]
    assert values == pytest.approx(expected)
    assert values[1] == values[3] == env.reward.config.format_penalty
    assert set(logged) == {"leser/r_rel", "leser/r_page", "leser/r_size", "leser/valid_rate", "leser/expansions"}
    assert logged["leser/valid_rate"] == 0.5 and reward.__name__ == "leser"
    with pytest.raises(ValueError, match="'query' column"):
        reward(prompts=[[]], completions=["x"])


def test_one_grpo_trainer_step_on_our_reward_and_back_into_a_leser_run(
    tiny_model_dir: Path, tmp_path: Path, env: LeserEnv
) -> None:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    reward = LeserReward(env=env)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        reward_funcs=reward,
        args=GRPOConfig(
            output_dir=str(tmp_path / "trl"),
            max_steps=1,
            per_device_train_batch_size=2,
            num_generations=2,
            max_completion_length=8,
            beta=0.04,
            learning_rate=1e-3,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
        ),
        train_dataset=make_dataset(env=env, limit=4, tokenizer=tokenizer, max_prompt_tokens=400),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    logged = trainer.state.log_history[0]
    assert trainer.state.global_step == 1
    assert np.isfinite(logged["reward"]) and "leser/r_rel" in logged and "leser/valid_rate" in logged
    assert len(reward.last_breakdowns) == 2  # one group of num_generations completions

    run = save_as_leser_run(trainer.model, tmp_path / "run", str(tiny_model_dir), "synthetic", max_new_tokens=8)
    agent = agents.load(run)
    assert isinstance(agent, LLMAgent) and agent.name == "grpo"
    observation, _ = env.observe(env.query_ids[0])
    assert isinstance(agent.act([observation])[0], str)


def test_the_trl_benchmark_times_both_sides_on_a_random_model(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "benchmarks" / "bench_grpo_vs_trl.py"
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, str(script), "--random-init", "tiny", "--steps", "1", "--json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["weights"] == "random" and report["device"] == "cpu"
    for side in ("trl", "ours"):
        assert report["seconds_per_step"][side]["step"] > 0 and report["generation_tokens_per_second"][side] > 0
    assert json.loads((out / "throughput.json").read_text()) == report
    assert (out / "throughput.png").read_bytes().startswith(b"\x89PNG")

    # Saved reports redrawn into one figure, without timing anything; --plot needs --out.
    (out / "throughput.png").unlink()
    redraw = [sys.executable, str(script), "--plot", str(out / "throughput.json"), str(out / "throughput.json")]
    assert subprocess.run(redraw, capture_output=True, timeout=120, check=False).returncode == 2
    result = subprocess.run([*redraw, "--out", str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "throughput.png").read_bytes().startswith(b"\x89PNG")
