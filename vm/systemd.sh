#!/bin/bash
# The VM tier's systemd scenario: ifisp-watch under its real unit, booted.
# See vm/README.md ("The systemd scenario").
#
#   IFISP_VM_DEB=bin/deb/ifisp_VERSION_amd64.deb vm/systemd.sh [-- TESTFLAG...]
#
# Boots a Debian 12 root (mmdebstrap, cached) with systemd as PID 1 and
# the package installed into it with dpkg -i (its maintainer scripts run:
# the unit is enabled as the package enables it), from an ext4 disk
# (virtio), on vm/base.sh's kernel. In the guest, ifisp-vmlab.service
# makes the ISPs, the internet host and the LAN host (network namespaces
# and veth cables) before networking.service, which brings up the `auto`
# WAN while udev's hotplug event starts ifup@wanb.service for the
# `allow-hotplug` one; ifisp-vmtest.service then runs vm/systemd's test
# binary and ends qemu with the verdict. TESTFLAGs go to that binary.
#
# Exits 0 when the guest passed (a known gap is named in the last line),
# 1 when it failed, 2 when there was no verdict.
#
# Knobs (environment), as vm/run.sh's where they share a name:
#   IFISP_VM_DEB           ifisp's amd64 package (required; make deb builds it)
#   IFISP_VM_CACHE         cache folder (default ${XDG_CACHE_HOME:-$HOME/.cache}/ifisp-vm)
#   IFISP_VM_ACCEL         tcg (software emulation, the default), kvm, or auto
#                          (kvm if /dev/kvm is usable, else tcg)
#   IFISP_VM_SMP, IFISP_VM_MEM      guest CPUs (2) and memory in MB (1024)
#   IFISP_VM_TIMEOUT       seconds before the run is killed (600)
#   IFISP_VM_TEST_TIMEOUT  -test.timeout of the test binary (8m)
#   IFISP_VM_IPTABLES      nft (Debian's default) or legacy: the guest's iptables
#                          alternatives, set with update-alternatives
set -euo pipefail

VM_DIR=$(dirname "$(readlink -f "$0")")
ROOT=$(dirname "$VM_DIR")
CACHE=${IFISP_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ifisp-vm}
export IFISP_VM_CACHE=$CACHE
# Software emulation by default, as vm/run.sh: this machine's /dev/kvm is
# nested and far slower (a kernel that reaches its panic in 2 s under
# TCG printed 30 lines in 90 s under KVM).
ACCEL=${IFISP_VM_ACCEL:-tcg}
SMP=${IFISP_VM_SMP:-2}
MEM=${IFISP_VM_MEM:-1024}
TIMEOUT=${IFISP_VM_TIMEOUT:-600}
TEST_TIMEOUT=${IFISP_VM_TEST_TIMEOUT:-8m}
IPTABLES=${IFISP_VM_IPTABLES:-nft}
case $IPTABLES in nft | legacy) ;; *) echo "vm/systemd: error: IFISP_VM_IPTABLES=$IPTABLES: want nft or legacy" >&2; exit 2 ;; esac
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go
SUITE=bookworm
# The guest root's packages beyond minbase: systemd and udev (PID 1 and
# hotplug), what the package depends on and recommends, kmod for module
# autoload.
PACKAGES=systemd,udev,ifupdown,iproute2,iptables,conntrack,procps,kmod,iputils-ping

T0=$(date +%s.%N)
elapsed() { awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%.1f", a-b}'; }
log() { echo "vm/systemd [$(elapsed)s]: $*" >&2; }
die() { echo "vm/systemd: error: $*" >&2; exit 2; }

flags=()
if [ $# -gt 0 ]; then
	[ "$1" = -- ] || die "usage: vm/systemd.sh [-- TESTFLAG...]"
	shift
	flags=("$@")
fi
cd "$ROOT"
[ "$(id -u)" = 0 ] || die "needs root: it unpacks a Debian root and runs dpkg in it (chroot)"
DEB=${IFISP_VM_DEB:-}
[ -n "$DEB" ] || die "IFISP_VM_DEB is not set (make test-vm-systemd builds the package and sets it)"
[ -f "$DEB" ] || die "IFISP_VM_DEB=$DEB: no such file (make deb builds bin/deb/ifisp_VERSION_amd64.deb)"
[ "$(dpkg-deb -f "$DEB" Architecture)" = amd64 ] || die "IFISP_VM_DEB=$DEB is not an amd64 package"

# ---- 1. host tools --------------------------------------------------------------
missing=()
need() { command -v "$1" >/dev/null || missing+=("$2"); }
need qemu-system-x86_64 qemu-system-x86
need mmdebstrap mmdebstrap
need mkfs.ext4 e2fsprogs
need depmod kmod
need unshare util-linux
need xz xz-utils
need dpkg-deb dpkg
if [ ${#missing[@]} -gt 0 ]; then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	log "apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
		die "apt-get install ${missing[*]} failed"
fi
"$GO" version >/dev/null 2>&1 || die "no Go toolchain (set GO=/path/to/go)"

# ---- 2. kernel (vm/base.sh's), root and initramfs (cached) ----------------------
BASE=$("$VM_DIR/base.sh") || die "vm/base.sh failed"
KVER=$(cat "$BASE/kver")
KDEB=$(ls "$CACHE/debs/linux-image-${KVER}_"*.deb 2>/dev/null | tail -1) || true
[ -n "$KDEB" ] || die "vm/base.sh left no linux-image-$KVER .deb in $CACHE/debs"
BBDEB=$(ls "$CACHE/debs/busybox-static_"*.deb | tail -1)

# The cache key: this script's recipe (everything above the per-run part),
# the kernel and busybox packages. Debian's mirror moves on, so a root
# older than a week is made again.
KEY=$( {
	sed -n '1,/^# ---- 3\./p' "$0"
	basename "$KDEB"; basename "$BBDEB"
} | sha256sum | cut -c1-16)
SD=$CACHE/sdroot-$KEY
if [ -f "$SD/sdroot.done" ] && [ -z "$(find "$SD/sdroot.done" -mtime +7)" ]; then
	log "root: $SD (cached)"
else
	log "building $SD: mmdebstrap $SUITE minbase + $PACKAGES, kernel $KVER's modules, the boot initramfs"
	mkdir -p "$CACHE"
	B=$(mktemp -d "$CACHE/sdbuild.XXXXXX")
	trap 'rm -rf --one-file-system "$B"' EXIT
	mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
		"$SUITE" "$B/root" >&2 || die "mmdebstrap failed"
	dpkg-deb -x "$KDEB" "$B/kroot"
	KD=$B/kroot/lib/modules/$KVER
	depmod -b "$B/kroot" "$KVER"
	# The kernel's modules a router and this guest can reach (networking,
	# netfilter, qdiscs, virtio, ext4, crypto, libraries) with their
	# dependency closure; not the NIC, sound, GPU, ... drivers.
	grep -E '^kernel/(net|lib|crypto|arch|fs/(ext4|jbd2|mbcache|autofs))/|^kernel/drivers/(virtio|block/virtio_blk|char/hw_random|net/(veth|dummy|ifb|macvlan|ipvlan/|vxlan/|tun|vrf|macsec|wireguard/|bonding/|team/))' "$KD/modules.dep" |
		tr ' :' '\n\n' | grep . | sort -u >"$B/modlist"
	while read -r m; do
		mkdir -p "$B/root/usr/lib/modules/$KVER/$(dirname "$m")"
		cp "$KD/$m" "$B/root/usr/lib/modules/$KVER/$m"
	done <"$B/modlist"
	cp "$KD"/modules.builtin "$KD"/modules.builtin.modinfo "$KD"/modules.order "$B/root/usr/lib/modules/$KVER/"
	depmod -b "$B/root" "$KVER"
	# dpkg -i, per run, runs maintainer scripts in the root (chroot).
	tar -C "$B/root" --numeric-owner -cf "$B/root.tar" .
	# The boot initramfs: busybox, virtio and ext4 modules, an /init that
	# mounts /dev/vda and hands over to systemd.
	I=$B/initrd
	mkdir -p "$I"/{bin,dev,proc,sys,newroot,lib/modules/"$KVER"}
	dpkg-deb -x "$BBDEB" "$B/bb"
	cp "$B/bb/bin/busybox" "$I/bin/busybox"
	for a in sh mount umount mkdir sleep cat modprobe switch_root dd printf echo; do ln -s busybox "$I/bin/$a"; done
	{
		for m in virtio_pci virtio_blk crc32c_generic ext4; do grep -E "(^|/)$m\.ko:" "$KD/modules.dep"; done
	} | tr ' :' '\n\n' | grep . | sort -u | while read -r m; do
		mkdir -p "$I/lib/modules/$KVER/$(dirname "$m")"
		cp "$KD/$m" "$I/lib/modules/$KVER/$m"
	done
	cp "$KD"/modules.builtin "$KD"/modules.order "$I/lib/modules/$KVER/"
	"$B/bb/bin/busybox" depmod -b "$I" "$KVER"
	cat >"$I/init" <<'EOF'
#!/bin/sh
# The systemd scenario's initramfs: mount the root named by root= (ext4
# on virtio), then exec init= (systemd) on it as PID 1.
fail() {
	echo "IFISP-VM RESULT: FAIL (initramfs: $*)"
	printf '\001' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
	exit 1
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
root=/dev/vda init=/sbin/init
for a in $(cat /proc/cmdline); do
	case $a in root=*) root=${a#root=} ;; init=*) init=${a#init=} ;; esac
done
for m in virtio_pci virtio_blk crc32c_generic ext4; do modprobe $m || fail "modprobe $m"; done
n=0
while [ ! -b "$root" ]; do
	n=$((n + 1))
	[ $n -le 100 ] || fail "no $root after 10s"
	sleep 0.1
done
mount -t ext4 -o rw,noatime "$root" /newroot || fail "mount $root"
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot "$init"
EOF
	chmod 0755 "$I/init"
	(cd "$I" && find . | LC_ALL=C sort | "$B/bb/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -6 >"$B/initrd.gz"
	mkdir "$B/out"
	nmods=$(wc -l <"$B/modlist")
	mv "$B/root.tar" "$B/initrd.gz" "$B/out/"
	echo "$KVER" >"$B/out/kver"
	touch "$B/out/sdroot.done"
	# Keep one root: older ones are dead weight. Only what this script
	# made, finished (its marker inside): the cache folder is shared, with
	# vm/run.sh and with other checkouts' runs, some of them under way.
	for old in "$CACHE"/sdroot-*; do
		[ -f "$old/sdroot.done" ] && [ "$old" != "$SD" ] && rm -rf "$old"
	done
	rm -rf "$SD"
	mv "$B/out" "$SD"
	rm -rf "$B"
	trap - EXIT
	log "root ready: $(du -h --apparent-size "$SD/root.tar" | cut -f1) root.tar, $nmods modules"
fi

# ---- 3. this run: the package installed, the lab and the tests, the disk ----------
W=$(mktemp -d "$CACHE/sdrun.XXXXXX")
stop_qemu() { [ ! -s "$W/qemu.pid" ] || kill "$(cat "$W/qemu.pid")" 2>/dev/null || true; }
trap 'stop_qemu; wait; rm -rf --one-file-system "$W" || true' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
R=$W/root
mkdir "$R"
tar -C "$R" --numeric-owner -xpf "$SD/root.tar"

# The package, as an operator installs it: dpkg -i, maintainer scripts
# and all (the postinst enables the unit; nothing is running, so it is
# not started). In a network namespace of its own, so nothing it runs
# could reach the host's network.
cp "$DEB" "$R/tmp/ifisp.deb"
unshare --net --fork chroot "$R" dpkg -i /tmp/ifisp.deb >"$W/dpkg.log" 2>&1 ||
	{ cat "$W/dpkg.log" >&2; die "dpkg -i $(basename "$DEB") in the guest's root failed"; }
rm "$R/tmp/ifisp.deb"
if [ "$IPTABLES" = legacy ]; then
	for t in iptables ip6tables; do
		chroot "$R" update-alternatives --quiet --set $t /usr/sbin/$t-legacy || die "update-alternatives --set $t failed"
	done
fi
log "package: $(dpkg-deb --show --showformat='${Package} ${Version}' "$DEB") installed with dpkg -i; iptables: $IPTABLES"

# The guest's configuration, the lab's units and the runner.
cp -a "$VM_DIR/systemd/guest/." "$R/"
echo 8d0a6d1f3c9e4b2aa5f1c0e7b3d9a4c2 >"$R/etc/machine-id" # not a first boot: no systemd-firstboot prompt
systemctl --root="$R" enable ifisp-vmlab.service ifisp-vmtest.service >/dev/null 2>&1
# Nothing waits on the console for a login; no timers fire in a short boot.
systemctl --root="$R" mask getty.target serial-getty@ttyS0.service systemd-firstboot.service \
	apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer >/dev/null 2>&1

# The test binary.
mkdir -p "$R/ifisp-vm"
log "go test -c ./vm/systemd"
CGO_ENABLED=0 "$GO" test -c -tags vmtest -o "$R/ifisp-vm/systemd.test" ./vm/systemd || die "building vm/systemd's test binary failed"
{
	echo "-test.timeout=$TEST_TIMEOUT"
	for f in ${flags[@]+"${flags[@]}"}; do printf '%s\n' "$f"; done
} >"$R/ifisp-vm/flags"

# The disk: ext4 made from the tree (mkfs.ext4 -d: no loop mount), with
# room for the journal and the run's files.
size=$(($(du -sm "$R" | cut -f1) + 256))
mkfs.ext4 -q -F -L ifisp-vm -d "$R" "$W/disk.img" "${size}M" || die "mkfs.ext4 -d failed"
rm -rf "$R"
log "disk: ${size} MB ext4"

# ---- 4. boot ------------------------------------------------------------------------
# KVM takes -cpu host: with -cpu max, qemu asks this machine's (nested)
# KVM for MSRs it refuses and aborts.
case $ACCEL in
auto)
	ACCEL=tcg
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then ACCEL=kvm; fi ;;
kvm | tcg) ;;
*) die "IFISP_VM_ACCEL=$ACCEL: want auto, kvm or tcg" ;;
esac
accel=(-accel tcg -cpu max)
[ "$ACCEL" = tcg ] || accel=(-accel kvm -cpu host)
LOG=$W/console.log
log "boot: ${accel[*]}, $SMP CPU, $MEM MB, timeout ${TIMEOUT}s"
# No -nic: the guest has no network to the host at all. Everything else
# as vm/run.sh boots (isa-debug-exit for the verdict, stdin /dev/null).
{
	status=0
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
		-machine q35 "${accel[@]}" -smp "$SMP" -m "$MEM" \
		-display none -nodefaults -no-user-config -serial stdio -no-reboot \
		-device isa-debug-exit,iobase=0xf4,iosize=0x01 -pidfile "$W/qemu.pid" \
		-drive file="$W/disk.img",format=raw,if=virtio,cache=unsafe \
		-kernel "$BASE/kernel" -initrd "$SD/initrd.gz" \
		-append "console=ttyS0 root=/dev/vda init=/lib/systemd/systemd quiet panic=-1 mitigations=off" \
		</dev/null 2>&1 || status=$?
	echo "$status" >"$W/qemu.rc"
} | tr -d '\r' | tee "$LOG" &
wait $! || true
rm -f "$W/qemu.pid"
rc=$(cat "$W/qemu.rc" 2>/dev/null || echo none)
cp "$LOG" "$CACHE/last-systemd-$IPTABLES-console.log"

verdict=$(grep -a '^IFISP-VM RESULT: ' "$LOG" | tail -1 || true)
case "$rc:$verdict" in
"1:IFISP-VM RESULT: PASS"*)
	log "${verdict#IFISP-VM RESULT: } in $(elapsed)s (console: $CACHE/last-systemd-$IPTABLES-console.log)"
	exit 0 ;;
"3:IFISP-VM RESULT: FAIL"*)
	log "${verdict#IFISP-VM RESULT: } (console: $CACHE/last-systemd-$IPTABLES-console.log)"
	exit 1 ;;
124:* | 137:*)
	log "FAIL: the guest did not finish within ${TIMEOUT}s (console: $CACHE/last-systemd-$IPTABLES-console.log)" ;;
*)
	log "FAIL: no verdict from the guest (qemu status $rc${verdict:+, last line: $verdict}) (console: $CACHE/last-systemd-$IPTABLES-console.log)" ;;
esac
exit 2
