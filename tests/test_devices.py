"""Where the policy runs: device and dtype resolution, device-independent checkpoints, and (with CUDA) a GPU pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agents import grpo, ppo
from agents.model_loading import resolve_device, resolve_dtype
from agents.policy import LLMPolicy
from agents.training import RunLog, load_checkpoint, save_checkpoint
from leser_env.env import LeserEnv

OBSERVATIONS = [{"query": "chair for back pain", "context": "- Ergonomic Office Chair | Furniture > Chairs"}]
HAS_CUDA = torch.cuda.is_available()


def test_explicit_cpu_and_auto_without_cuda() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not HAS_CUDA:
        assert resolve_device("auto").type in ("cpu", "mps")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu-please")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error a machine without CUDA gives")
def test_asking_for_cuda_without_it_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device("cuda:0")


def test_dtype_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32  # bfloat16 only where a GPU supports it
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16 and resolve_dtype("float32", cpu) == torch.float32
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("float8", cpu)


def test_a_policy_on_an_explicit_cpu_keeps_every_tensor_there(tiny_policy) -> None:
    policy = tiny_policy(device="cpu")
    assert policy.device == torch.device("cpu") and policy.dtype == torch.float32
    samples = policy.sample(OBSERVATIONS, n=2)
    assert all(logprobs.device.type == "cpu" for logprobs in samples.logprobs)


def test_a_checkpoint_saved_in_bfloat16_loads_in_float32(tiny_policy, tmp_path: Path) -> None:
    policy = tiny_policy(dtype="bfloat16")
    assert next(policy.model.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    samples = policy.sample(OBSERVATIONS, n=2)
    policy.save(tmp_path / "policy")
    assert json.loads((tmp_path / "policy" / "policy.json").read_text())["dtype"] == "bfloat16"
    restored = LLMPolicy.load(
        tmp_path / "policy", model=tiny_policy(base_only=True), tokenizer=policy.tokenizer, dtype="float32"
    )
    assert {parameter.dtype for parameter in restored.model.parameters()} == {torch.float32}
    prompts = [prompt for prompt in samples.prompt_ids for _ in range(samples.n)]
    again = restored.completion_logprobs(prompts, samples.completion_ids, grad=False)
    for sampled, recomputed in zip(samples.logprobs, again, strict=True):
        torch.testing.assert_close(sampled.float(), recomputed, atol=0.15, rtol=0.0)  # bfloat16's precision


def test_a_policy_config_with_an_unknown_key_is_refused(tiny_policy, tmp_path: Path) -> None:
    tiny_policy().save(tmp_path / "policy")
    config = json.loads((tmp_path / "policy" / "policy.json").read_text())
    (tmp_path / "policy" / "policy.json").write_text(json.dumps({**config, "colour": "blue"}))
    with pytest.raises(ValueError, match="unknown: \\['colour'\\]"):
        LLMPolicy.load(tmp_path / "policy")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_grpo_step_on_cuda_in_bfloat16(tiny_policy, tmp_path: Path) -> None:
    policy = tiny_policy(device="cuda", dtype="auto")
    assert policy.device.type == "cuda" and next(policy.model.parameters()).device.type == "cuda"
    config = grpo.GRPOConfig(max_steps=1, queries_per_step=2, num_generations=2, max_completion_length=8, save_steps=1)
    result = grpo.train(policy, LeserEnv(catalog="synthetic"), config, tmp_path, progress=False)
    assert result["steps"] == 1
    restored = LLMPolicy.load(
        tmp_path / "policy",
        model=tiny_policy(base_only=True),
        tokenizer=policy.tokenizer,
        device="cpu",
        dtype="float32",
    )
    assert restored.device.type == "cpu" and restored.sample(OBSERVATIONS, n=1).texts  # a GPU run resumes on CPU


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_ppo_step_and_sampled_log_probabilities_on_cuda(tiny_policy, tmp_path: Path) -> None:
    policy = tiny_policy(device="cuda", dtype="bfloat16")
    samples = policy.sample(OBSERVATIONS, n=2)
    assert all(logprobs.device.type == "cuda" for logprobs in samples.logprobs)
    prompts = [prompt for prompt in samples.prompt_ids for _ in range(samples.n)]
    again = policy.completion_logprobs(prompts, samples.completion_ids, grad=False)
    for sampled, recomputed in zip(samples.logprobs, again, strict=True):  # sampling and the loss pass agree
        torch.testing.assert_close(sampled.float(), recomputed.float(), atol=0.15, rtol=0.0)
    config = ppo.PPOConfig(max_steps=1, queries_per_step=2, response_length=8, save_steps=1)
    result = ppo.train(policy, LeserEnv(catalog="synthetic"), config, tmp_path, progress=False)
    assert result["steps"] == 1 and (tmp_path / "trainer_state.json").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_a_checkpoint_on_cuda_restores_the_gpus_sampling_stream_and_the_optimizer(tiny_policy, tmp_path: Path) -> None:
    """A run resumed on a GPU draws the same random numbers it would have drawn, and its optimizer's
    moments come back on the GPU, beside the parameters they update."""
    policy = tiny_policy(device="cuda", dtype="float32")
    parameters = list(policy.trainable_parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    sum(parameter.sum() for parameter in parameters).backward()
    optimizer.step()
    log = RunLog(tmp_path, [{"step": 1}])
    save_checkpoint(tmp_path, policy, optimizer, 1, {}, log)
    log.close()
    expected = torch.rand(16, device="cuda")  # what the uninterrupted run draws next
    torch.rand(1000, device="cuda")  # the stream moves on, as in a run killed later
    fresh = torch.optim.AdamW(parameters, lr=1e-3)
    step, _, _ = load_checkpoint(tmp_path, fresh)
    assert step == 1
    torch.testing.assert_close(torch.rand(16, device="cuda"), expected, rtol=0.0, atol=0.0)
    moments = [value for state in fresh.state.values() for value in state.values() if torch.is_tensor(value)]
    assert moments and all(moment.device.type == "cuda" for moment in moments if moment.dim() > 0)
