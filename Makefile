# `sam build` runs build-<LogicalId> here with ARTIFACTS_DIR set (template.yaml: BuildMethod:
# makefile). The functions in functions/ are a few lines each and share one layer, TqCloudLayer,
# built here: REQUIREMENTS installed as wheels for the Lambda platform, PACKAGES (the app's own
# code) copied, what no deployed function runs left out, all of it compiled.
#
# Why not SAM's default pip builder: it ships sources without bytecode, and /opt is read-only,
# so every cold start compiles every module it imports and throws the result away. Here the
# dependencies are installed as wheels for the Lambda platform, then everything is compiled with
# hash-based invalidation: the deployment zip does not keep file timestamps, so a timestamp .pyc
# would never validate (aws/aws-lambda-builders#924). Build with the runtime's Python (3.12): bytecode
# of another version is ignored and every module compiled again at each cold start.
PYTHON ?= python3.12
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PLATFORM ?= manylinux2014_aarch64
REQUIREMENTS ?= requirements.txt
PACKAGES ?= tq_cloud
# tq_cloud's parts that run on a laptop, never in a function (tests/unit/test_boundaries.py
# checks that production code imports none of them)
NOT_DEPLOYED ?= local simulation cli console scaffold demo.py testing.py __main__.py
# the AWS services the functions call: botocore's models of the other 400 are 24 MB nobody loads
AWS_SERVICES ?= dynamodb kinesis sqs scheduler sts
LAYER = $(ARTIFACTS_DIR)/python

build-TqCloudLayer:
	$(PYTHON) -m pip install --quiet --no-compile --no-warn-conflicts --target "$(LAYER)" --platform $(PLATFORM) \
		--implementation cp --python-version $(PY_VERSION) --only-binary=:all: -r $(REQUIREMENTS)
	cp -rL $(PACKAGES) "$(LAYER)/"
	cd "$(LAYER)/tq_cloud" && rm -rf $(NOT_DEPLOYED)
	[ ! -d "$(LAYER)/botocore/data" ] || find "$(LAYER)/botocore/data" -mindepth 1 -maxdepth 1 -type d \
		$(foreach s,$(AWS_SERVICES),! -name $(s)) -exec rm -rf {} +
	find "$(LAYER)" -name __pycache__ -prune -exec rm -rf {} +
	$(PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(LAYER)"

# `make tools`: the SAM CLI, in an environment of its own (its pins of boto3 and botocore fight
# the ones aiobotocore needs, so it cannot share the project's): then .venv-sam/bin/sam build,
# .venv-sam/bin/sam deploy --guided.
SAM_VENV ?= .venv-sam
tools:
	python3 -m venv "$(SAM_VENV)"
	"$(SAM_VENV)/bin/python" -m pip install --quiet "aws-sam-cli>=1.100"
	@echo "installed $(SAM_VENV)/bin/sam: $(SAM_VENV)/bin/sam build && $(SAM_VENV)/bin/sam deploy --guided"

.PHONY: tools
