#!/usr/bin/env bash
# Application benchmarks: what everyday tools take on a native directory under /var/tmp, on a
# volfs volume with a capacity (the daemon serves file I/O, to hold writes to the capacity)
# and on a volfs volume without one (file I/O passed through to the kernel), in the same run.
# The pool lives on the same disk as the native directory.
#   tree: a real source tree, Linux from Debian's linux-source package (without Documentation/,
#   drivers/ and the arch/ directories other than x86: about 26,000 files, 350 MB), as a git
#   repository with two commits, the oldest and the newest version apt lists (a stable
#   update: about 2,000 files differ). Built once and kept as a tar file in --cache. On each
#   side: tar -x of it; the first git status (it reads every file, since the index's stat data
#   came from another file system); git status cold and warm (right after); git checkout of
#   the newer commit; cp -a of the tree; rm -rf of the copy.
#   sqlite: sqlite3 inserts into a table with an index, each row its own transaction (default
#   journal mode and synchronous setting: every commit fsyncs), then in transactions of 1000.
#   build: make -j2 of a generated C project (--sources files, -O2, dependency files).
# Runs rotate the order of the sides (native, cap, nocap; then cap, nocap, native; ...). The
# page cache is written back and dropped (sync; drop_caches) before every timed step but the
# warm git status. On the volfs sides each step also reports the FUSE requests the daemon
# served for it, by operation (`volfs stats`): a count that does not depend on the machine's
# noise. Prints a table: the median of each side, cap/native and nocap/native (for times,
# native / side, so below 1 is slower than native on every row).
#
# Usage: scripts/appbench.sh [--json FILE] [--repeat N] [--only "tree sqlite build"] [--quick]
#                            [--rows N] [--bulk-rows N] [--sources N] [--capacity SIZE]
#                            [--native DIR] [--cache DIR] [--rebuild-cache]
#   --json          also write the medians and every run to FILE
#   --repeat        runs per test and side (default 3)
#   --only          groups to run: tree, sqlite, build (default: all three)
#   --quick         a smoke run: --repeat 1 --rows 50 --bulk-rows 20000 --sources 40
#                   (options after it override these)
#   --rows          rows inserted one per transaction (default 250)
#   --bulk-rows     rows inserted in transactions of 1000 (default 100000)
#   --sources       C files in the build (default 200)
#   --capacity      capacity of the volume that has one (default 8Gi)
#   --native        directory to create the native test dir in (default /var/tmp)
#   --cache         where the source tree's tar file is kept (default
#                   /var/tmp/volfs-appbench-cache, or APPBENCH_CACHE); building it downloads
#                   two versions of linux-source with apt-get download (2 x 150 MB)
#   --rebuild-cache build the tar file again, from the versions apt lists now (also when
#                   --only leaves the tree out)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

json_out=""
repeat=3
only="tree sqlite build"
rows=250
bulk_rows=100000
sources=200
capacity=8Gi
native_parent=/var/tmp
cache=${APPBENCH_CACHE:-/var/tmp/volfs-appbench-cache}
rebuild_cache=""
while (($#)); do
	case $1 in
	--json) json_out=$(realpath -m "${2:?}") && shift ;;
	--repeat) repeat=${2:?} && shift ;;
	--only) only=${2:?} && shift ;;
	--quick) repeat=1 rows=50 bulk_rows=20000 sources=40 ;;
	--rows) rows=${2:?} && shift ;;
	--bulk-rows) bulk_rows=${2:?} && shift ;;
	--sources) sources=${2:?} && shift ;;
	--capacity) capacity=${2:?} && shift ;;
	--native) native_parent=${2:?} && shift ;;
	--cache) cache=$(realpath -m "${2:?}") && shift ;;
	--rebuild-cache) rebuild_cache=1 ;;
	-h | --help) vf_usage ;;
	*) vf_usage ;;
	esac
	shift
done
vf_require_count --repeat "$repeat"
vf_require_count --rows "$rows"
vf_require_count --bulk-rows "$bulk_rows"
vf_require_count --sources "$sources"
for group in $only; do
	[[ " tree sqlite build " == *" $group "* ]] || vf_die "--only: unknown group '$group' (known: tree sqlite build)"
done
[[ -z ${VOLFS_TEST_DIR:-} ]] || vf_die "VOLFS_TEST_DIR is set: this script measures the native side itself"
selected() { [[ " $only " == *" $1 "* ]]; }

vf_require_root
vf_require_volfs
vf_require python3 fusermount3 tar git
selected tree && vf_require apt-get apt-cache dpkg-deb xz
selected sqlite && vf_require sqlite3
selected build && vf_require make cc
tool="$VF_ROOT/scripts/benchtool.py"
sides=(native cap nocap)

# Write back every dirty page and empty the page cache, dentry and inode caches.
drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# ---- The source tree, built once: $cache/tree.tar holds linux/ (a git repository, checked
# out at tag "base"; tag "other" is the newer version) and $cache/tree.info says what it is.
tarball="$cache/tree.tar"

# linux_source_tree PKG VERSION DIR: the tree of one linux-source .deb, trimmed, in DIR.
linux_source_tree() {
	local pkg=$1 version=$2 dir=$3 debs deb
	(cd "$(dirname "$dir")" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$version" >&2)
	debs=("$(dirname "$dir")/${pkg}_"*.deb)
	deb=${debs[0]}
	[[ ${#debs[@]} -eq 1 && -f $deb ]] || vf_die "apt-get download $pkg=$version: expected one .deb, found ${debs[*]}"
	mkdir -p "$dir"
	dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$pkg.tar.xz" | xz -dc | tar -x -C "$dir" --strip-components=1
	rm -f "$deb"
	# drivers/ alone is over 30,000 files and 1 GB; the other architectures 15,000 files;
	# Documentation/ 9,000 files.
	rm -rf "${dir:?}/drivers" "$dir/Documentation"
	find "$dir/arch" -mindepth 1 -maxdepth 1 ! -name x86 -exec rm -rf {} +
	# Debian's packaging appends "ignore everything at the top level" to .gitignore; without
	# that, git status walks the tree for untracked files as in the kernel's own repository.
	sed -i '/^# Debian packaging: ignore everything at the top level/,$d' "$dir/.gitignore"
}

build_tree_cache() {
	local pkg versions=() base other work repo git_env
	pkg=$(apt-cache pkgnames linux-source- | grep -E '^linux-source-[0-9]+\.[0-9]+$' | sort -V | tail -n 1 || true)
	if [[ -n $pkg ]]; then
		mapfile -t versions < <(apt-cache madison "$pkg" | awk '{ print $3 }' | sort -uV)
	fi
	if ((${#versions[@]} < 2)); then
		vf_log "apt-get update (looking for two versions of linux-source)"
		apt-get update -q >&2
		pkg=$(apt-cache pkgnames linux-source- | grep -E '^linux-source-[0-9]+\.[0-9]+$' | sort -V | tail -n 1 || true)
		[[ -n $pkg ]] || vf_die "apt knows no linux-source-X.Y package"
		mapfile -t versions < <(apt-cache madison "$pkg" | awk '{ print $3 }' | sort -uV)
		((${#versions[@]} >= 2)) || vf_die "apt lists only ${versions[*]:-no version} of $pkg; two are needed"
	fi
	base=${versions[0]}
	other=${versions[-1]}
	vf_log "building the source tree in $cache: $pkg $base (tag base) and $other (tag other)"
	mkdir -p "$cache"
	work=$(mktemp -d "$cache/build.XXXX")
	VF_CLEANUP_HOOKS+=("rm -rf '$work'")
	repo="$work/linux"
	linux_source_tree "$pkg" "$base" "$repo"
	linux_source_tree "$pkg" "$other" "$work/other"
	# Fixed names and dates: the same versions give the same commits.
	git_env=(env GIT_AUTHOR_NAME=appbench GIT_AUTHOR_EMAIL=appbench@localhost GIT_AUTHOR_DATE=2000-01-01T00:00:00Z
		GIT_COMMITTER_NAME=appbench GIT_COMMITTER_EMAIL=appbench@localhost GIT_COMMITTER_DATE=2000-01-01T00:00:00Z)
	git -C "$repo" init -q -b main
	git -C "$repo" add -A -f
	"${git_env[@]}" git -C "$repo" -c gc.auto=0 commit -q -m "$pkg $base"
	git -C "$repo" tag base
	git --git-dir="$repo/.git" --work-tree="$work/other" add -A -f
	"${git_env[@]}" git -C "$repo" -c gc.auto=0 commit -q -m "$pkg $other"
	git -C "$repo" tag other
	git -C "$repo" reset -q --hard base
	git -C "$repo" gc -q --prune=now
	rm -rf "$work/other"
	tar -cf "$work/tree.tar" -C "$work" linux
	{
		echo "pkg=$pkg"
		echo "base=$base"
		echo "other=$other"
		echo "files=$(find "$repo" -path "$repo/.git" -prune -o ! -type d -print | wc -l)"
		echo "size_mb=$(du -sm --exclude=.git "$repo" | cut -f1)"
		echo "git_mb=$(du -sm "$repo/.git" | cut -f1)"
		echo "changed=$(git -C "$repo" diff --name-only base other | wc -l)"
	} >"$work/tree.info"
	mv "$work/tree.info" "$cache/tree.info"
	mv "$work/tree.tar" "$tarball"
	rm -rf "$work"
	local files
	files=$(sed -n 's/^files=//p' "$cache/tree.info")
	((files >= 20000)) || vf_warn "the source tree has only $files files"
}

vf_tmp
if [[ -n $rebuild_cache ]] || { selected tree && [[ ! -s $tarball || ! -s $cache/tree.info ]]; }; then
	build_tree_cache
fi
if selected tree; then
	tree_info=$(paste -sd ' ' "$cache/tree.info")
	vf_log "source tree: $tarball ($tree_info)"
fi

# ---- The three sides: a native directory, and two volumes of one pool on the same disk.
native=$(mktemp -d "$native_parent/vfappbench.XXXX")
# The placement hint volfs gives its data directory (ext4's "top directory" flag).
chattr +T "$native" 2>/dev/null || true
# shellcheck disable=SC2016 # expanded when the hook runs
VF_CLEANUP_HOOKS+=('rm -rf "$native"')
if [[ $(stat -c %d "$native") != $(stat -c %d "$VF_POOL") ]]; then
	vf_warn "native dir $native and pool $VF_POOL are on different file systems"
fi
vf_create_volume cap "$capacity" >/dev/null
vf_create_volume nocap >/dev/null
vf_mount cap "$VF_TMP/cap"
vf_mount nocap "$VF_TMP/nocap"
declare -A dirs=([native]="$native" [cap]="$VF_TMP/cap" [nocap]="$VF_TMP/nocap")
results="$VF_TMP/results"
for side in "${sides[@]}"; do
	mkdir -p "$results/$side"
done
failed=()

# timed SIDE RUN TEST [--rate N UNIT] -- CMD...: one timed step (benchtool.py timed), with the
# FUSE requests of the volume on a volfs side.
timed() {
	local side=$1 run=$2 test=$3 counted=()
	shift 3
	[[ $side == native ]] || counted=(BENCH_VOLFS="$VOLFS --pool $VF_POOL" BENCH_VOLUME="$side")
	printf '  %-18s run %d/%d  %-6s' "$test" "$run" "$repeat" "$side"
	env "${counted[@]}" python3 "$tool" timed "$test" "$results/$side" "$run" "$@" || {
		failed+=("$test on $side (run $run)")
		return 1
	}
}

# The tree steps in order on one side; a failed step ends that side's run.
tree_run() {
	local side=$1 run=$2 dir=${dirs[$1]}
	local repo=$dir/linux
	drop_caches
	timed "$side" "$run" tree-untar -- tar -xf "$tarball" -C "$dir" || return 0
	drop_caches
	timed "$side" "$run" tree-status-first -- git -C "$repo" status --porcelain || return 0
	drop_caches
	timed "$side" "$run" tree-status-cold -- git -C "$repo" status --porcelain || return 0
	timed "$side" "$run" tree-status-warm -- git -C "$repo" status --porcelain || return 0
	drop_caches
	timed "$side" "$run" tree-checkout -- git -C "$repo" checkout -q other || return 0
	drop_caches
	timed "$side" "$run" tree-cp -- cp -a "$repo" "$dir/copy" || return 0
	drop_caches
	timed "$side" "$run" tree-rm -- rm -rf "$dir/copy" || return 0
}

schema="CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT NOT NULL); CREATE INDEX t_k ON t(k);"
sqlite_run() {
	local side=$1 run=$2 db=${dirs[$1]}/bench.db
	sqlite3 "$db" "$schema"
	drop_caches
	timed "$side" "$run" sqlite-tx1 --rate "$rows" rows/s -- sqlite3 "$db" ".read $VF_TMP/tx1.sql" || true
	rm -f "$db"
	sqlite3 "$db" "$schema"
	drop_caches
	timed "$side" "$run" sqlite-tx1000 --rate "$bulk_rows" rows/s -- sqlite3 "$db" ".read $VF_TMP/tx1000.sql" || true
	rm -f "$db"
}

build_run() {
	local side=$1 run=$2 dir=${dirs[$1]}/build
	python3 "$tool" cproject "$dir" "$sources"
	drop_caches
	timed "$side" "$run" build-make -- make -C "$dir" -j2 -s || true
}

if selected sqlite; then
	python3 "$tool" sql "$VF_TMP/tx1.sql" "$rows" 1
	python3 "$tool" sql "$VF_TMP/tx1000.sql" "$bulk_rows" 1000
fi
vf_log "$repeat runs per side; native: $native, cap: ${dirs[cap]} (capacity $capacity), nocap: ${dirs[nocap]}"
for ((run = 1; run <= repeat; run++)); do
	# Rotate the sides: every side goes first, second and third as often as the runs allow.
	order=()
	for ((i = 0; i < ${#sides[@]}; i++)); do
		order+=("${sides[(i + run - 1) % ${#sides[@]}]}")
	done
	for group in tree sqlite build; do
		selected "$group" || continue
		for side in "${order[@]}"; do
			"${group}_run" "$side" "$run"
			# Leave every side empty for the next step (untimed).
			find "${dirs[$side]}" -mindepth 1 -delete
		done
	done
done

echo
echo "FUSE requests by operation over the whole run, with their service times (volfs stats):"
vf_volfs stats
echo
side_list=$(
	IFS=,
	echo "${sides[*]}"
)
vf_report "$tool" "$results" "$json_out" --sides "$side_list" \
	--meta "repeat=$repeat" --meta "capacity=$capacity" --meta "only=$only" \
	--meta "tree=${tree_info:-}" --meta "rows_tx1=$rows" --meta "rows_tx1000=$bulk_rows" \
	--meta "build_sources=$sources" --meta "native_dir=$native" \
	--meta "order=sides rotate each run: native, cap, nocap; cap, nocap, native; nocap, native, cap"
if ((${#failed[@]})); then
	vf_die "failed: ${failed[*]}"
fi
