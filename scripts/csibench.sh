#!/usr/bin/env bash
# Times what a pod start and a pod stop cost through mountd's CSI services on real FUSE mounts:
# CreateVolume + NodeStage + NodePublish until the mount answers ("up"), and NodeUnpublish +
# NodeUnstage + DeleteVolume ("down"), one at a time and 50 at once; prints p50/p95 in ms.
#
#   scripts/csibench.sh [--count N]   (default 50 pods per concurrency level)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

count=50
while (($#)); do
	case $1 in
	--count)
		vf_require_count --count "${2:-}"
		count=$2
		shift 2
		;;
	*) vf_die "unknown option $1 (scripts/csibench.sh [--count N])" ;;
	esac
done
vf_require_root
vf_require_volfs
cargo build --release --quiet -p mountd --example csibench
bench=$VF_ROOT/target/release/examples/csibench
vf_start_mountd
printf '%-12s %6s %12s %12s %14s %14s\n' concurrency pods "up p50 ms" "up p95 ms" "down p50 ms" "down p95 ms"
for concurrency in 1 50; do
	dir="$VF_TMP/c$concurrency"
	mkdir -p "$dir"
	result=$("$bench" "$VF_CSI_SOCKET" "$dir" "$concurrency" "$count")
	python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-12d %6d %12.1f %12.1f %14.1f %14.1f" % (r["concurrency"], r["count"], r["up_p50_ms"], r["up_p95_ms"], r["down_p50_ms"], r["down_p95_ms"]))' "$result"
done
