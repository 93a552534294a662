#!/usr/bin/env bash
# Installs the third-party model servers the tests start (MLServer, an MLflow
# tracking server), each in a virtualenv of its own under .tools/, so their
# dependencies never meet the project's. A no-op when the pins are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
# The project's scikit-learn in both: a model the tests log to MLflow or
# pickle for MLServer loads the same pipeline the reference trainer fitted.
sklearn=$(.venv/bin/python -c 'import sklearn; print(sklearn.__version__)')

ensure() {
    local name=$1 requirements=$2 extra=$3
    local target=.tools/$name stamp
    stamp="$(sha256sum "$requirements" | cut -d' ' -f1) $extra"
    if [ -f "$target/.installed" ] && [ "$(cat "$target/.installed")" = "$stamp" ]; then
        return 0
    fi
    echo "ensure-model-servers: installing $name into $target"
    rm -rf "$target"
    "$python" -m venv "$target"
    "$target/bin/pip" install --quiet --upgrade pip
    # shellcheck disable=SC2086
    "$target/bin/pip" install --quiet -r "$requirements" $extra
    echo "$stamp" > "$target/.installed"
}

ensure mlserver tests/servers/requirements-mlserver.txt "scikit-learn==$sklearn"
ensure mlflow tests/servers/requirements-mlflow.txt "scikit-learn==$sklearn skops"
