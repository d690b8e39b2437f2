# Every target installs what it needs: a Python 3.13 venv outside the clone, keyed on the pinned
# requirements (see scripts/bootstrap), so a fresh clone needs only `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Made (and its path found) once per make, at first use: a plain recursive variable ran
# scripts/bootstrap (two Python starts) at every use, about 4 s of make check's wall under load.
VENV = $(eval VENV := $$(shell scripts/bootstrap))$(VENV)
PY = $(VENV)/bin/python
# The layer package and the local world import like they do on Lambda and in the tests.
export PYTHONPATH := $(CURDIR)/layers/shared:$(CURDIR)/tools:$(CURDIR)
AUDIO ?=
FUNCTION ?= TranscribeFunction
EVENT ?= events/s3-put.json
ENV_VARS ?=
# The samconfig.toml environment of deploy, delete and secret ("default" is dev). Only a value given
# on make's command line counts: ENV is a common variable in shells and CI, and must not pick prod.
override ENV := $(if $(filter command line,$(origin ENV)),$(ENV),default)
PYTHON_SOURCES = layers/shared/transcriber functions tools tests scripts bench
GATED_SOURCES = layers/shared/transcriber functions
TYPED_SOURCES = layers/shared/transcriber functions/transcribe/app.py functions/retry/app.py tools scripts tests bench

.PHONY: help demo test check complexity lint format typecheck unit integration template-check build validate deploy \
	deploy-prod delete secret webhook-secret invoke emulator clean failures report redrive backfill status upload chaos bench localworld-test \
	sam-local docs diagram fast-tests

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

demo: ## Transcribe the two-voice sample (or AUDIO=file or folder/, SPEAKERS="0=Ann,1=Raj") end to end on the local world; outputs kept in demo-output/ (OUTAGE=10: recover via the DLQ)
	@$(PY) -m localworld.demo $(if $(AUDIO),--audio "$(AUDIO)") $(if $(OUTAGE),--outage "$(OUTAGE)") $(if $(SPEAKERS),--speakers "$(SPEAKERS)")

# pytest-xdist workers: the slow tiers mostly wait on processes and sockets, so more than the cores.
TEST_WORKERS ?= 4
# The layer's branch coverage (pyproject.toml's [tool.coverage]), measured in each xdist worker by
# pytest-cov and combined; handlers run by the Docker-free runtime are subprocesses, not counted.
COVERAGE = --cov --cov-report=term-missing:skip-covered

# The fast tiers keep their compiled bytecode beside the venv, outside the clone, even where the
# environment sets PYTHONDONTWRITEBYTECODE: else every xdist worker compiles and assertion-rewrites
# every test module again on each run (about a second of CPU per worker).
BYTECODE_CACHE = PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(VENV)-pycache

# make check's gate counts the layer's lines with sys.monitoring (pyproject.toml says why); make
# test's counts lines and branches.
LINE_COVERAGE = COVERAGE_CORE=sysmon COVERAGE_BRANCH=false

# lint and mypy run beside the tests (pytest's start-up leaves a core idle), output kept by line.
check: ## Feedback in seconds: ruff, radon, mypy, unit + core tests on every core, the line-coverage gate
	@$(MAKE) --no-print-directory -j3 -Oline VENV=$(VENV) lint typecheck fast-tests

fast-tests:
	@$(BYTECODE_CACHE) $(LINE_COVERAGE) $(PY) -m pytest -q -n auto --dist worksteal $(COVERAGE) tests/unit tests/core

# The slowest tiers first (a long test collected last keeps the other workers idle at the end);
# pytest collects each test once, so "tests" after its own subfolders adds only the rest. worksteal:
# an idle worker takes tests queued on another, so the workers end together (plain load scheduling
# queues a quarter of the tests up front: measured, the last two workers ran on alone for 100 s).
TEST_ORDER = bench/tests tests/template tests/integration tests/artifact tools/localworld/tests tests

# make sam-local follows pytest, not beside it: run together (measured 9 min 42 s and 11 min 12 s
# against 10 min 52 s after) the machine is loaded enough for timing-sensitive tests to fail, the
# more so on a fresh machine where sam-local installs docker.io and builds its image meanwhile.
test: lint typecheck ## Everything: ruff, radon, mypy, the docs' links, all tests (xdist) with the layer's branch-coverage gate, then sam-local
	@$(PY) scripts/check_docs.py
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(COVERAGE) -m "not samlocal" $(TEST_ORDER)
	@$(MAKE) --no-print-directory VENV=$(VENV) sam-local

sam-local: ## sam build + sam local invoke/start-lambda in containers (installs and starts Docker, builds the base image if absent)
	@$(PY) -m pytest -m samlocal tests/samlocal

docs: ## Build the documentation site (MkDocs, Material theme) in strict mode into site/
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

diagram: ## Render the README's architecture picture (docs/img/architecture.svg) from scripts/architecture_diagram.py
	@$(PY) scripts/architecture_diagram.py

lint: ## ruff lint and format check, then the complexity gate
	@$(VENV)/bin/ruff check $(PYTHON_SOURCES)
	@$(VENV)/bin/ruff format --check $(PYTHON_SOURCES)
	@$(COMPLEXITY_GATE)

# radon's cyclomatic complexity (xenon applies it; rank B is at most 10). ruff's mccabe (C90) leaves
# out boolean operators and comprehensions, which radon counts: both gate.
COMPLEXITY_GATE = $(VENV)/bin/xenon --max-absolute B $(GATED_SOURCES)

complexity: ## radon's cyclomatic complexity: no function in the layer or functions/ over 10 (xenon --max-absolute B)
	@$(COMPLEXITY_GATE)

format: ## Apply ruff formatting and safe fixes
	@$(VENV)/bin/ruff check --fix $(PYTHON_SOURCES)
	@$(VENV)/bin/ruff format $(PYTHON_SOURCES)

typecheck: ## mypy --strict over the product code and the local world
	@$(VENV)/bin/mypy $(TYPED_SOURCES)

unit: ## Fast tests only: pure units and the core in-process (moto mock, responses), no coverage
	@$(BYTECODE_CACHE) $(PY) -m pytest -n auto --dist worksteal tests/unit tests/core

integration: ## Tests over real HTTP against moto server and the Deepgram emulator (xdist, TEST_WORKERS)
	@$(PY) -m pytest -n $(TEST_WORKERS) tests/integration

localworld-test: ## The local world's own tests (emulator, runtime, event delivery, template resolution)
	@$(PY) -m pytest tools/localworld/tests

template-check: ## cfn-lint (source and translated), sam validate --lint, sam build
	@$(PY) -m pytest tests/template

build: ## sam build (needs python3.13 first on PATH: the venv provides it)
	@PATH="$(VENV)/bin:$$PATH" sam build

validate: ## sam validate --lint
	@PATH="$(VENV)/bin:$$PATH" sam validate --lint

deploy: build ## sam deploy the ENV environment of samconfig.toml (default: dev; ENV=prod; GUIDED=1 asks the questions)
	@PATH="$(VENV)/bin:$$PATH" sam deploy --config-env "$(ENV)" $(if $(GUIDED),--guided)

# An alias: the prod environment for deploy and, through it, for build.
deploy-prod: ENV = prod
deploy-prod: deploy ## make deploy ENV=prod

delete: ## sam delete the ENV stack, then list what it keeps (buckets, the Deepgram and webhook secrets) and how to remove each
	@PATH="$(VENV)/bin:$$PATH" sam delete --config-env "$(ENV)"
	@$(PY) scripts/deployment.py kept --config-env "$(ENV)"

secret: ## Store the Deepgram API key (DEEPGRAM_API_KEY, or asked for) in the secret the ENV stack reads
	@$(PY) scripts/deployment.py secret --config-env "$(ENV)"

webhook-secret: ## Store the webhook's API key (WEBHOOK_API_KEY, or asked for) in the secret the ENV stack's webhook sends
	@$(PY) scripts/webhook_secret.py --config-env "$(ENV)"

invoke: ## Run FUNCTION on EVENT against the local world, without Docker (ENV_VARS=file.json optional)
	@$(PY) -m localworld.invoke --function "$(FUNCTION)" --event "$(EVENT)" $(if $(ENV_VARS),--env-vars "$(ENV_VARS)")

emulator: ## Run the Deepgram emulator on its own (https://127.0.0.1:8443)
	@$(PY) -m localworld.deepgram --port 8443 --api-key "$${DEEPGRAM_API_KEY:-local-dev-key}"

clean: ## Remove build and cache folders (the venv lives outside the clone)
	rm -rf .aws-sam .mypy_cache .ruff_cache .pytest_cache

failures: ## List failure records: make failures BUCKET=<OutputBucketName> (or STACK=<stack name>) [REASON=r SINCE=iso TEXT=1]
	@$(PY) scripts/operate.py failures $(if $(STACK),--stack "$(STACK)") $(if $(BUCKET),--bucket "$(BUCKET)") $(if $(REASON),--reason "$(REASON)") $(if $(SINCE),--since "$(SINCE)") $(if $(TEXT),--text)

report: ## Transcripts, audio hours, estimated cost, failures by reason: make report STACK=<stack> (or BUCKET=...; SINCE=/UNTIL= ISO)
	@$(PY) scripts/operate.py report $(if $(STACK),--stack "$(STACK)") $(if $(BUCKET),--bucket "$(BUCKET)") $(if $(SINCE),--since "$(SINCE)") $(if $(UNTIL),--until "$(UNTIL)") $(if $(TEXT),--text)

redrive: ## Move parked messages back to the DLQ: make redrive STACK=<stack name> (or FROM=<url> TO=<url>) [DRY_RUN=1]
	@$(PY) scripts/operate.py redrive $(if $(STACK),--stack "$(STACK)") $(if $(FROM),--from "$(FROM)") $(if $(TO),--to "$(TO)") $(if $(DRY_RUN),--dry-run)

status: ## Where one object is, as JSON: make status BUCKET=<input bucket> KEY=<key> (or STACK=<stack> KEY=<key>)
	@$(PY) scripts/operate.py status --key "$(KEY)" $(if $(STACK),--stack "$(STACK)") $(if $(BUCKET),--bucket "$(BUCKET)")

upload: ## Upload a recording to the input bucket, prints JSON: make upload STACK=<stack> FILE=<path> [KEY=<key>] [OPTIONS="language=es&diarize=true"] [SPEAKERS="0=Ann,1=Raj"]
	@$(PY) scripts/operate.py upload --file "$(FILE)" $(if $(STACK),--stack "$(STACK)") $(if $(BUCKET),--bucket "$(BUCKET)") $(if $(KEY),--key "$(KEY)") $(if $(OPTIONS),--options "$(OPTIONS)") $(if $(SPEAKERS),--speakers "$(SPEAKERS)")

backfill: ## Transcribe an archive with one S3 Batch Operations job: make backfill STACK=<stack> [BUCKET=<bucket>] [PREFIX=<prefix>] (no STACK: OBJECTS=200 on the local world)
	@$(if $(STACK),$(PY) scripts/operate.py backfill --stack "$(STACK)" $(if $(BUCKET),--bucket "$(BUCKET)") $(if $(PREFIX),--prefix "$(PREFIX)"),$(PY) -m localworld.backfill_run --objects $(or $(OBJECTS),200) $(if $(PREFIX),--prefix "$(PREFIX)"))

chaos: ## The nothing-lost run: UPLOADS=300 files through the local pipeline under injected faults
	@$(PY) -m localworld.chaos --uploads $(or $(UPLOADS),300)

bench: ## Benchmarks: one table of ratios (ONLY=cold,warm,calls,burst,capacity,size,bytes,answer,sim; sim = the governor in deterministic simulation)
	@$(PY) -m bench $(if $(ONLY),--only "$(ONLY)")
