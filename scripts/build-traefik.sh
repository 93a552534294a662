#!/usr/bin/env bash
# Builds Traefik (github.com/traefik/traefik/v3), the Gateway API
# implementation the judged-rollout tests route live traffic through (an
# HTTPRoute's backendRefs weights), from the Go module proxy into .tools/bin.
# A no-op when the pinned version is already there.
#
# The module does not build from the proxy as published, so a copy is
# adjusted first (nothing of it is committed here):
# - its go.mod replaces github.com/traefik/traefik/dynamic/ext with a
#   directory its module zip lacks: an empty stand-in module gives the two
#   structs Traefik embeds from it (ext.HTTP, ext.Router), with no fields;
# - github.com/abbot/go-http-auth is replaced by a fork version the proxy
#   refuses: the upstream's last version is used, whose digest auth has no
#   "stale" answer (a stale nonce is asked for again as a new one);
# - lego's registry of ACME DNS-01 providers imports SDKs the proxy refuses:
#   the build has no DNS challenge providers (naming one is an error).
# None of these touches routing or the Gateway API provider.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=v3.7.13
http_auth=v0.4.1-0.20220112235402-e1cee1c72f2f
bin="${TRAEFIK_BIN:-$root/.tools/bin}"
stamp="$bin/.traefik-stamp"

if [[ -x "$bin/traefik" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "build-traefik: no 'go' on PATH; Go 1.24 or later is needed" >&2
    exit 1
fi
echo "build-traefik: traefik $version -> $bin" >&2
module=$(go mod download -json "github.com/traefik/traefik/v3@$version" \
    | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
if [[ -z "$module" || ! -d "$module/cmd/traefik" ]]; then
    echo "build-traefik: the module proxy did not give github.com/traefik/traefik/v3@$version" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cp -r "$module" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"

mkdir -p pkg/config/dynamic/ext
printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24\n' > pkg/config/dynamic/ext/go.mod
cat > pkg/config/dynamic/ext/ext.go <<'EOF'
// Package ext stands in for Traefik's dynamic configuration extension module,
// which its module zip does not carry: no extension fields.
package ext

// HTTP holds no extension fields.
type HTTP struct{}

// Router holds no extension fields.
type Router struct{}
EOF

go mod edit -replace "github.com/abbot/go-http-auth=github.com/abbot/go-http-auth@$http_auth"
sed -i 's/d\.auth\.RequireAuthStale(rw, req)/d.auth.RequireAuth(rw, req)/' \
    pkg/middlewares/auth/digest_auth.go

sed -i '\#"github.com/go-acme/lego/v5/providers/dns"#d' pkg/provider/acme/provider.go
cat > pkg/provider/acme/no_dns_providers.go <<'EOF'
package acme

import (
	"fmt"

	"github.com/go-acme/lego/v5/challenge"
)

// dnsProviders stands in for lego's registry of DNS-01 providers, left out
// of this build (several of their SDKs are not on the module proxy).
type dnsProviders struct{}

var dns dnsProviders

func (dnsProviders) NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("DNS-01 provider %q: this Traefik build has no DNS challenge providers", name)
}
EOF

mkdir -p "$bin"
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$bin/traefik" ./cmd/traefik
echo "$version" > "$stamp"
