#!/usr/bin/env bash
# Builds the real control plane the tests run (kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd), the real node's kubelet and
# kube-proxy, the kubectl of the same version and celcost
# (tests/controlplane/celcost: the CRD rules' cost estimate) from the Go module pinned in
# tests/controlplane/go.mod into .tools/bin. A stamp holding the hash of
# go.mod, go.sum and this script makes a second run a no-op.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
module="$root/tests/controlplane"
bin="${CONTROLPLANE_BIN:-$root/.tools/bin}"
stamp="$bin/.controlplane-stamp"

if ! command -v go >/dev/null; then
    echo "build-controlplane: no 'go' on PATH; Go 1.24 or later is needed" >&2
    exit 1
fi

want="$(cat "$module/go.mod" "$module/go.sum" "$module/celcost/main.go" "$0" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/kube-scheduler" \
        && -x "$bin/kubelet" && -x "$bin/kube-proxy" && -x "$bin/etcd" && -x "$bin/kubectl" && -x "$bin/celcost" ]]; then
    exit 0
fi

mod_version() {  # the version go.mod requires for a module path
    (cd "$module" && go list -m -f '{{.Version}}' "$1")
}
kube_version="$(mod_version k8s.io/kubernetes)"     # e.g. v1.34.4
etcd_version="$(mod_version go.etcd.io/etcd/server/v3)"
major_minor="${kube_version#v}"
kube_major="${major_minor%%.*}"
rest="${major_minor#*.}"
kube_minor="${rest%%.*}"

kube_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$kube_version \
 -X k8s.io/component-base/version.gitMajor=$kube_major \
 -X k8s.io/component-base/version.gitMinor=$kube_minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$kube_version \
 -X k8s.io/client-go/pkg/version.gitMajor=$kube_major \
 -X k8s.io/client-go/pkg/version.gitMinor=$kube_minor"

mkdir -p "$bin"
cd "$module"
export CGO_ENABLED=0
echo "build-controlplane: kubernetes $kube_version, etcd $etcd_version -> $bin (a cold build takes many minutes)" >&2
start=$SECONDS
go build -trimpath -ldflags "$kube_ldflags" -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -trimpath -ldflags "$kube_ldflags" -o "$bin/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
go build -trimpath -ldflags "$kube_ldflags" -o "$bin/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler
go build -trimpath -ldflags "$kube_ldflags" -o "$bin/kubectl" k8s.io/kubernetes/cmd/kubectl
# The real node (tests/support/realnode.py): kubelet and kube-proxy.
go build -trimpath -ldflags "$kube_ldflags" -o "$bin/kubelet" k8s.io/kubernetes/cmd/kubelet
go build -trimpath -ldflags "$kube_ldflags" -o "$bin/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy
go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version" -o "$bin/etcd" go.etcd.io/etcd/server/v3
# The CEL cost estimate of the CRDs' rules, as this kube-apiserver makes it.
go build -trimpath -ldflags "-s -w" -o "$bin/celcost" ./celcost
echo "$want" > "$stamp"
echo "build-controlplane: built in $((SECONDS - start)) s" >&2
