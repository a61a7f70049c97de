# Two commands a newcomer needs: `make demo` (the main job on the built-in demo world)
# and `make test` (the test suite). Both bootstrap .venv on first use and skip the
# install when nothing it depends on changed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.semla-installed
PYTEST_ARGS ?=

.PHONY: venv check test test-fast demo docs fixture-check clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py CMakeLists.txt package.xml msg/*.msg tools/build_messages.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
		--config-settings editable_mode=compat -e .
	tools/build_messages.sh $(VENV)
	@touch $@

# The linter (ruff.toml) over the code and the tests, and the type check of the ROS-free engine (mypy.ini).
check: $(STAMP)
	$(VENV)/bin/ruff check semla_ros test launch tools
	$(VENV)/bin/mypy

test: check
	$(PY) -m pytest test $(PYTEST_ARGS)

# No process started (marker ros), nothing over 10 s (marker slow): the quick loop while editing.
test-fast: check
	$(PY) -m pytest test -m "not ros and not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/semla-demo

# Every generated section of README.md and docs/*.md, rerun with today's defaults and stamped (docs/stamps.json).
docs: $(STAMP)
	$(PY) -m semla_ros.cli.docs regenerate

fixture-check: $(STAMP)
	$(VENV)/bin/semla-fixture-check ../shared/fixtures/catseg_official_A

clean:
	rm -rf build install log $(VENV)
