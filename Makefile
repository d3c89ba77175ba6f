# The study's two commands: `make study` (regenerate every notebook, figure and table) and `make test`.
# Both build .venv on first use; nothing else needs typing.
PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PROFILE     ?=
NOTEBOOKS   := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
STAMP       := $(VENV)/.installed

.PHONY: study reference test figures book venv clean-venv

venv: $(STAMP)

# Re-install only when the pins change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Run the numbered notebooks in order, headless. Without PROFILE: the shipped models of zoo/ (no
# training); PROFILE=cpu|smoke|gpu trains that profile's models first, PROFILE=reference retrains
# the shipped ones and puts them in zoo/. The committed profile executes the notebooks in place (the
# committed notebooks show their outputs), others write notebooks/executed/PROFILE/.
study: $(STAMP)
	$(PY) -m lic_utils study $(if $(PROFILE),--profile $(PROFILE))

# The shipped models from scratch (hours: see the README), then the study read from them.
reference: $(STAMP)
	$(PY) -m lic_utils study --profile reference

# Redraw every figure from results/ alone (no training, no evaluation).
figures: $(STAMP)
	$(PY) -m lic_utils figures

# The rendered study in site/ (open site/index.html): the executed notebooks and a comparison page.
book: $(STAMP)
	$(PY) -m lic_utils book

test: $(STAMP)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
