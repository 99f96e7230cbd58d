"""What LoRA adapts in a causal LM: the attention projections, or what the architecture calls them.

The default targets are the attention projections (``q_proj``...``o_proj``, as Llama, Qwen,
Mistral and Gemma name them); a model that names them otherwise (GPT-2's ``c_attn``) gets peft's
choice for its architecture, or all its linear layers, instead of an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def lora_targets(model: torch.nn.Module, targets: Sequence[str] | str) -> list[str] | str:
    """What LoRA adapts: the configured targets, checked against the model's layer names.

    The default (the attention projections) falls back, on a model that names them otherwise, to
    peft's choice for its architecture (GPT-2: ``c_attn``) or else to all linear layers, so any
    causal LM works by name; names a user chose that the model lacks are an error naming the
    layers with weights it has (Linear and GPT-2's Conv1D alike).
    """
    if isinstance(targets, str):
        return targets
    modules = {name.rsplit(".", 1)[-1]: module for name, module in model.named_modules()}
    if any(target in modules for target in targets):
        return list(targets)
    if list(targets) == list(ATTENTION_PROJECTIONS):
        architecture = getattr(model.config, "model_type", None)
        return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(architecture) or "all-linear"
    weighted = sorted(name for name, module in modules.items() if getattr(module, "weight", None) is not None)
    raise ValueError(
        f"LoRA target modules {list(targets)} are not in this model; its layers with weights are named "
        f"{weighted} (or use target_modules='all-linear')"
    )
