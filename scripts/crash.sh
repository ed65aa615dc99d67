#!/usr/bin/env bash
# Crash test: SIGKILL the volfs daemon while a writer appends fsync'd records, then check that
# the pool is consistent and that everything fsync acknowledged survived.
#
# Each round, on the same pool (so damage from one crash would show up in the next rounds):
#   1. start `volfs serve --pool P` in the background (pid recorded) and mount the volume;
#   2. run scripts/crashrec.py write in the mount; it logs every record, file and rename it
#      has made durable (fsync returned) to a log on the native disk, outside the mount;
#   3. after a round-specific delay, kill -9 the daemon while the writer runs;
#   4. lazy-unmount the dead mount, run `volfs fsck --pool P` (must exit 0);
#   5. start the daemon again, mount, and verify everything every round so far acknowledged;
#      fsck again through the daemon, which has recounted every volume's usage.
#
#   CRASH_DELAYS="1.5 4 7"   seconds between the writer's start and the kill, one per round
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vf_require_root
vf_require_volfs
vf_require python3 fusermount3
read -r -a delays <<<"${CRASH_DELAYS:-1.5 4 7}"
crashrec="$VF_ROOT/scripts/crashrec.py"
volume=crash

vf_tmp
mnt="$VF_TMP/m"
acklog() { echo "$VF_TMP/ack-$1.log"; }

# Mount the volume with a freshly started daemon.
start_and_mount() {
	vf_start_daemon
	vf_log "volfs serve running as pid $VF_DAEMON_PID"
	vf_mount "$volume" "$mnt"
}

# Check every round up to $1 against its acknowledgement log.
verify_rounds() {
	local upto=$1 r ok=0
	for ((r = 1; r <= upto; r++)); do
		python3 "$crashrec" verify "$mnt" "$r" "$(acklog "$r")" || ok=1
	done
	return "$ok"
}

vf_start_daemon
vf_log "volfs serve running as pid $VF_DAEMON_PID"
vf_create_volume "$volume" "${VF_CAPACITY-8Gi}"
vf_mount "$volume" "$mnt"

round=0
for delay in "${delays[@]}"; do
	round=$((round + 1))
	vf_log "round $round: writer runs, daemon killed after ${delay}s"
	log=$(acklog "$round")
	: >"$log"
	python3 "$crashrec" write "$mnt" "$round" "$log" 2>"$VF_TMP/writer-$round.err" &
	writer=$!
	sleep "$delay"
	if ! kill -0 "$writer" 2>/dev/null; then
		cat "$VF_TMP/writer-$round.err" >&2
		vf_die "round $round: the writer stopped before the kill"
	fi
	acked_before=$(grep -c '^R ' "$log" || true)
	kill -9 "$VF_DAEMON_PID"
	wait "$VF_DAEMON_PID" 2>/dev/null || true
	vf_log "round $round: killed daemon pid $VF_DAEMON_PID with $acked_before records acknowledged"
	VF_DAEMON_PID=""

	# The writer now gets errors from the dead mount and stops; make sure it does.
	vf_wait_exit "$writer" 10 "round $round: the writer, after the kill"
	wait "$writer" 2>/dev/null || true
	echo "writer: $(tail -n 1 "$VF_TMP/writer-$round.err")"
	acked=$(grep -c '^R ' "$log" || true)
	((acked > 0)) || vf_die "round $round: no record was acknowledged in ${delay}s"
	echo "round $round: $acked records, $(grep -c '^F ' "$log" || true) files, $(grep -c '^S ' "$log" || true) renames acknowledged"

	fusermount3 -u -z "$mnt" || umount -l "$mnt"
	vf_is_mounted "$mnt" && vf_die "round $round: $mnt still mounted after fusermount3 -u -z"

	vf_log "round $round: volfs fsck"
	fsck_ok=1
	"$VOLFS" fsck --pool "$VF_POOL" || fsck_ok=0

	# Verify even when fsck failed: the report then says what the damage costs.
	start_and_mount
	vf_log "round $round: verifying rounds 1..$round"
	verify_ok=1
	verify_rounds "$round" || verify_ok=0
	((fsck_ok)) || vf_die "round $round: volfs fsck --pool $VF_POOL failed after SIGKILL"
	((verify_ok)) || vf_die "round $round: acknowledged data lost or damaged"
	vf_log "round $round: volfs fsck of the recovered pool, served (usage recounted)"
	"$VOLFS" fsck --pool "$VF_POOL" || vf_die "round $round: volfs fsck failed after recovery"
done

vf_umount "$mnt"
vf_log "volfs fsck after a clean unmount"
vf_volfs shutdown
for _ in $(seq 100); do
	kill -0 "$VF_DAEMON_PID" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$VF_DAEMON_PID" 2>/dev/null && vf_die "volfs shutdown: daemon pid $VF_DAEMON_PID still running after 10s"
VF_DAEMON_PID=""
"$VOLFS" fsck --pool "$VF_POOL" || vf_die "volfs fsck failed after a clean shutdown"

echo
echo "crash: ${#delays[@]} rounds of SIGKILL under fsync'd writes; fsck clean, no acknowledged data lost"
