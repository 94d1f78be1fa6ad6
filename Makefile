# l4lb: Octavia-style layer-4 load balancers as Kubernetes objects.
# `make demo` and `make test` do all their set-up on a fresh machine.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

BIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(BIN)/controller-gen
STATICCHECK ?= $(BIN)/staticcheck
HELM ?= $(BIN)/helm
CONTROLLER_TOOLS_VERSION ?= v0.23.0
STATICCHECK_VERSION ?= v0.8.2
HELM_VERSION ?= v3.22.0
export GOTOOLCHAIN := local
# One build configuration for all that make compiles (tests, vet, the binary, the image, the
# cluster's images): static and -trimpath, as a release image must be. Each other set of flags
# compiles every dependency once more, which a fresh machine pays in minutes (docs/benchmarks.md,
# "CI time"). Only the race run turns cgo back on: the race detector needs it.
export CGO_ENABLED ?= 0
export GOFLAGS ?= -trimpath

.PHONY: all
all: build

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Regenerate CRDs and RBAC, in config/ and in the chart.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=l4lb-manager paths=./controllers/... paths=./internal/ipam/... output:rbac:artifacts:config=config/rbac/manager
	$(CONTROLLER_GEN) rbac:roleName=l4lb-dataplane paths=./dataplane/agent/... output:rbac:artifacts:config=config/rbac/dataplane
	mkdir -p charts/l4lb/crds charts/l4lb/files
	rm -f charts/l4lb/crds/*.yaml
	cp config/crd/bases/*.yaml charts/l4lb/crds/
	sed -n '/^rules:/,$$p' config/rbac/manager/role.yaml > charts/l4lb/files/manager-rules.yaml
	sed -n '/^rules:/,$$p' config/rbac/dataplane/role.yaml > charts/l4lb/files/dataplane-rules.yaml

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: verify
verify: manifests generate $(STATICCHECK) ## Fail when generated files, formatting, vet, lint or go.mod are not current.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: run make fmt"; exit 1; }
	go vet ./...
	go vet -tags conformance ./...  # the field's clients (make conformance) compile too
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags conformance ./...
	go mod tidy
	@git diff --exit-code -- . || { echo "generated files or go.mod are stale: run make manifests generate, go mod tidy, and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- config charts api)" || { git status --porcelain -- config charts api; echo "untracked generated files"; exit 1; }

.PHONY: build
build: ## Build the l4lb binary (controller manager and dataplane agent).
	go build -o $(BIN)/l4lb .

IMG ?= l4lb:dev
.PHONY: image
image: ## Pack the static binary into an OCI image archive, bin/l4lb-image.tar (IMG=name:tag), without Docker.
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o $(BIN)/l4lb .
	go run ./hack/image -binary $(BIN)/l4lb -tag $(IMG) -o $(BIN)/l4lb-image.tar
	@echo "$(BIN)/l4lb-image.tar: load it with 'ctr -n k8s.io images import', or push it with 'crane push $(BIN)/l4lb-image.tar REGISTRY/l4lb:TAG'"

##@ Test

.PHONY: envtest
envtest: ## Build (once, cached) a real kube-apiserver and etcd for tests.
	@hack/envtest-assets.sh >/dev/null

.PHONY: test
test: ## Run every test against a real API server (building it, Helm and the cluster's commands while the first tests run).
	hack/test.sh

.PHONY: helm
helm: $(HELM) ## Build (once) the Helm the tests and the cluster use.

.PHONY: conformance
conformance: envtest ## The field's clients against l4lb: Octavia's API test suite, cloud-provider-openstack, Terraform (as root; not in make test: about 25 minutes, and 20 more the first time, building the clients).
	hack/conformance.sh

.PHONY: soak
soak: ## The churn soak for SOAK (10m by default) under the race detector; figures in docs/benchmarks.md.
	L4LB_SOAK_DURATION=$${SOAK:-10m} go test -race -count=1 -timeout 0 -run '^TestChurnSoak$$' -v ./dataplane/proxy/ | grep -E 'soak_test|^(--- |ok|FAIL|PASS)'

.PHONY: partitions
partitions: envtest ## Issue 27's partition matrix, each fault held 60 s, then the randomized split-brain run for SOAK (10m by default), as root; figures in docs/benchmarks.md.
	L4LB_PARTITION_HOLD=60s go test -count=1 -timeout 0 -run '^TestPartitionMatrix' -v ./dataplane/failover/ | grep -E '^(matrix|--- |ok|FAIL|PASS)|_test.go'
	L4LB_SPLITBRAIN_SOAK=$${SOAK:-10m} go test -count=1 -timeout 0 -run '^TestSplitBrainSoak$$' -v ./dataplane/failover/ | grep -E '^(split|--- |ok|FAIL|PASS)|_test.go'

.PHONY: bench
bench: ## l4lb against HAProxy 2.6, a direct path and (its kernel path) a BPF ceiling, on loopback and on network-namespace hosts, printed as ratios; the control plane's latency and its cost at 100 and 1,000 load balancers (as root).
	hack/bench.sh
	hack/bench-kernel.sh
	go run ./hack/latency
	go run ./hack/latency -openstack
	go run ./hack/latency -octavia
	go test -run '^$$' -bench . -benchmem ./dataplane/balancer/
	go test -run '^$$' -bench Restore -benchtime 50000x ./dataplane/nat/
	go test -run '^$$' -bench TakingManyVIPs ./dataplane/vip/
	go test -run '^$$' -bench Build -benchmem ./internal/model/
	go test -run '^$$' -bench OwnershipStep ./dataplane/agent/
	go test -run '^$$' -bench Scale -benchtime 1x -timeout 30m ./test/scale/

##@ Demo

.PHONY: demo
demo: envtest ## Start a local control plane, install the CRDs, apply the static samples.
	hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop what make demo started.
	hack/demo.sh down

##@ Tools

$(CONTROLLER_GEN):
	GOBIN=$(BIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

$(STATICCHECK):
	GOBIN=$(BIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

$(HELM):
	GOBIN=$(BIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-12s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
