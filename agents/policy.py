"""The LLM policy: a Hugging Face causal LM with a LoRA adapter, prompted by LESER-v0's renderer; one API
for sampling and for the log-probabilities training needs.

- The model: ``agents.model_loading`` (any causal LM by name or path, the default SmolLM2, the
  device and dtype); what LoRA adapts: ``agents.lora``; the agent adapter: ``agents.llm_agent``.
- LoRA through peft. The reference policy for the KL term is the same model with the adapter
  disabled, not a second copy in memory.
- Completions that share a prompt encode it once (sampling and the loss). Models whose cache
  cannot be shared that way (sliding-window layers as in Gemma 3, recurrent state as in Mamba)
  encode it with each completion: slower, the same results.
- Sampling returns texts, token ids and the per-token log-probabilities of the sampled tokens
  under the policy as it was when sampling (from the generation's raw logits, at temperature
  1, which is what the PPO/GRPO ratio needs; no second forward pass).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LogitsProcessorList, StaticCache
from transformers.cache_utils import DynamicCache, DynamicLayer, StaticLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from agents.guided_decoding import ActionFormat
from agents.lora import ATTENTION_PROJECTIONS, lora_targets
from agents.model_loading import DEFAULT_MODEL, resolve_device, resolve_dtype, resolve_model
from catalogs.storage import recover_directory, replace_directory, staging_directory, write_json_atomically
from leser_env.actions import ActionLimits
from leser_env.config_ranges import POSITIVE, Range, check_ranges
from leser_env.prompt import fit_observation, render_messages

END_OF_TURN = "<|im_end|>"
POLICY_FILE = "policy.json"
# The key-value cache's argument and output name: transformers 5 renamed past_key_values to cache
# (the old name warns, and goes from forward in 5.40 and from generate in 6.0); older releases
# know only past_key_values.
CACHE = "cache" if "cache" in {entry.name for entry in fields(CausalLMOutputWithPast)} else "past_key_values"


@dataclass
class PolicyConfig:
    model: str = DEFAULT_MODEL  # Hugging Face name or path, or the default SmolLM2
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # Module names, or a string peft reads ("all-linear", or a regular expression).
    target_modules: list[str] | str = field(default_factory=lambda: list(ATTENTION_PROJECTIONS))
    max_prompt_tokens: int = 640  # longer prompts lose the end of their product context
    max_new_tokens: int = 96
    temperature: float = 0.9
    top_p: float = 1.0
    device: str = "auto"  # "auto" (CUDA, else Apple's MPS, else the CPU), "cpu", "cuda", "cuda:N", "mps"
    dtype: str = "auto"  # "auto" (bfloat16 on a GPU that supports it, else float32), "float32", "bfloat16", "float16"
    # Adapters merged into the base weights before the trainable one, oldest first, as directories
    # relative to the saved policy: a run started from a warmed-up policy keeps that policy as its
    # frozen base, so the KL reference (the adapter disabled) is the warmed-up policy.
    frozen_adapters: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                **dict.fromkeys(
                    ("lora_rank", "lora_alpha", "max_prompt_tokens", "max_new_tokens", "temperature"), POSITIVE
                ),
                "lora_dropout": Range(0.0, 1.0, closed_high=False),
                "top_p": Range(0.0, 1.0, closed_low=False),
            },
        )


@dataclass
class Samples:
    """Completions for a batch of prompts: prompt p's completions are rows p*n .. p*n+n-1."""

    texts: list[str]
    prompt_ids: list[list[int]]  # one per prompt
    completion_ids: list[list[int]]  # one per completion, ending with the end-of-turn token if sampled
    logprobs: list[torch.Tensor]  # per completion: log-probability of each completion token at sampling time
    n: int


@dataclass
class CompletionOutputs:
    """Per completion, one value per completion token."""

    logprobs: list[torch.Tensor]
    entropies: list[torch.Tensor] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)


def shareable_cache(cache: object) -> bool:
    """Whether a prompt's cache can be repeated for its completions: plain per-layer keys and values."""
    return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)


class LLMPolicy:
    """A causal LM + LoRA adapter that turns LESER-v0 observations into raw action texts."""

    def __init__(
        self,
        config: PolicyConfig | None = None,
        adapter: str | Path | None = None,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        limits: ActionLimits | None = None,
        frozen: Sequence[str | Path] = (),
    ) -> None:
        """Load ``config.model`` (or take ``model``/``tokenizer`` built by the caller, as tests do),
        then add a fresh LoRA adapter or load a saved one from ``adapter``."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config or PolicyConfig()
        self.limits = limits or ActionLimits()
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        if model is None:
            path = resolve_model(self.config.model)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        model = model.to(device=self.device, dtype=self.dtype)
        self.tokenizer = tokenizer
        if END_OF_TURN in self.tokenizer.get_vocab():
            self.stop_token = END_OF_TURN
        else:
            self.stop_token = self.tokenizer.eos_token
        self.stop_id = self.tokenizer.convert_tokens_to_ids(self.stop_token)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.stop_token
        self.pad_id = self.tokenizer.pad_token_id
        self.frozen = [Path(path) for path in frozen]
        for path in self.frozen:  # fold earlier training into the base: it becomes the reference
            model = _load_adapter(model, path).merge_and_unload()
        if adapter is not None:
            self.model = _load_adapter(model, Path(adapter), trainable=True)
        else:
            lora = LoraConfig(
                r=self.config.lora_rank,
                lora_alpha=self.config.lora_alpha,
                lora_dropout=self.config.lora_dropout,
                target_modules=lora_targets(model, self.config.target_modules),
                task_type="CAUSAL_LM",
            )
            with peft_without_its_transformers_deprecation():
                self.model = get_peft_model(model, lora)
        self.model.to(self.device)  # adapters load where their base lives; a saved one may come from another device
        self.model.config.use_cache = True
        self.share_prompts = True  # switched off for good the first time the model's cache cannot be shared

    # -- prompts ------------------------------------------------------------------------

    def prompt_text(self, observation: Mapping[str, str]) -> str:
        messages = render_messages(observation, self.limits)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode_prompt(self, observation: Mapping[str, str]) -> list[int]:
        """Token ids of the prompt; an over-long context is cut line by line from its end."""
        fitted = fit_observation(observation, lambda o: len(self._prompt_ids(o)), self.config.max_prompt_tokens)
        return self._prompt_ids(fitted)[-self.config.max_prompt_tokens :]

    def encode_completion(self, text: str) -> list[int]:
        """Token ids of a completion the policy did not sample (a warm-up target, a guide's answer),
        ended by the end-of-turn token as a sampled one is."""
        return self.tokenizer(text + self.stop_token, add_special_tokens=False)["input_ids"]

    def _prompt_ids(self, observation: Mapping[str, str]) -> list[int]:
        return self.tokenizer(self.prompt_text(observation), add_special_tokens=False)["input_ids"]

    # -- sampling -----------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        observations: Sequence[Mapping[str, str]],
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = None,
        greedy: bool = False,
        guided: bool = False,
    ) -> Samples:
        """``n`` completions per observation, with the log-probabilities of their tokens; ``guided``:
        only completions in the action format (``agents.guided_decoding``; the log-probabilities
        stay the model's own, before the format's mask)."""
        prompts = [self.encode_prompt(observation) for observation in observations]
        temperature = self.config.temperature if temperature is None else temperature
        max_new_tokens = max_new_tokens or self.config.max_new_tokens
        input_ids, attention = self._left_pad(prompts)
        self.model.eval()
        cache = None
        if self.share_prompts and input_ids.shape[1] > 1:
            cache = self._prefilled_cache(input_ids, attention, n, input_ids.shape[1] + max_new_tokens)
        if cache is not None:
            input_ids, attention = input_ids.repeat_interleave(n, dim=0), attention.repeat_interleave(n, dim=0)
        action_format = [ActionFormat(self.tokenizer, self.stop_id, self.limits)] if guided else []
        generated = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            **{CACHE: cache},
            do_sample=not greedy,
            temperature=temperature if not greedy else None,
            top_p=(self.config.top_p if top_p is None else top_p) if not greedy else None,
            top_k=None,
            num_return_sequences=1 if cache is not None else n,
            max_new_tokens=max_new_tokens,
            eos_token_id=self.stop_id,
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
            disable_compile=True,  # no torch.compile for the static cache: generation here is short and eager
            logits_processor=LogitsProcessorList(action_format),
        )
        new_tokens = generated.sequences[:, input_ids.shape[1] :]
        completions = [self._trim(row.tolist()) for row in new_tokens]
        # The raw logits of each step (temperature 1, before any sampling warper) give the
        # log-probability of each sampled token under the policy as it was: no second forward pass.
        step_logits = torch.stack(generated.logits, dim=1).float()  # (sequences, steps, vocabulary)
        token_logprobs = F.log_softmax(step_logits, dim=-1).gather(-1, new_tokens[:, :, None]).squeeze(-1)
        logprobs = [token_logprobs[row, : len(ids)].clone() for row, ids in enumerate(completions)]
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in completions]
        return Samples(texts, prompts, completions, logprobs, n)

    def _prefilled_cache(
        self, input_ids: torch.Tensor, attention: torch.Tensor, n: int, max_cache_len: int
    ) -> StaticCache | None:
        """Prefill each prompt once (all but its last token), then copy its keys and values into a
        preallocated cache for its n completions: generation starts from the shared prefix instead
        of n prefills, and no step re-copies the whole cache to append one token. None when the
        model's cache is not plain keys and values (then generation encodes each prompt n times)."""
        positions = _positions(attention)
        prefill = self.model(
            input_ids=input_ids[:, :-1],
            attention_mask=attention[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,
        )
        prompt_cache = getattr(prefill, CACHE, None)
        cache = None
        if shareable_cache(prompt_cache):
            cache = StaticCache(config=self.model.config, max_cache_len=max_cache_len)
        if cache is None or any(type(layer) is not StaticLayer for layer in cache.layers):
            self.share_prompts = False
            return None
        for static_layer, layer in zip(cache.layers, prompt_cache.layers, strict=True):
            static_layer.update(layer.keys.repeat_interleave(n, dim=0), layer.values.repeat_interleave(n, dim=0))
        return cache

    def act(self, observations: Sequence[Mapping[str, str]], greedy: bool = True, guided: bool = False) -> list[str]:
        """One action text per observation (greedy by default: evaluation)."""
        return self.sample(observations, n=1, greedy=greedy, guided=guided).texts

    # -- log-probabilities --------------------------------------------------------------

    def completion_logprobs(
        self,
        prompts: Sequence[list[int]],
        completions: Sequence[list[int]],
        grad: bool = True,
        reference: bool = False,
        return_entropy: bool = False,
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-token log-probabilities of each completion given its prompt (and their entropies).

        ``reference=True`` computes them under the base model (the adapter disabled): the KL anchor.
        """
        outputs = self.completion_outputs(prompts, completions, grad, reference, return_entropy)
        return (outputs.logprobs, outputs.entropies) if return_entropy else outputs.logprobs

    def completion_outputs(
        self,
        prompts: Sequence[list[int]],
        completions: Sequence[list[int]],
        grad: bool = True,
        reference: bool = False,
        entropy: bool = False,
        hidden: bool = False,
    ) -> CompletionOutputs:
        """One batched forward pass over prompt + completion: per completion token, its log-probability,
        optionally the entropy of the distribution it was drawn from and the last hidden state that
        predicted it (what a value head reads)."""
        with contextlib.ExitStack() as stack:
            if not grad:
                stack.enter_context(torch.no_grad())
            if reference:
                stack.enter_context(self.model.disable_adapter())
            completion_ids, completion_mask = self._right_pad(completions)
            width = completion_ids.shape[1]
            groups = list(dict.fromkeys(tuple(prompt) for prompt in prompts))
            shared = None
            if self.share_prompts and len(groups) < len(prompts):
                shared = self._shared_prompt_forward(groups, prompts, completion_ids, completion_mask, hidden)
            if shared is not None:
                logits, states = shared
            else:
                # Prompts left-padded to one width, completions right-padded after them: every completion
                # starts at the same column, so the vocabulary projection runs on completion positions only.
                prompt_ids, prompt_mask = self._left_pad(prompts)
                input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
                attention = torch.cat([prompt_mask, completion_mask], dim=1)
                positions = _positions(attention)
                output = self.model(
                    input_ids=input_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    use_cache=False,
                    logits_to_keep=width + 1,
                    output_hidden_states=hidden,
                )
                logits = output.logits[:, :-1]
                states = output.hidden_states[-1][:, -(width + 1) : -1] if hidden else None
            log_softmax = F.log_softmax(logits.float(), dim=-1)
            token_logprobs = log_softmax.gather(-1, completion_ids[:, :, None]).squeeze(-1)
            lengths = [len(c) for c in completions]
            result = CompletionOutputs([token_logprobs[row, :n] for row, n in enumerate(lengths)])
            if entropy:
                entropies = -(log_softmax.exp() * log_softmax).sum(-1)
                result.entropies = [entropies[row, :n] for row, n in enumerate(lengths)]
            if hidden:
                result.hidden = [states[row, :n] for row, n in enumerate(lengths)]
        return result

    def _shared_prompt_forward(
        self,
        groups: list[tuple[int, ...]],
        prompts: Sequence[list[int]],
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        hidden: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Completions that share a prompt (a GRPO group) encode it once: the prompt's keys and values
        are computed per distinct prompt, then repeated for its completions (gradients flow back
        through the repetition into the one prompt pass). None when the model's cache cannot be
        repeated (the caller then encodes each prompt with its completion)."""
        index = torch.tensor([groups.index(tuple(prompt)) for prompt in prompts], dtype=torch.long, device=self.device)
        prompt_ids, prompt_mask = self._left_pad([list(group) for group in groups])
        prompt_positions = _positions(prompt_mask)
        first = self.model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=prompt_positions,
            use_cache=True,
            logits_to_keep=1,
            output_hidden_states=hidden,
        )
        cache = getattr(first, CACHE, None)
        if not shareable_cache(cache):
            self.share_prompts = False
            return None
        cache.reorder_cache(index)
        attention = torch.cat([prompt_mask[index], completion_mask], dim=1)
        offsets = torch.arange(completion_ids.shape[1], device=self.device)
        positions = prompt_mask.sum(-1)[index][:, None] + offsets[None, :]
        rest = self.model(
            input_ids=completion_ids,
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            **{CACHE: cache},
            output_hidden_states=hidden,
        )
        # The prompt's last position predicts the first completion token; each completion position the next.
        logits = torch.cat([first.logits[index, -1:], rest.logits[:, :-1]], dim=1)
        states = None
        if hidden:
            states = torch.cat([first.hidden_states[-1][index, -1:], rest.hidden_states[-1][:, :-1]], dim=1)
        return logits, states

    # -- persistence --------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """The adapter (peft format), its frozen predecessors and the config, written atomically."""
        path = Path(path)
        staging = staging_directory(path)
        try:
            self.model.save_pretrained(staging)
            config = asdict(self.config)
            config["frozen_adapters"] = []
            for index, source in enumerate(self.frozen):
                target = staging / "frozen" / str(index)
                target.mkdir(parents=True)
                for file in source.glob("adapter_*"):
                    shutil.copy2(file, target / file.name)
                config["frozen_adapters"].append(f"frozen/{index}")
            write_json_atomically(staging / POLICY_FILE, config)
            replace_directory(staging, path)  # a kill at any instant leaves the old or the new policy
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return path

    @classmethod
    def load(
        cls, path: str | Path, model: torch.nn.Module | None = None, tokenizer: Any = None, **overrides: Any
    ) -> LLMPolicy:
        """A saved policy: its base model (or ``model``/``tokenizer`` given), with the saved adapters."""
        path = Path(path)
        config = _read_policy_config(path, overrides)
        frozen = [path / relative for relative in config.frozen_adapters]
        return cls(config, adapter=path, model=model, tokenizer=tokenizer, frozen=frozen)

    @classmethod
    def continue_from(
        cls, path: str | Path, model: torch.nn.Module | None = None, tokenizer: Any = None, **overrides: Any
    ) -> LLMPolicy:
        """Start a new stage (GRPO, PPO) from a saved policy: it is merged into the base and a fresh
        adapter goes on top, so the KL reference, the adapter disabled, is exactly that policy."""
        path = Path(path)
        config = _read_policy_config(path, overrides)
        frozen = [*(path / relative for relative in config.frozen_adapters), path]
        return cls(config, model=model, tokenizer=tokenizer, frozen=frozen)

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    # -- internals ----------------------------------------------------------------------

    def _trim(self, ids: list[int]) -> list[int]:
        """Cut a generated row after its first end-of-turn token (kept: the policy chose to stop)."""
        if self.stop_id in ids:
            return ids[: ids.index(self.stop_id) + 1]
        return ids

    def _left_pad(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _right_pad(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max((len(row) for row in rows), default=0) or 1  # at least one column, even if all are empty
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: each row counts its real tokens from 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@contextlib.contextmanager
def peft_without_its_transformers_deprecation() -> Iterator[None]:
    """peft (0.21) asks the model ``is_gradient_checkpointing``, which transformers (5.x) answers with
    a FutureWarning on every policy load; nothing a user can act on, so it is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _load_adapter(model: torch.nn.Module, path: Path, trainable: bool = False) -> PeftModel:
    """A saved peft adapter on ``model``; a missing or damaged one is a clear error naming it."""
    try:
        with peft_without_its_transformers_deprecation():
            return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
    except Exception as error:  # safetensors, peft and OS errors differ by version; all mean the same here
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path}: the saved LoRA adapter cannot be loaded ({first_line})") from None


def _read_policy_config(path: Path, overrides: dict[str, Any]) -> PolicyConfig:
    recover_directory(path)  # a save that a kill interrupted leaves the old copy aside
    try:
        saved = json.loads((path / POLICY_FILE).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path / POLICY_FILE}: not found (is {path} a saved policy?)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path / POLICY_FILE}: not valid JSON ({error.msg})") from None
    known = {item.name for item in fields(PolicyConfig)}
    if not isinstance(saved, dict) or set(saved) - known:
        unknown = sorted(set(saved) - known) if isinstance(saved, dict) else "not an object"
        raise ValueError(f"{path / POLICY_FILE}: not a policy config this version reads (unknown: {unknown})")
    return PolicyConfig(**{**saved, **{key: value for key, value in overrides.items() if key in known}})
