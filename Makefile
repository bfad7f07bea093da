# rlaif: the two commands a newcomer needs are `make smoke-test` and `make test`; both install what they need.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup setup-trainer setup-judge models smoke-test smoke-mixed test test-unit test-integration clean help

help:
	@echo "make smoke-test   RLAIF end to end on tiny offline models (CPU ok): setup, models, judge, GRPO, summary"
	@echo "make test         the test suite (unit + integration against a real vLLM judge server)"
	@echo "make test-unit    the tests that need no judge server and no tiny models (seconds)"
	@echo "make smoke-mixed  the smoke run with a judge and a verifiable rule in one reward"
	@echo "make setup        build .venv (trainer) and .venv-judge (vLLM) if their requirements changed"
	@echo "make models       build the tiny tokenizer/judge/policy/datasets into artifacts/tiny (cached)"

setup:
	@bash scripts/setup_env.sh all

setup-trainer:
	@bash scripts/setup_env.sh trainer

setup-judge:
	@bash scripts/setup_env.sh judge

models: setup-trainer
	@$(PY) -m rlaif.tiny.build --out artifacts/tiny

smoke-test: setup models
	@.venv/bin/rlaif smoke recipes/smoke.yaml

smoke-mixed: setup models
	@.venv/bin/rlaif smoke recipes/smoke-mixed.yaml

test: setup models
	@$(PY) -m pytest tests

test-unit: setup-trainer
	@$(PY) -m pytest tests -m "not integration and not models"

test-integration: setup models
	@$(PY) -m pytest tests -m "integration or models"

clean:
	rm -rf runs artifacts .pytest_cache
