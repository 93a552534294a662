#!/usr/bin/env bash
# The Gateway API's CRDs (HTTPRoute and the rest of its standard channel),
# from the module sigs.k8s.io/gateway-api on the Go module proxy, into
# .tools/gateway-api/<version>/. The version is the one the Gateway
# implementation the tests run (Traefik) is built against. A no-op when there.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v1.6.1
target=.tools/gateway-api/$version
if [ -f "$target/.fetched" ]; then
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "fetch-gateway-api: go is not installed (the module proxy serves the CRDs)" >&2
    exit 1
fi
echo "fetch-gateway-api: sigs.k8s.io/gateway-api@$version -> $target"
dir=$(go mod download -json "sigs.k8s.io/gateway-api@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir/config/crd/standard" ]; then
    echo "fetch-gateway-api: the module has no config/crd/standard" >&2
    exit 1
fi
rm -rf "$target"
mkdir -p "$target"
cp "$dir"/config/crd/standard/*.yaml "$target/"
chmod u+w "$target"/*.yaml
touch "$target/.fetched"
