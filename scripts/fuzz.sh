#!/usr/bin/env bash
# A longer run of the parsers' fuzz tests (tests/fuzz.rs): FUZZ_CASES cases each (default 100000).
# Shrunk failures are written to tests/fuzz.proptest-regressions; commit them.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$VF_ROOT"
FUZZ_CASES=${FUZZ_CASES:-100000} cargo test --release --test fuzz -- --test-threads 2
