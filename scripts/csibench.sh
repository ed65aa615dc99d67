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
results=()
for concurrency in 1 50; do
	dir="$VF_TMP/c$concurrency"
	mkdir -p "$dir"
	results+=("$("$bench" "$VF_CSI_SOCKET" "$dir" "$concurrency" "$count")")
done
python3 - "${results[@]}" <<'PY'
import json, sys
rows = [json.loads(r) for r in sys.argv[1:]]
keys = ["up", "down", "create", "stage", "publish", "unpublish", "unstage", "delete"]
print("%-34s" % "p50 / p95 ms" + "".join("%18s" % ("%d at once" % r["concurrency"]) for r in rows))
for k in keys:
    label = {"up": "up: create+stage+publish, usable", "down": "down: unpublish+unstage+delete"}.get(k, "  " + k)
    print("%-34s" % label + "".join("%18s" % ("%.1f / %.1f" % (r[k]["p50_ms"], r[k]["p95_ms"])) for r in rows))
PY
