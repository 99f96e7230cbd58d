#!/usr/bin/env bash
# The device check, for a machine with one NVIDIA GPU and no network (4 minutes on an H200, 2026-12-04):
#   1. the tests marked `gpu` (pytest -m gpu) on CUDA;
#   2. one GRPO step and one PPO step of our trainers on CUDA in bfloat16 (`leser train`);
#   3. one step of TRL's GRPOTrainer with LESER's reward on CUDA (examples/train_with_trl.py);
#   4. throughput, ours against TRL's on the same work (benchmarks/bench_grpo_vs_trl.py: seconds
#      per GRPO step and generation tokens per second) for the default model's configuration
#      (SmolLM2-135M) and for Llama-3.2-3B's, both with random weights: nothing to download.
#
# Two steps:
#   benchmarks/gpu_check.sh prepare   # where pip reaches PyPI: writes .gpu_check/ (about 14 MB):
#                                     # wheels for what a CUDA PyTorch image lacks (Python 3.12,
#                                     # manylinux x86-64) and the default model's tokenizer and config
#   benchmarks/gpu_check.sh           # on the GPU machine, from the repository root, with .gpu_check/
#                                     # beside it: installs the wheels into /tmp/leser-site, runs 1-4,
#                                     # writes $OUT (default runs/gpu_check): check.log, throughput_*.json
#   DEVICE=cpu PYTHON=.venv/bin/python benchmarks/gpu_check.sh
#                                     # a rehearsal here before spending device time: the same commands on
#                                     # CPU in float32 with this checkout's packages (throughput timed on the
#                                     # test suite's tiny model; the gpu tests skip themselves), to catch a
#                                     # broken command line (about 5 minutes on 2 cores)
# Every check runs even when one before it failed (device time is scarce: one run should tell
# everything), and the log ends with one line per check: ok, or FAILED with its exit status.
# PYTHON names the interpreter whose torch sees the GPU (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PREPARED=.gpu_check
# What a CUDA PyTorch image (torch, transformers, peft, accelerate, scipy, rich, typer, pytest) lacks.
MISSING="tantivy lightgbm gymnasium farama-notifications trl datasets dill multiprocess"

if [[ "${1:-}" == "prepare" ]]; then
    PYTHON=${PYTHON:-.venv/bin/python}
    [[ -x "$PYTHON" ]] || PYTHON=python3
    mkdir -p "$PREPARED/wheels" "$PREPARED/smollm2-135m"
    for name in $MISSING; do  # the versions this checkout is tested with
        wheel="$name==$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d "$PREPARED/wheels" "$wheel"
    done
    "$PYTHON" - "$PREPARED/smollm2-135m" <<'EOF'
import shutil, sys
from pathlib import Path
from agents.model_loading import default_model_path
source, target = default_model_path(), Path(sys.argv[1])
for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if (source / name).is_file():
        shutil.copy2(source / name, target / name)
print(f"tokenizer and config of the default model in {target}")
EOF
    du -sh "$PREPARED"
    exit 0
fi

PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
case "$DEVICE" in
    cuda) DTYPE=bfloat16 TRL_DTYPE=--bf16 SLOWER=1 ;;
    cpu) DTYPE=float32 TRL_DTYPE= SLOWER=4 ;;  # time limits 4x longer on CPU
    *) echo "DEVICE is cuda or cpu, not '$DEVICE'" >&2; exit 2 ;;
esac
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export LESER_CACHE_DIR=${LESER_CACHE_DIR:-/tmp/leser-cache}
if [[ "$DEVICE" == cuda && -d "$PREPARED/wheels" ]]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/leser-site \
        "$PREPARED"/wheels/*.whl
    export PYTHONPATH="$PWD:/tmp/leser-site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" - <<'EOF' || true
import importlib.metadata as metadata
names = "torch transformers peft accelerate trl datasets pyarrow tantivy lightgbm gymnasium numpy".split()
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"
print("packages:", ", ".join(f"{name} {version(name)}" for name in names))
EOF
if [[ "$DEVICE" == cuda ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'this torch sees no CUDA GPU'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
fi

# The default model's configuration with random weights (the GGUF package is not needed), written
# outside the checkout so that .gpu_check/ stays small enough to travel.
MODEL=${TMPDIR:-/tmp}/leser-gpu-check-smollm2-135m
if [[ ! -f "$MODEL/model.safetensors" ]]; then
    mkdir -p "$MODEL" && cp "$PREPARED"/smollm2-135m/* "$MODEL"/
    "$PYTHON" - "$MODEL" <<'EOF'
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[1]))
model.save_pretrained(sys.argv[1])
EOF
fi
export LESER_TEST_TOKENIZER="$PWD/$PREPARED/smollm2-135m"
LESER=("$PYTHON" -c "from agents.cli import app; app()")  # an array, not a function: timeout runs it
started=$SECONDS
stage() { echo; echo "== $1 ($((SECONDS - started)) s so far)"; }
results=()
# check NAME COMMAND...: runs one check, records ok or FAILED with its exit status, and goes on either way.
check() {
    local name=$1 status=0
    shift
    "$@" || status=$?
    if ((status == 0)); then results+=("ok      $name"); else results+=("FAILED  $name (exit $status)"); fi
}

stage "1/4 tests marked gpu, on $DEVICE"
check "pytest -m gpu" timeout $((150 * SLOWER)) "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests

stage "2/4 one GRPO step and one PPO step of our trainers, $DEVICE, $DTYPE"
rm -rf "$OUT/grpo" "$OUT/ppo" "$OUT/trl"
check "leser train --agent grpo" timeout $((150 * SLOWER)) "${LESER[@]}" train --agent grpo --model "$MODEL" --device "$DEVICE" \
    --dtype "$DTYPE" --out "$OUT/grpo" --set max_steps=1 --set queries_per_step=2 --set max_completion_length=32
check "leser train --agent ppo" timeout $((90 * SLOWER)) "${LESER[@]}" train --agent ppo --model "$MODEL" --device "$DEVICE" \
    --dtype "$DTYPE" --out "$OUT/ppo" --set max_steps=1 --set queries_per_step=2 --set response_length=32

stage "3/4 one step of TRL's GRPOTrainer on LESER's reward, $DEVICE, $DTYPE"
# shellcheck disable=SC2086  # TRL_DTYPE is one flag or none
check "examples/train_with_trl.py" timeout $((120 * SLOWER)) "$PYTHON" examples/train_with_trl.py --model "$MODEL" --steps 1 \
    --limit 8 $TRL_DTYPE --max-completion-length 32 --out "$OUT/trl"

stage "4/4 throughput, ours against TRL's, same work"
rm -f "$OUT"/throughput_*.json
if [[ "$DEVICE" == cpu ]]; then  # the rehearsal: the benchmark's command line on the test suite's tiny model
    check "throughput tiny" timeout 400 "$PYTHON" benchmarks/bench_grpo_vs_trl.py --random-init tiny \
        --device cpu --dtype float32 --steps 1 --json >"$OUT/throughput_tiny.json"
else
    check "throughput smollm2-135m" timeout 100 "$PYTHON" benchmarks/bench_grpo_vs_trl.py --model "$MODEL" \
        --random-init smollm2-135m --device cuda --dtype bfloat16 --steps 2 --json >"$OUT/throughput_smollm2-135m.json"
    check "throughput llama-3.2-3b" timeout 150 "$PYTHON" benchmarks/bench_grpo_vs_trl.py --model "$MODEL" \
        --random-init llama-3.2-3b --device cuda --dtype bfloat16 --steps 2 --json >"$OUT/throughput_llama-3.2-3b.json"
fi
reports=()  # the runs that wrote a report
for file in "$OUT"/throughput_*.json; do
    [[ -s "$file" ]] || continue
    "$PYTHON" - "$file" <<'EOF' && reports+=("$file")
import json, sys
r = json.load(open(sys.argv[1]))
s, t = r["seconds_per_step"], r["generation_tokens_per_second"]
print(f"{r['model']:>14} ({r['weights']} weights, {r['dtype']}): GRPO step ours {s['ours']['step']:.2f} s, TRL {s['trl']['step']:.2f} s "
      f"({r['ratio_ours_over_trl']:.2f}x); generation ours {t['ours']:.0f} tokens/s, TRL {t['trl']:.0f}")
EOF
done
if ((${#reports[@]})); then  # one figure of every run's phases: $OUT/throughput.png
    "$PYTHON" benchmarks/bench_grpo_vs_trl.py --plot "${reports[@]}" --out "$OUT" || true
fi

echo
echo "== done in $((SECONDS - started)) s; the log is $OUT/check.log"
printf '%s\n' "${results[@]}"
for result in "${results[@]}"; do
    [[ "$result" == ok* ]] || exit 1
done
