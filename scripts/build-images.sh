#!/usr/bin/env bash
# Builds the images the chart and the real test node run, with no registry
# but the package registries (no Docker Hub here):
#
#   debian-python  the base: Debian bookworm's Python, made by mmdebstrap
#                  from Debian packages
#   modelgate      the project's Dockerfile on that base (operator, the
#                  Jobs' programs, the reference model server)
#   s3             moto's S3 server (deploy/images/s3), named as
#                  deploy/kind/s3.yaml names it
#   pause          the pods' sandbox (deploy/images/pause, static Go)
#   coredns        cluster DNS for the real node (deploy/images/coredns:
#                  CoreDNS with the plugins its Corefile uses, static Go)
#   prometheus     Prometheus with Kubernetes discovery (deploy/images/
#                  prometheus, static Go; Debian's has no Kubernetes
#                  discovery), named as deploy/kind/prometheus.yaml names it
#   mlserver       MLServer with its scikit-learn runtime (deploy/images/
#                  mlserver, tests/servers/requirements-mlserver.txt and the
#                  project's scikit-learn), named as Seldon's public image
#   mlflow         an MLflow tracking server and registry (deploy/images/
#                  mlflow, tests/servers/requirements-mlflow.txt), named as
#                  MLflow's public image and deploy/kind/mlflow.yaml
#
# with buildah, each written as an OCI archive to .tools/images/<name>.tar.
# An image is cached by the content of what it is built from (in
# $MODELGATE_IMAGE_CACHE, default ~/.cache/modelgate/images): an unchanged
# image is not built again, from any clone. The machine's CA bundle is
# mounted over the image's own in the build containers, and pip is pointed
# at it (and at the machine's package index) by build arguments of the build
# stages only: package installs reach PyPI through them, no image keeps
# them (tests/integration/test_images.py looks). Sizes go to
# .tools/images/sizes.tsv.
#
# Usage: scripts/build-images.sh [name ...]   (default: all)
# With Docker instead (the kind path): `docker build -t modelgate:dev .`
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/.tools/images"
cache="${MODELGATE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelgate/images}"
mkdir -p "$out" "$cache"

# What the images are called inside the node's containerd. The project's is
# the chart's image.repository/tag for the node (tests/support/realnode.py).
# The third-party servers' versions are their requirement files' pins.
pinned() {  # requirements file, package: the version it pins
    sed -n "s/^$2==\([^ ;]*\).*/\1/p" "$1"
}
mlserver_version=$(pinned tests/servers/requirements-mlserver.txt mlserver)
mlflow_version=$(pinned tests/servers/requirements-mlflow.txt mlflow)
declare -A refs=(
    [debian-python]=localhost/modelgate/debian-python:bookworm
    [modelgate]=localhost/modelgate:dev
    [s3]=docker.io/motoserver/moto:5.0.28
    [pause]=localhost/modelgate/pause:1
    [coredns]=localhost/modelgate/coredns:1.12.4
    # Prometheus built from its module, under the name the kind path pulls.
    [prometheus]=quay.io/prometheus/prometheus:v3.16.0
    [mlserver]=docker.io/seldonio/mlserver:$mlserver_version-sklearn
    [mlflow]=ghcr.io/mlflow/mlflow:v$mlflow_version
)
order=(debian-python pause coredns modelgate s3 prometheus mlserver mlflow)
# The images built FROM the Debian base.
on_debian_python=" modelgate s3 mlserver mlflow "

for tool in buildah mmdebstrap go; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-images: '$tool' is missing (Debian packages buildah and mmdebstrap; Go 1.26+)" >&2
        exit 1
    fi
done

sources=/etc/apt/sources.list.d/debian.sources
[[ -f $sources ]] || sources=/etc/apt/sources.list
ca_bundle=/etc/ssl/certs/ca-certificates.crt
# Every image FROM the base has a bundle there, so the mount leaves no
# trace; a mounted pip.conf would leave an empty /etc/pip.conf behind.
build_mounts=(--volume "$ca_bundle:$ca_bundle:ro")
pip_index=${PIP_INDEX_URL:-$(pip3 config get global.index-url 2>/dev/null || true)}
build_args=(--build-arg "PIP_CERT=$ca_bundle")
build_args+=(--build-arg "PIP_INDEX_URL=${pip_index:-https://pypi.org/simple}")

build_debian_python() {
    local ref=$1 work
    work=$(mktemp -d)
    # minbase + Python: no docs, man pages or locales in an image nobody reads.
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --aptopt='Acquire::Languages "none"' \
        bookworm "$work/rootfs.tar" < "$sources"
    local container
    container=$(buildah from scratch)
    buildah add --quiet "$container" "$work/rootfs.tar" /
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 "$container"
    buildah commit --quiet --rm "$container" "$ref" >/dev/null
    rm -rf "$work"
}

build_prometheus() {
    # From the Go module proxy at the pin in deploy/images/prometheus/go.mod,
    # with the Kubernetes service discovery only (Prometheus' own build
    # tags); its data in /prometheus (an emptyDir: the root is read-only).
    local ref=$1 work container version
    work=$(mktemp -d)
    version=$(cd deploy/images/prometheus && go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
    version=3.${version#v0.}  # module v0.316.0 is Prometheus 3.16.0
    (cd deploy/images/prometheus && CGO_ENABLED=0 go build -trimpath \
        -tags remove_all_sd,enable_kubernetes_sd \
        -ldflags "-s -w -X github.com/prometheus/common/version.Version=$version" \
        -o "$work/prometheus" github.com/prometheus/prometheus/cmd/prometheus)
    container=$(buildah from scratch)
    buildah copy --quiet --chmod 0755 "$container" "$work/prometheus" /bin/prometheus
    buildah config --entrypoint '["/bin/prometheus"]' \
        --cmd '["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
        --workingdir /prometheus --user 65534:65534 --port 9090 "$container"
    buildah commit --quiet --rm "$container" "$ref" >/dev/null
    rm -rf "$work"
}

build_go_binary_image() {  # ref, program (deploy/images/<program>), user
    local ref=$1 program=$2 work container
    work=$(mktemp -d)
    (cd "deploy/images/$program" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/$program" .)
    container=$(buildah from scratch)
    buildah copy --quiet --chmod 0755 "$container" "$work/$program" "/$program"
    buildah config --entrypoint "[\"/$program\"]" --user "$3" "$container"
    buildah commit --quiet --rm "$container" "$ref" >/dev/null
    rm -rf "$work"
}

build_pause() { build_go_binary_image "$1" pause 65535:65535; }
build_coredns() { build_go_binary_image "$1" coredns 65532:65532; }

build_dockerfile() {  # ref, Dockerfile, context, more buildah arguments
    buildah bud --quiet --network host --layers=false "${build_mounts[@]}" "${build_args[@]}" \
        --build-arg "PYTHON_IMAGE=${refs[debian-python]}" "${@:4}" \
        -f "$2" -t "$1" "$3" >/dev/null
}

build_modelgate() { build_dockerfile "$1" Dockerfile .; }
build_s3() { build_dockerfile "$1" deploy/images/s3/Dockerfile deploy/images/s3; }
build_mlserver() {
    build_dockerfile "$1" deploy/images/mlserver/Dockerfile tests/servers \
        --build-arg "SKLEARN_VERSION=$sklearn_version"
}
build_mlflow() { build_dockerfile "$1" deploy/images/mlflow/Dockerfile tests/servers; }

digest_of() {  # sha256 of the given files' names and contents
    for f in "$@"; do echo "$f"; cat "$f"; done | sha256sum | cut -d' ' -f1
}

tree_files() {  # the files of a source tree that go into an image
    find "$@" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' | LC_ALL=C sort
}

recipe() {  # the text of the functions that build an image: a changed recipe rebuilds it
    declare -f "$@" | sha256sum | cut -d' ' -f1
}

# An image's key: its recipe, its inputs and its base's key.
declare -A keys
keys[debian-python]=$( { recipe build_debian_python; digest_of "$sources"; } | sha256sum | cut -d' ' -f1)
keys[pause]=$( { recipe build_go_binary_image build_pause; digest_of deploy/images/pause/main.go deploy/images/pause/go.mod; } | sha256sum | cut -d' ' -f1)
keys[coredns]=$( { recipe build_go_binary_image build_coredns; digest_of deploy/images/coredns/main.go deploy/images/coredns/go.mod deploy/images/coredns/go.sum; } | sha256sum | cut -d' ' -f1)
# shellcheck disable=SC2046
keys[modelgate]=$( { echo "${keys[debian-python]}"; recipe build_dockerfile build_modelgate; digest_of Dockerfile .dockerignore pyproject.toml README.md $(tree_files operator); } | sha256sum | cut -d' ' -f1)
keys[prometheus]=$( { recipe build_prometheus; digest_of deploy/images/prometheus/go.mod deploy/images/prometheus/go.sum; } | sha256sum | cut -d' ' -f1)
keys[s3]=$( { echo "${keys[debian-python]}"; recipe build_dockerfile build_s3; digest_of deploy/images/s3/Dockerfile; } | sha256sum | cut -d' ' -f1)
# MLServer loads the pickles the project's scikit-learn writes: the same version.
sklearn_version=$(.venv/bin/python -c 'import sklearn; print(sklearn.__version__)' 2>/dev/null || true)
if [[ -z $sklearn_version ]]; then
    echo "build-images: MLServer's scikit-learn is the project's: make the virtualenv first (make venv)" >&2
    exit 1
fi
keys[mlserver]=$( { echo "${keys[debian-python]} $sklearn_version"; recipe build_dockerfile build_mlserver; digest_of deploy/images/mlserver/Dockerfile tests/servers/requirements-mlserver.txt; } | sha256sum | cut -d' ' -f1)
keys[mlflow]=$( { echo "${keys[debian-python]}"; recipe build_dockerfile build_mlflow; digest_of deploy/images/mlflow/Dockerfile tests/servers/requirements-mlflow.txt; } | sha256sum | cut -d' ' -f1)

# An image another one is built FROM must be in buildah's storage, at the
# version the cache holds.
present_in_storage() {  # ref key
    [[ "$(buildah inspect --type image --format '{{index .ImageAnnotations "dev.modelgate.key"}}' "$1" 2>/dev/null)" == "$2" ]]
}

# The cache keeps the three images of each name used last (a use touches
# its archive): every commit that changes the project makes a new one, and
# each is hundreds of MB. A clone's .tools/images holds a hard link to its
# own, so pruning never takes an image from under a build.
prune() {  # name, archive just used
    touch "$2"
    find "$cache" -maxdepth 1 -type f -regextype posix-extended \
        -regex ".*/$1-[0-9a-f]{64}\.tar" -printf '%T@ %p\n' \
        | sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -f
}

ensure() {
    local name=$1 ref=${refs[$1]} key=${keys[$1]} archive
    archive="$cache/$name-$key.tar"
    if [[ ! -f $archive ]]; then
        echo "build-images: building $name ($ref)" >&2
        local start=$SECONDS container
        # Built under a name of its own key: two builds at once (two clones)
        # never take each other's image.
        local building="localhost/modelgate-build/$name:${key:0:20}"
        "build_${name//-/_}" "$building"
        # The key travels with the image: a later build knows what it holds.
        container=$(buildah from --pull-never "$building")
        buildah config --annotation "dev.modelgate.key=$key" "$container"
        buildah commit --quiet --rm "$container" "$building" >/dev/null
        rm -f "$archive.partial"
        buildah push --quiet "$building" "oci-archive:$archive.partial:$ref"
        mv "$archive.partial" "$archive"
        buildah tag "$building" "$ref"
        buildah rmi "$building" >/dev/null
        echo "build-images: built $name in $((SECONDS - start)) s" >&2
    elif [[ $name == debian-python ]] && ! present_in_storage "$ref" "$key"; then
        # The images built FROM it find it by name in buildah's storage.
        buildah pull --quiet "oci-archive:$archive" >/dev/null
    fi
    ln -f "$archive" "$out/$name.tar" 2>/dev/null || cp "$archive" "$out/$name.tar"
    prune "$name" "$archive"
    printf '%s\t%s\t%s\t%s\n' "$name" "$ref" "$(stat -c %s "$archive")" "$key" >> "$out/sizes.tsv.partial"
}

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=("${order[@]}")
rm -f "$out/sizes.tsv.partial"
for name in "${order[@]}"; do
    for want in "${wanted[@]}"; do
        if [[ $want == "$name" ]]; then
            # Each image is built FROM the base: make sure of it first.
            [[ $on_debian_python == *" $name "* ]] && ensure debian-python >/dev/null
            ensure "$name"
        fi
    done
done
# The rows of the images built now, and the others' rows as they were.
touch "$out/sizes.tsv"
awk -F'\t' 'NR == FNR { built[$1] = 1; next } !($1 in built)' \
    "$out/sizes.tsv.partial" "$out/sizes.tsv" >> "$out/sizes.tsv.partial"
sort -u "$out/sizes.tsv.partial" > "$out/sizes.tsv"
rm -f "$out/sizes.tsv.partial"
column -t "$out/sizes.tsv" | cut -c1-100 >&2
