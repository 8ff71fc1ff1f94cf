#!/usr/bin/env bash
# Install the Python FOCUS conformance tools used by tally's tests.
#
#   focus-validator 2.2.1       (FinOps Foundation; FOCUS 1.2 rule model bundled)
#   focus-data-toolkit 0.14.1   (third-party; `validate` lints against the FOCUS 1.4 model)
#
# Layout: ${TALLY_VALIDATORS_DIR:-$HOME/.cache/tally-validators}/venv
#         (+ venv-toolkit only if the toolkit cannot share the validator's venv; see below)
# Idempotent: an existing venv that already has the pinned versions is left alone.
# Needs Python 3.12 (focus-validator requires >=3.12,<4; system python3 is 3.11) and PyPI only.
# Prints VALIDATORS_PY=<python> on its last line so callers can `eval` / grep it.
set -euo pipefail

VALIDATOR_VERSION=2.2.1
TOOLKIT_VERSION=0.14.1
# pip would pick pyarrow >=25, which needs NumPy 2, but focus-validator pins numpy<2:
# validation then dies with "ImportError: pyarrow requires NumPy 2.0 or newer".
PYARROW_VERSION=24.0.0

DIR="${TALLY_VALIDATORS_DIR:-$HOME/.cache/tally-validators}"
VENV="$DIR/venv"
start=$(date +%s)

log() { echo "[install-validators] $*" >&2; }

is_py312() {
    # A pyenv shim is found by `command -v` even when 3.12 is not the active
    # version, and then fails when run; so actually run the candidate.
    [ -n "${1:-}" ] && [ -x "$1" ] &&
        "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    local c root
    if [ -n "${TALLY_PYTHON312:-}" ] && is_py312 "$TALLY_PYTHON312"; then echo "$TALLY_PYTHON312"; return 0; fi
    c=$(command -v python3.12 2>/dev/null || true)
    if is_py312 "$c"; then echo "$c"; return 0; fi
    root=""
    if command -v pyenv >/dev/null 2>&1; then root=$(pyenv root 2>/dev/null || true); fi
    [ -n "$root" ] || root="${PYENV_ROOT:-$HOME/.pyenv}"
    for c in "$root"/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
        if is_py312 "$c"; then echo "$c"; return 0; fi
    done
    return 1
}

# True if $1 (a venv dir) has every "dist==version" given after it.
venv_has() {
    local venv=$1; shift
    [ -x "$venv/bin/python" ] || return 1
    "$venv/bin/python" - "$@" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

WANT=("focus-validator==$VALIDATOR_VERSION" "pyarrow==$PYARROW_VERSION" "focus-data-toolkit==$TOOLKIT_VERSION")

if venv_has "$VENV" "${WANT[@]}" && [ -x "$VENV/bin/focus-validator" ] && [ -x "$VENV/bin/focus-toolkit" ]; then
    log "up to date: $VENV"
else
    PY=$(find_python) || { log "Python 3.12 not found (tried python3.12 on PATH and \$(pyenv root)/versions/3.12*)"; exit 1; }
    log "using $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
    rm -rf "$VENV"
    mkdir -p "$DIR"
    "$PY" -m venv "$VENV"
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q)
    # One resolver run with every pin: installing focus-validator alone would first pull
    # pyarrow 26 only to replace it. The toolkit is pure stdlib; its [parquet]
    # extra asks for pyarrow>=15,<26, which 24.0.0 meets, so it shares this venv and leaves
    # the validator's numpy<2 (1.26.4) alone: no second venv is needed.
    "${PIP[@]}" install "focus-validator==$VALIDATOR_VERSION" "pyarrow==$PYARROW_VERSION" \
        "focus-data-toolkit[parquet]==$TOOLKIT_VERSION"
    # Fail now rather than in the first test if the resolver moved anything.
    venv_has "$VENV" "${WANT[@]}" || { log "version check failed after install"; "${PIP[@]}" list >&2; exit 1; }
    "$VENV/bin/python" -c 'import numpy, pyarrow, focus_validator; assert int(numpy.__version__.split(".")[0]) < 2' \
        || { log "import check failed"; exit 1; }
fi

log "done in $(( $(date +%s) - start )) s"
echo "VALIDATORS_PY=$VENV/bin/python"
