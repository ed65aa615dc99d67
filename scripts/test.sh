#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run). Runs, stopping at the first failure:
#   format, lint, release build, cargo test (unit + FUSE integration tests, mountd's CSI tests
#   and the Docker plugin tests with a real dockerd, as root), csi-sanity against mountd, then
#   the third-party suites against real mounts: pjdfstest, fsx, stress-ng, fio verify, crash test,
#   each twice: on a volume with a capacity (file I/O served by the daemon, which enforces it)
#   and on one without (file I/O passed through to the kernel).
# Ends with the line "N passed, M failed" (N counts the checks below, not cargo's tests).
#
#   TEST_ONLY="fsx crash"   run only these checks (names as printed)
#   TEST_SKIP_DEPS=1        do not run scripts/deps.sh
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$VF_ROOT"
vf_require_root

if [[ -z ${TEST_SKIP_DEPS:-} ]]; then
	"$VF_ROOT/scripts/deps.sh"
fi

passed=0
results=()

# check NAME COMMAND...: run one check, count it, stop everything at its first failure.
check() {
	local name=$1
	shift
	if [[ -n ${TEST_ONLY:-} && " $TEST_ONLY " != *" $name "* ]]; then
		return 0
	fi
	local start=$SECONDS rc=0
	printf '\n==================== %s: %s\n' "$name" "$*"
	"$@" || rc=$?
	if ((rc != 0)); then
		results+=("$name FAILED (exit $rc, $((SECONDS - start))s)")
		summary
		echo "$passed passed, 1 failed"
		exit 1
	fi
	passed=$((passed + 1))
	results+=("$name ok ($((SECONDS - start))s)")
}

summary() {
	printf '\n==================== summary\n'
	printf '  %s\n' "${results[@]}"
}

check fmt cargo fmt --all --check
check clippy cargo clippy --workspace --all-targets -- -D warnings
check build cargo build --release --workspace
check cargo-test cargo test --release --workspace
check csi-sanity "$VF_ROOT/scripts/csi-sanity.sh"
for suite in pjdfstest fsx stress fio-verify crash; do
	check "$suite" "$VF_ROOT/scripts/$suite.sh"
	check "$suite-passthrough" env VF_CAPACITY= "$VF_ROOT/scripts/$suite.sh"
done

summary
echo "$passed passed, 0 failed"
