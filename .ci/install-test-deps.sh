#!/usr/bin/env bash
# Installs everything tally's tests talk to, on a fresh machine (idempotent):
#   - the FOCUS validators (focus-validator 2.2.1, focus-data-toolkit 0.14.1) into a Python 3.12 venv;
#   - s3s-fs 0.14.1, a real S3-compatible server the object-storage tests start on 127.0.0.1
#     (chosen over garage, which does not enforce If-None-Match, and moto, an in-memory emulator
#     that does not check signatures; see ../shared/RUST-NOTES.md). s3s-fs 0.17 needs rustc 1.96.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-validators.sh

S3S="${TALLY_S3S_FS:-$HOME/.cargo/bin/s3s-fs}"
if [ -x "$S3S" ]; then
    echo "[install-test-deps] s3s-fs present: $S3S" >&2
else
    start=$(date +%s)
    cargo install s3s-fs --version 0.14.1 --features binary --locked
    echo "[install-test-deps] s3s-fs installed in $(( $(date +%s) - start )) s" >&2
fi
