#!/usr/bin/env bash
# Installs the real servers and binaries the test suite drives (Debian
# packages). Tests never skip because a tool is missing: they fail, so this
# runs before them. Needs root (as on CI); otherwise it says what to install.
set -euo pipefail

packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v git >/dev/null 2>&1 || packages+=(git)
command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)  # with promtool
# The real node (tests/support/realnode.py) and the images it runs
# (scripts/build-images.sh).
command -v containerd >/dev/null 2>&1 || packages+=(containerd)
command -v runc >/dev/null 2>&1 || packages+=(runc)
[ -x /usr/lib/cni/bridge ] || packages+=(containernetworking-plugins)
command -v conntrack >/dev/null 2>&1 || packages+=(conntrack)
command -v iptables >/dev/null 2>&1 || packages+=(iptables)
command -v ip >/dev/null 2>&1 || packages+=(iproute2)
command -v buildah >/dev/null 2>&1 || packages+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || packages+=(mmdebstrap)

if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing test tools: ${packages[*]}; install them (e.g. sudo apt-get install ${packages[*]})" >&2
    exit 1
fi
echo "installing test tools: ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
