# Sourced by hack/envtest-assets.sh and hack/cluster.sh (which set root, the repository): builds
# Kubernetes commands from the Go module proxy (prebuilt binaries cannot be downloaded here).
#
#   k8s_build VERSION MINOR OUT CMD...   builds k8s.io/kubernetes/cmd/CMD into OUT/CMD, each
#                                        with its version stamped (kubectl and Helm read it)

k8s_build() {
  local version=$1 minor=$2 out=$3; shift 3
  local work
  work=$(mktemp -d)
  (
    cd "$work"
    export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
    go mod init l4lb.local/k8s >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@${version}" | awk -F'"' '/"GoMod"/{print $4}')
    # k8s.io/kubernetes replaces its staging modules with local paths; point each at the
    # published module of the same minor instead.
    for m in $(awk '/=> \.\/staging\/src\//{print $1}' "$gomod"); do
      go mod edit -replace "${m}=${m}@v0.${minor}"
    done
    go mod edit -require "k8s.io/kubernetes@${version}"
    # l4lb's own versions of the modules both builds use, where newer (the build takes the
    # newest): their packages then compile once, shared with the tests' build, which make keeps
    # to the same flags (static, -trimpath), instead of once for each (docs/benchmarks.md,
    # "CI time").
    go mod edit $(cd "$root" && GOFLAGS=-mod=readonly go list -m -f '{{if not .Main}}-require={{.Path}}@{{.Version}}{{end}}' all)
    {
      echo '//go:build tools'; echo; echo 'package tools'; echo
      for c in "$@"; do echo "import _ \"k8s.io/kubernetes/cmd/$c\""; done
    } > tools.go
    go mod tidy -e >/dev/null 2>&1 || true
    for c in "$@"; do
      echo "building $c ${version} (once)" >&2
      go build -trimpath -ldflags "-s -X k8s.io/component-base/version.gitVersion=${version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*}" \
        -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c" >&2
      mv "$out/$c.tmp" "$out/$c"
    done
  )
  local rc=$?
  rm -rf "$work"
  return $rc
}
