# Fresh machine: `make run` starts the bot (the playground when SLACK_BOT_TOKEN is unset);
# `make test` runs lint, types, the import contracts and the whole test suite. Both bootstrap everything they need.
PY ?= python3
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test lint browser clean

$(UV):
	$(PY) -m venv .tools
	.tools/bin/pip install -q uv==0.13.9

.venv/.synced: $(UV) uv.lock pyproject.toml
	# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on the CI machines) nothing else writes the
	# .pyc files, and every process (the bot, each test's subprocess) compiled its imports again: ~2 s.
	$(UV) sync --frozen --compile-bytecode -p $(PY)
	touch $@

run: .venv/.synced
	.venv/bin/jitbot start

lint: .venv/.synced
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache  # the layering in pyproject.toml [tool.importlinter] (docs/architecture.md)

browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: .venv/.synced browser lint
	.venv/bin/pytest -q -p no:cacheprovider

clean:
	rm -rf .venv .tools
