# Sourced by scripts/test and scripts/demo: make .venv if missing and install basinvcs into it.
# torch is pinned to 2.13.0 in pyproject.toml, so pip takes the local CPU build, never CUDA wheels.
ensure_venv() {
    local extras=${1:-}
    if [ ! -x .venv/bin/python ]; then
        "${PYTHON:-python3}" -m venv .venv
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check -e ".${extras}"
}
