#!/bin/bash
# The VM test tier: runs Go tests inside a stock Debian kernel under qemu,
# which has what the host kernel of the development and CI machines lacks
# (VLAN, sit/6rd, netem, ...). See vm/README.md.
#
#   vm/run.sh [TARGET...] [-- TESTFLAG...]
#
# TARGET is a Go package pattern (./integration, ./...) whose test binary is
# built here with CGO_ENABLED=0 and -tags vmtest, or an already built static
# test binary (a file). Without targets: ./vm/selftest, which proves the
# guest has every feature the tier promises. TESTFLAGs go to every binary,
# in the test binary's own spelling (-test.run=TestX, -test.count=2).
#
# Exits 0 when the guest ran every binary and all passed with no test
# skipped; 1 when the guest reported a failure; 2 when there was no verdict
# (build error, the guest did not boot, panicked or timed out).
#
# Knobs (environment):
#   IFISP_VM_CACHE         cache folder (default ${XDG_CACHE_HOME:-$HOME/.cache}/ifisp-vm)
#   IFISP_VM_BIN           folder of static binaries for the guest's /usr/local/sbin
#                          (default: ./cmd/... built here)
#   IFISP_VM_DEB           ifisp's amd64 Debian package (make deb) to install into the
#                          guest's root (default: none)
#   IFISP_VM_ACCEL         tcg (software emulation, the default), kvm, or auto
#                          (kvm if /dev/kvm is usable, else tcg)
#   IFISP_VM_SMP, IFISP_VM_MEM      guest CPUs (2) and memory in MB (1024)
#   IFISP_VM_TIMEOUT       seconds before the whole run is killed (1800)
#   IFISP_VM_TEST_TIMEOUT  -test.timeout of each binary (10m)
set -euo pipefail

VM_DIR=$(dirname "$(readlink -f "$0")")
ROOT=$(dirname "$VM_DIR")
CACHE=${IFISP_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ifisp-vm}
export IFISP_VM_CACHE=$CACHE
# Software emulation by default: it is what CI gets, and on the development
# machines /dev/kvm exists but is nested and far slower than TCG (a minute for
# the first 3 s of boot).
ACCEL=${IFISP_VM_ACCEL:-tcg}
SMP=${IFISP_VM_SMP:-2}
MEM=${IFISP_VM_MEM:-1024}
TIMEOUT=${IFISP_VM_TIMEOUT:-1800}
TEST_TIMEOUT=${IFISP_VM_TEST_TIMEOUT:-10m}
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go

T0=$(date +%s.%N)
elapsed() { awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%.1f", a-b}'; }
log() { echo "vm/run [$(elapsed)s]: $*" >&2; }
die() { echo "vm/run: error: $*" >&2; exit 2; }

targets=()
flags=()
while [ $# -gt 0 ]; do
	if [ "$1" = -- ]; then
		shift
		flags=("$@")
		break
	fi
	targets+=("$1")
	shift
done
[ ${#targets[@]} -gt 0 ] || targets=(./vm/selftest)
cd "$ROOT"

# ---- 1. host tools ------------------------------------------------------------
# qemu runs the guest; the others are copied into it by base.sh (the same
# Debian 12 packages the host's own tests use); xz-utils unpacks the kernel.
# Nothing else is installed: the kernel and busybox are only downloaded.
missing=()
need() { command -v "$1" >/dev/null || missing+=("$2"); }
need qemu-system-x86_64 qemu-system-x86
need ip iproute2
need tc iproute2
need xtables-nft-multi iptables
need xtables-legacy-multi iptables
need conntrack conntrack
need ifup ifupdown
need ping iputils-ping
need run-parts debianutils
need dash dash
need pppd ppp
need pppoe-server pppoe
need ps procps
need xz xz-utils
need apt-get apt
need dpkg-deb dpkg
if [ ${#missing[@]} -gt 0 ]; then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	[ "$(id -u)" = 0 ] || die "missing host packages; as root: apt-get install --no-install-recommends ${missing[*]}"
	log "apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
		die "apt-get install ${missing[*]} failed"
fi
"$GO" version >/dev/null 2>&1 || die "no Go toolchain (set GO=/path/to/go)"

# ---- 2. kernel + base initramfs (cached) ----------------------------------------
BASE=$("$VM_DIR/base.sh") || die "vm/base.sh failed"
log "base: $BASE (kernel $(cat "$BASE/kver"))"

# ---- 3. payload: /init, test binaries, the project's binaries, the source tree ---
mkdir -p "$CACHE"
W=$(mktemp -d "$CACHE/run.XXXXXX")
# On any exit, stop a guest still running (qemu writes its pid) and clean up.
stop_qemu() { [ ! -s "$W/qemu.pid" ] || kill "$(cat "$W/qemu.pid")" 2>/dev/null || true; }
trap 'stop_qemu; wait; rm -rf "$W" || true' EXIT
# Make ^C and kill go through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM
P=$W/payload
mkdir -p "$P/ifisp-vm/tests" "$P/usr/local/sbin"
install -m 0755 "$VM_DIR/init.sh" "$P/init"

# Test binaries. Not -trimpath: tests that find the repository from their own
# source path (runtime.Caller) then find it in the guest, where the tree is
# copied to the same path; each binary runs in its package folder, as under
# `go test`.
: >"$P/ifisp-vm/plan"
module=$("$GO" list -m)
for t in "${targets[@]}"; do
	if [ -f "$t" ]; then
		name=$(basename "$t")
		install -m 0755 "$t" "$P/ifisp-vm/tests/$name"
		printf '%s\t/\n' "$name" >>"$P/ifisp-vm/plan"
		continue
	fi
	pkgs=$(CGO_ENABLED=0 "$GO" list -tags vmtest \
		-f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{"\t"}}{{.Dir}}{{end}}' "$t") ||
		die "go list $t failed"
	[ -n "$pkgs" ] || die "$t: no packages with tests"
	while IFS=$'\t' read -r ip dir; do
		[ -n "$ip" ] || continue
		rel=${ip#"$module"/}
		name=${rel//\//_}.test
		log "go test -c $ip"
		CGO_ENABLED=0 "$GO" test -c -tags vmtest -o "$P/ifisp-vm/tests/$name" "$ip" ||
			die "building the test binary of $ip failed"
		printf '%s\t%s\n' "$name" "$dir" >>"$P/ifisp-vm/plan"
	done <<<"$pkgs"
done

# The project's binaries, on the guest's PATH.
if [ -n "${IFISP_VM_BIN:-}" ]; then
	[ -d "$IFISP_VM_BIN" ] || die "IFISP_VM_BIN=$IFISP_VM_BIN is not a folder"
	find "$IFISP_VM_BIN" -maxdepth 1 -type f -perm -u+x -exec cp {} "$P/usr/local/sbin/" \;
elif [ -d cmd ]; then
	log "go build ./cmd/..."
	CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w' -o "$P/usr/local/sbin/" ./cmd/... || die "go build ./cmd/... failed"
fi
# The Debian package, installed into the guest's root the way base.sh
# installs the kernel: unpacked with dpkg-deb -x. Its maintainer scripts
# are not run: they only enable, stop or purge ifisp-watch's systemd unit and
# run directory, and the guest has no systemd (make test-deb runs them, in
# a Debian root). /ifisp-vm/package names it, for the tests that need it.
if [ -n "${IFISP_VM_DEB:-}" ]; then
	[ -f "$IFISP_VM_DEB" ] || die "IFISP_VM_DEB=$IFISP_VM_DEB: no such file (make deb builds bin/deb/ifisp_VERSION_amd64.deb)"
	arch=$(dpkg-deb -f "$IFISP_VM_DEB" Architecture) || die "IFISP_VM_DEB=$IFISP_VM_DEB: not a Debian package"
	[ "$arch" = amd64 ] || die "IFISP_VM_DEB=$IFISP_VM_DEB is for $arch; the guest is amd64"
	dpkg-deb -x "$IFISP_VM_DEB" "$P" || die "dpkg-deb -x $IFISP_VM_DEB failed"
	dpkg-deb -f "$IFISP_VM_DEB" Package Version Architecture >"$P/ifisp-vm/package"
	log "package: $(basename "$IFISP_VM_DEB") installed into the guest's root"
fi
# The guest has a C library, but only the one the copied tools need; a binary
# linked against anything else would fail there in confusing ways.
for b in "$P"/usr/local/sbin/* "$P"/usr/sbin/* "$P"/ifisp-vm/tests/*; do
	[ -e "$b" ] || continue
	if ldd "$b" >/dev/null 2>&1; then
		die "$(basename "$b") is dynamically linked; build it with CGO_ENABLED=0"
	fi
done

# The source tree (testdata, hooks/layout, examples) at its host path.
mkdir -p "$P$ROOT"
tar -C "$ROOT" --exclude=./.git --exclude=./bin -cf - . | tar -C "$P$ROOT" -xf -

# Flags, one per line (init.sh reads them back into "$@").
{
	echo "-test.timeout=$TEST_TIMEOUT"
	for f in ${flags[@]+"${flags[@]}"}; do
		case $f in *$'\n'*) die "test flag with a newline: $f" ;; esac
		printf '%s\n' "$f"
	done
} >"$P/ifisp-vm/flags"

# The kernel unpacks concatenated cpio archives in order: the payload lands on
# top of the base.
(cd "$P" && find . | LC_ALL=C sort | "$BASE/busybox" cpio -o -H newc -R 0:0 2>/dev/null) |
	gzip -1 >"$W/payload.cpio.gz"
cat "$BASE/base.cpio.gz" "$W/payload.cpio.gz" >"$W/initrd"
log "payload: $(wc -l <"$P/ifisp-vm/plan") test binaries, $(ls "$P/usr/local/sbin" | wc -l) binaries in /usr/local/sbin," \
	"$(du -h --apparent-size "$W/payload.cpio.gz" | cut -f1) compressed"

# ---- 4. boot ---------------------------------------------------------------------
case $ACCEL in
auto)
	# /dev/kvm may exist and still refuse us (permissions, nested
	# virtualisation off); qemu then falls back to the next -accel.
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=(-accel kvm -accel tcg); else accel=(-accel tcg); fi ;;
kvm | tcg) accel=(-accel "$ACCEL") ;;
*) die "IFISP_VM_ACCEL=$ACCEL: want auto, kvm or tcg" ;;
esac

LOG=$W/console.log
log "boot: ${accel[*]}, $SMP CPU, $MEM MB, timeout ${TIMEOUT}s"
# stdin from /dev/null: qemu would otherwise put a terminal into raw mode and
# take ^C for the guest. isa-debug-exit turns the guest's verdict into qemu's
# exit status; -no-reboot and panic=-1 turn a kernel panic into an exit
# without one. -display none rather than -nographic keeps SeaBIOS off the
# serial line (its escape codes switch off line wrapping in the terminal).
# The pipeline runs in the background and we wait for it, because bash runs
# the INT/TERM traps (which stop qemu) only once a foreground job has ended.
{
	status=0
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
		-machine q35 "${accel[@]}" -cpu max -smp "$SMP" -m "$MEM" \
		-display none -nodefaults -no-user-config -serial stdio -no-reboot \
		-device isa-debug-exit,iobase=0xf4,iosize=0x01 -pidfile "$W/qemu.pid" \
		-kernel "$BASE/kernel" -initrd "$W/initrd" \
		-append "console=ttyS0 quiet panic=-1 mitigations=off" \
		</dev/null 2>&1 || status=$?
	echo "$status" >"$W/qemu.rc"
} | tr -d '\r' | tee "$LOG" &
wait $! || true
rm -f "$W/qemu.pid" # qemu has ended: its pid may be anyone's now
rc=$(cat "$W/qemu.rc" 2>/dev/null || echo none)
cp "$LOG" "$CACHE/last-console.log"

verdict=$(grep -a '^IFISP-VM RESULT: ' "$LOG" | tail -1 || true)
case "$rc:$verdict" in
"1:IFISP-VM RESULT: PASS")
	log "PASS (console: $CACHE/last-console.log)"
	exit 0 ;;
"3:IFISP-VM RESULT: FAIL"*)
	log "${verdict#IFISP-VM RESULT: } (console: $CACHE/last-console.log)"
	exit 1 ;;
124:* | 137:*)
	log "FAIL: the guest did not finish within ${TIMEOUT}s (console: $CACHE/last-console.log)" ;;
*)
	log "FAIL: no verdict from the guest (qemu status $rc${verdict:+, last line: $verdict}): it did not boot, panicked or /init died (console: $CACHE/last-console.log)" ;;
esac
exit 2
