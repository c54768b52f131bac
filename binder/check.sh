#!/usr/bin/env bash
# `make binder-check`: prove that binder/ builds a working environment the way repo2docker
# would, without Docker: a clean virtualenv on the Python of runtime.txt, `pip install -r
# binder/requirements.txt` run from the repository root, binder/postBuild (its MNIST download is
# skipped when storage.googleapis.com is unreachable), then the quickstart notebook executed
# headless with nbclient in that environment. Prints how long each step took.
#
# Environment: PYTHON (interpreter for the venv, default python3.X from runtime.txt),
# KEEP_BINDER_VENV=1 keeps the temp folder for inspection.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
want=$(sed -n 's/^python-\([0-9.]*\).*/\1/p' binder/runtime.txt)
PYTHON=${PYTHON:-$(command -v "python$want" || command -v python3)}
have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$have" != "$want" ]; then
    echo "binder-check: runtime.txt asks for Python $want, using $PYTHON ($have)" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tfserve-binder-check.XXXXXX")
cleanup() {
    if [ "${KEEP_BINDER_VENV:-0}" = "1" ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

t0=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - t0 )) s)"; }

# With repo2docker installed (REPO2DOCKER=path, or on PATH), check its build plan first: it
# needs no Docker daemon with --no-build, and shows that binder/ is what it reads.
r2d=${REPO2DOCKER:-$(command -v repo2docker || true)}
if [ -n "$r2d" ]; then
    step "repo2docker --no-build: the Dockerfile it would build"
    plan=$("$r2d" --no-build --no-run --debug "$repo" 2>&1)
    for expect in "python=$want" 'pip install --no-cache-dir -r "binder/requirements.txt"' \
        "./binder/postBuild" 'R2D_ENTRYPOINT="${REPO_DIR}/binder/start"'; do
        if ! grep -qF -- "$expect" <<< "$plan"; then
            echo "binder-check: repo2docker's plan lacks: $expect" >&2
            exit 1
        fi
    done
    echo "repo2docker plans: Python $want, pip install -r binder/requirements.txt, postBuild, start"
fi

step "clean virtualenv with $PYTHON ($have)"
"$PYTHON" -m venv "$work/venv"
# repo2docker puts the environment first on PATH; so do we, for postBuild and the kernel
export PATH="$work/venv/bin:$PATH"
unset PYTHONPATH VIRTUAL_ENV
python -m pip install --quiet --upgrade pip

step "pip install -r binder/requirements.txt (in the repo root, as repo2docker does)"
python -m pip install --quiet -r binder/requirements.txt
# What repo2docker's own base environment brings (the Jupyter server and kernel), plus the
# notebook runner used for this check.
python -m pip install --quiet ipykernel nbclient nbformat
t_install=$(( $(date +%s) - t0 ))

# A fresh home, as on Binder: postBuild's ~/.keras and the servers' records land here.
export HOME="$work/home"
mkdir -p "$HOME"
export TF_CPP_MIN_LOG_LEVEL=2
if ! python -c "import socket; socket.create_connection(('storage.googleapis.com', 443), 3)" \
    2> /dev/null; then
    echo "storage.googleapis.com is unreachable: postBuild skips the MNIST download and the"
    echo "quickstart uses the offline fallback (TFSERVE_MAGIC_OFFLINE=1)"
    export TFSERVE_MAGIC_OFFLINE=1
fi

step "binder/postBuild"
bash binder/postBuild

step "quickstart, headless, in the new environment (binder/start sets the launch env)"
# Run outside the checkout so the kernel imports the installed package, not ./tfserve_magic.
cd "$work"
python - "$repo" <<'PY'
import sys

import tfserve_magic

repo = sys.argv[1]
if tfserve_magic.__file__.startswith(repo + "/tfserve_magic"):
    sys.exit(f"binder-check: imported the checkout ({tfserve_magic.__file__}), not the install")
print("installed package:", tfserve_magic.__file__)
PY
bash "$repo/binder/start" python -m tfserve_magic.demo --quick \
    --notebook "$repo/notebooks/01_quickstart.ipynb" --output "$repo/build/binder-check/01_quickstart.ipynb"

total=$(( $(date +%s) - t0 ))
echo "binder-check passed in ${total} s (environment install ${t_install} s)"
