# Concord's two commands: `make run` (the embedded demo) and `make test` (the whole suite).
# Both install what is missing first: a venv pinned by constraints.txt, and Kafka's jars.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install kafka helm browser protos check lint test run report-encoder report-scorer report-xbt report-generator \
	report-linker report-bias bench freeze clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,runtimes]'
	touch $@

kafka: $(STAMP)
	bash tools/kafka/fetch.sh

helm: $(STAMP)
	bash tools/helm/fetch.sh

# Debian's chromium: the suite opens the first run's page in it (headless). Root installs it;
# anyone else gets the command to run.
browser:
	@command -v chromium >/dev/null 2>&1 || bash tools/browser/install.sh

protos: $(STAMP)
	$(BIN)/python tools/gen_protos.py

check: $(STAMP)
	$(BIN)/python tools/gen_protos.py --check
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy concord

# On failure the last line names where pytest was (a crash of the interpreter cannot say).
test: install kafka helm browser check
	$(BIN)/python -m pytest --durations=15 || { rc=$$?; \
		echo "pytest exited $$rc; where it was: $$(cat .cache/pytest-progress 2>/dev/null)"; exit $$rc; }

# The first run: register the shipped demo models (FULL=1: train the full presets instead),
# start the six services, run one flow through all of them and write demo/index.html.
run: install
	$(BIN)/concord demo $(if $(FULL),--full)

# The shared encoder's recipe vs its caption-only baseline, 3 seeds each (about 3 h on 2 cores;
# finished runs in .cache/encoder-runs are reused). SEEDS=0,1 for fewer.
report-encoder: install
	$(BIN)/python -m pipelines.encoder.report $(if $(SEEDS),--seeds $(SEEDS))

# The scorer on the shared encoder: ENCODERS="DIR DIR ..." scores those (other seeds: mean ± std),
# e.g. the report's runs; without it, trains one encoder with the recipe first (about 40 minutes).
report-scorer: install
	$(BIN)/python -m pipelines.scorer.report $(foreach e,$(ENCODERS),--encoder $(e))

# XBT between two stored encoders (psi linear vs MLP, noise sweep, pair counts, Procrustes on
# text; no encoder training): OLD=DIR NEW=DIR, e.g. the shipped encoder and a new one.
report-xbt: install
	$(BIN)/python -m pipelines.encoder.xbt_study --old $(OLD) --new $(NEW)

report-generator: install
	$(BIN)/python -m pipelines.generator.report

# M3EL ablations and the UMAEA missing-image grid (about an hour on 2 cores); ENCODER=URI skips
# training the small encoder both share.
report-linker: install
	$(BIN)/python -m pipelines.linker.report $(if $(ENCODER),--encoder $(ENCODER))

# ViLBias variants on ShapeNews (about 25 minutes on 2 cores after the encoder).
report-bias: install
	$(BIN)/python -m pipelines.bias report $(if $(ENCODER),--encoder $(ENCODER))

bench: install kafka
	$(BIN)/python -m benchmarks.encoder_serving
	$(BIN)/python -m benchmarks.search_qps
	$(BIN)/python -m benchmarks.kafka_ingest
	$(BIN)/python -m benchmarks.scorer_serving
	$(BIN)/python -m benchmarks.generator_serving
	$(BIN)/python -m benchmarks.overload
	$(BIN)/python -m benchmarks.linker_serving
	$(BIN)/python -m benchmarks.bias_serving

# Minutes of mixed traffic with bad input through the services (tiny models): RSS, open files,
# threads and status codes -> reports/soak.md.
# The GPU path (issue 17): one run on an NVIDIA GPU (~5 min on an H200); reports/bench_gpu.md + .json
# ($OUT when set). Makes the venv when missing, or uses a python with torch plus wheels carried in .whl/.
.PHONY: bench-gpu
bench-gpu:
	bash benchmarks/gpu.sh $(ARGS)

# Concord vs Jina's clip-as-service on the same random ViT-B/32 (clip-server in its own venv,
# .cache/peers/venv, 1.7 GB; about 10-15 minutes on 2 cores). Not in `bench`: it needs PyPI.
.PHONY: bench-peers
bench-peers: install
	benchmarks/peers/install.sh
	$(BIN)/python -m benchmarks.peers

.PHONY: soak
SOAK_MINUTES ?= 5
soak: install
	$(BIN)/python -m benchmarks.soak --minutes $(SOAK_MINUTES)

# Random requests from the proto descriptors (plus corrupted and random bytes) against the
# services on tiny models: FUZZ_EXAMPLES per RPC and mode (the test suite runs 12), fresh
# examples each run; the tally goes to reports/fuzz.md.
.PHONY: fuzz
FUZZ_EXAMPLES ?= 400
fuzz: install
	CONCORD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) CONCORD_FUZZ_REPORT=reports/fuzz.md \
		$(BIN)/python -m pytest tests/fuzz -q -p no:cacheprovider

freeze: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .cache
