# `sam build` runs build-<LogicalId> here with ARTIFACTS_DIR set (template.yaml: BuildMethod: makefile):
# it installs REQUIREMENTS as wheels for the Lambda platform and copies PACKAGES, the app's own code.
#
# Why not SAM's default pip builder: it ships sources without bytecode, and /var/task is read-only,
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

build-WorkerFunction build-SweeperFunction:
	$(PYTHON) -m pip install --quiet --no-compile --no-warn-conflicts --target "$(ARTIFACTS_DIR)" --platform $(PLATFORM) \
		--implementation cp --python-version $(PY_VERSION) --only-binary=:all: -r $(REQUIREMENTS)
	cp -rL $(PACKAGES) "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)" -name __pycache__ -prune -exec rm -rf {} +
	$(PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(ARTIFACTS_DIR)"
