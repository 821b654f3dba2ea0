# Two commands set everything up on a fresh machine:
#   make demo   - the main job end to end on the embedded synthetic corpus
#   make test   - the test suite
# Both create .venv on first use and reuse it afterwards.

# speechssl runs on Python >= 3.10 (pyproject.toml); the default is 3.11 because the CPU torch
# wheel this machine keeps locally (torch==2.13.0+cpu) is built for CPython 3.11 only.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow faults venv clean lm wheel-check

venv: $(STAMP)

# torch is installed first, on its own, so that the exact pin picks the CPU wheel on
# the machines (pyproject.toml only asks for torch>=2.4, which pip would satisfy with the
# multi-GB CUDA build); everything that depends on torch then sees it satisfied.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (speechssl needs Python >= 3.10; set PYTHON=...)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	# GE2E reference upstream: only resemblyzer/pretrained.pt is used, so skip its deps.
	$(BIN)/python -m pip install --quiet --no-deps "resemblyzer==0.1.4"
	# Headless Chromium checks that the HTML report renders (Debian packages, needs root);
	# best effort: without it that one test is skipped and says so.
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium + chromium-driver (apt) for the report's browser check"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
		|| echo "note: chromium could not be installed; the HTML report's browser test will be skipped"; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/speechssl demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Optional: n-gram LM decoding (kenlm compiles from source, ~1 min). pyctcdecode goes in
# --no-deps because it declares numpy<2 but runs on numpy 2 (see pyproject.toml).
lm: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[lm]"
	$(BIN)/python -m pip install --quiet --no-deps "pyctcdecode>=0.5"

# The whole fault-injection suite (tests/faults/): the fast cases also run in `make test`.
faults: $(STAMP)
	$(BIN)/python -m pytest tests/faults -m "faults or not faults"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Online, not part of the tests: builds the wheel, installs it with [bench] into a fresh venv
# that already has torch (TORCH=... picks which; default the pinned CPU wheel), checks that
# torch was kept, and runs a tiny `corpus synth` + `bench --upstream mfcc --task lid` with it.
wheel-check: $(STAMP)
	$(BIN)/python scripts/wheel_check.py $(if $(TORCH),--torch "$(TORCH)")

clean:
	rm -rf $(VENV) runs data
