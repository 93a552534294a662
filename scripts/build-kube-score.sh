#!/usr/bin/env bash
# Builds kube-score (github.com/zegl/kube-score), the workload linter the
# chart's and the operator's manifests are scored with, from the Go module
# proxy into .tools/bin. A no-op when the pinned version is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=v1.20.0
bin="${KUBE_SCORE_BIN:-$root/.tools/bin}"
stamp="$bin/.kube-score-stamp"

if [[ -x "$bin/kube-score" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "build-kube-score: no 'go' on PATH; Go 1.24 or later is needed" >&2
    exit 1
fi
mkdir -p "$bin"
echo "build-kube-score: kube-score $version -> $bin" >&2
CGO_ENABLED=0 GOBIN="$bin" go install -trimpath -ldflags "-s -w" \
    "github.com/zegl/kube-score/cmd/kube-score@$version"
echo "$version" > "$stamp"
