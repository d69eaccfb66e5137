# Two commands do all the set-up on a fresh machine (Python 3.11+):
#   make run    install into .venv, then rerank examples/data/sample.jsonl on the default config
#   make test   install into .venv (with test tools), then run the test suite
VENV   ?= .venv
PYTHON ?= python3
# A CPU build of torch. An unpinned torch pulls a multi-GB CUDA build; override for a GPU box:
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin

.PHONY: install run test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/rerank-router rerank --query "what is the difference between green and black tea" \
		--docs examples/data/sample.jsonl --top-n 3 --explain

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check router policies tests benchmarks examples
	$(BIN)/ruff format --check router policies tests benchmarks examples
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
