#!/bin/bash
# Builds (once, then from cache) what every VM test run shares: a stock Debian
# kernel and the base initramfs (busybox, the host's iproute2/iptables/
# conntrack/ifupdown/ping/dash/pppd/pppoe-server/ps with their libraries,
# /etc skeleton, kernel modules). Prints the base directory on stdout;
# progress goes to stderr.
#
#   vm/base.sh            -> $IFISP_VM_CACHE/base-<key>/{kernel,base.cpio.gz,kver,busybox}
#
# The key hashes this script, the two .deb file names and the versions of the
# host packages copied in, so any change rebuilds and nothing stale is reused.
#
# Why host binaries for the tools: they are the Debian 12 packages the lab
# tests already use on the host (CI installs them), and ldd gives their exact
# library closure. The kernel and busybox are only downloaded and unpacked
# (apt-get download + dpkg-deb -x), never installed: the host keeps its own.
set -euo pipefail

CACHE=${IFISP_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ifisp-vm}
# The kernel image package (linux-image-amd64 is the metapackage: it points
# at the current ABI package). It must have CONFIG_DEVPORT (the guest writes
# its verdict to qemu's isa-debug-exit port through /dev/port), which rules
# out the cloud kernel.
KERNEL_META=${IFISP_VM_KERNEL_META:-linux-image-amd64}
# Host packages whose binaries go into the guest; run.sh installs them.
# ppp and pppoe: pppd with its rp-pppoe plugin, pon and poff (ifupdown's
# `inet ppp`), and pppoe-server for the lab's PPPoE ISP; procps: the ps
# that poff reads (busybox's ps knows no `-o pid,cmd axw`).
HOST_PKGS=(iproute2 iptables conntrack ifupdown iputils-ping debianutils dash libc6 ppp pppoe procps)

log() { echo "vm/base: $*" >&2; }
die() { echo "vm/base: error: $*" >&2; exit 2; }

mkdir -p "$CACHE/debs"

# ---- 1. kernel and busybox: downloaded and unpacked, never installed --------
# apt-cache needs package lists; a fresh machine (or container) has none.
kpkg() { apt-cache depends "$KERNEL_META" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
KPKG=$(kpkg)
if [ -z "$KPKG" ]; then
	[ "$(id -u)" = 0 ] || die "apt-cache knows no $KERNEL_META; run 'apt-get update' as root"
	log "apt-get update (no package lists)"
	apt-get update -qq >&2
	KPKG=$(kpkg)
	[ -n "$KPKG" ] || die "apt-cache depends $KERNEL_META names no linux-image-<version> package"
fi
KVER=${KPKG#linux-image-}

fetch() { # PACKAGE: the cached .deb of PACKAGE, downloading it if absent
	local deb
	deb=$(ls "$CACHE/debs/$1"_*.deb 2>/dev/null | tail -1 || true)
	if [ -z "$deb" ]; then
		log "apt-get download $1"
		# As root apt wants to drop to _apt, which may not write here; the
		# download is of public, signature-checked archives either way.
		local opts=()
		[ "$(id -u)" != 0 ] || opts=(-o APT::Sandbox::User=root)
		(cd "$CACHE/debs" && apt-get download -q "${opts[@]}" "$1" >&2) ||
			die "apt-get download $1 failed"
		deb=$(ls "$CACHE/debs/$1"_*.deb | tail -1)
	fi
	echo "$deb"
}
KDEB=$(fetch "$KPKG")
BBDEB=$(fetch busybox-static)

# ---- 2. cache key -----------------------------------------------------------
KEY=$( {
	cat "$0"
	basename "$KDEB"; basename "$BBDEB"
	dpkg-query -W -f '${Package} ${Version}\n' "${HOST_PKGS[@]}"
} | sha256sum | cut -c1-16)
BASE=$CACHE/base-$KEY
if [ -f "$BASE/done" ]; then
	echo "$BASE"
	exit 0
fi
log "building base $BASE (kernel $KVER)"

# Build in a scratch directory and rename at the end, so an interrupted build
# never leaves a half base behind and a concurrent run sees a whole one.
W=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$W"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir "$W/out"

dpkg-deb -x "$KDEB" "$W/kroot"
dpkg-deb -x "$BBDEB" "$W/bb"
BB=$W/bb/bin/busybox
KD=$W/kroot/lib/modules/$KVER
VMLINUZ=$W/kroot/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || die "$KDEB has no boot/vmlinuz-$KVER"
grep -q '^CONFIG_DEVPORT=y' "$W/kroot/boot/config-$KVER" ||
	die "kernel $KVER lacks CONFIG_DEVPORT: the guest could not report its verdict"

# The bzImage carries an xz-compressed ELF vmlinux; qemu boots that directly
# through its PVH note (CONFIG_PVH), which skips the guest decompressing
# itself (about 2.5 s under software emulation). The payload offset is in the
# boot protocol header: (setup_sects + 1) * 512 + payload_offset.
# busybox's xz cannot do the kernel's BCJ filter, hence xz-utils.
setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$VMLINUZ" | tr -d ' ')
payload_off=$(od -An -tu4 -j $((0x248)) -N4 "$VMLINUZ" | tr -d ' ')
# (tail dies of SIGPIPE when xz stops at the end of the stream: not an error.)
if { tail -c +$(((setup_sects + 1) * 512 + payload_off + 1)) "$VMLINUZ" || true; } |
	xz -dc --single-stream >"$W/out/kernel" 2>/dev/null &&
	[ "$(head -c 4 "$W/out/kernel" | od -An -c | tr -d ' ')" = '177ELF' ]; then
	log "kernel: vmlinux extracted from the bzImage"
else
	log "kernel: could not extract vmlinux (not xz?), booting the bzImage"
	cp "$VMLINUZ" "$W/out/kernel"
fi
echo "$KVER" >"$W/out/kver"
# run.sh packs the payload archive with busybox's cpio (Debian has no cpio
# binary by default).
cp "$BB" "$W/out/busybox"

# ---- 3. stage the base root -------------------------------------------------
S=$W/stage
mkdir -p "$S"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,usr/local/sbin,usr/local/bin} \
	"$S"/{proc,sys,dev,run,tmp,root,etc,var/lib,var/tmp}
# /tmp stays on the root file system (RAM already) instead of a tmpfs mounted
# over it, so that a checkout under /tmp, copied into the guest at the same
# path, is not hidden.
chmod 1777 "$S/tmp" "$S/var/tmp"
# Debian 12's merged /usr layout, so that host paths (/bin/ip, /lib/ifupdown,
# /lib64/ld-linux) resolve the same way in the guest.
ln -s usr/bin "$S/bin"
ln -s usr/sbin "$S/sbin"
ln -s usr/lib "$S/lib"
ln -s usr/lib64 "$S/lib64"
ln -s ../run "$S/var/run"
ln -s ../run/lock "$S/var/lock"

cp "$BB" "$S/usr/bin/busybox"
for a in $("$BB" --list); do
	[ "$a" = busybox ] || ln -s busybox "$S/usr/bin/$a"
done
# The kernel autoloads modules through /sbin/modprobe.
for a in modprobe insmod rmmod lsmod depmod; do ln -sf ../bin/busybox "$S/usr/sbin/$a"; done

# install_host SRC DEST: copy a host binary (following symlinks) to DEST in
# the guest and drop busybox's applet of the same name: Debian's busybox is
# built to prefer its own applets, and PATH order alone would not keep its
# limited ip, ping or run-parts out of scripts.
install_host() {
	local name
	name=$(basename "$2")
	rm -f "$S/usr/bin/$name" "$S/usr/sbin/$name"
	cp -L "$1" "$S$2"
	echo "$1" >>"$W/bins"
}
: >"$W/bins"
install_host /usr/bin/ip /usr/sbin/ip
install_host /usr/sbin/tc /usr/sbin/tc
install_host /usr/sbin/xtables-legacy-multi /usr/sbin/xtables-legacy-multi
install_host /usr/sbin/xtables-nft-multi /usr/sbin/xtables-nft-multi
install_host /usr/sbin/conntrack /usr/sbin/conntrack
install_host /usr/sbin/ifup /usr/sbin/ifup
install_host /usr/bin/run-parts /usr/bin/run-parts
install_host /usr/bin/ping /usr/bin/ping
# /bin/sh is dash, as on Debian: ifupdown runs its `ip ...` lines and the
# hook scripts through /bin/sh, and busybox's ash would run its own ip applet.
install_host /usr/bin/dash /usr/bin/dash
ln -sf dash "$S/usr/bin/sh"
ln -sf ifup "$S/usr/sbin/ifdown"
ln -sf ifup "$S/usr/sbin/ifquery"
rm -f "$S/usr/bin/ifdown" "$S/usr/bin/ping6"
ln -s ping "$S/usr/bin/ping6"
# PPPoE: pppd, the server and its user-space relay (pppoe-server runs
# `pppd pty "pppoe ..."` for each session: Debian's is built without its
# kernel mode), pon and poff (shell scripts; poff finds pppd with procps'
# ps), and ps.
install_host /usr/sbin/pppd /usr/sbin/pppd
install_host /usr/sbin/pppoe-server /usr/sbin/pppoe-server
install_host /usr/sbin/pppoe /usr/sbin/pppoe
install_host /usr/bin/ps /usr/bin/ps
cp /usr/bin/pon /usr/bin/poff "$S/usr/bin/"

for v in legacy nft; do
	for t in iptables ip6tables; do
		for s in "" -save -restore; do
			ln -sf "xtables-$v-multi" "$S/usr/sbin/$t-$v$s"
		done
	done
done
# Debian's default backend is nft.
for t in iptables ip6tables; do
	for s in "" -save -restore; do
		rm -f "$S/usr/bin/$t$s"
		ln -sf "$t-nft$s" "$S/usr/sbin/$t$s"
	done
done

# Plugins loaded with dlopen, which ldd cannot see: iptables' extensions,
# pppd's (rp-pppoe.so) and tc's netem delay distributions.
cp -a /usr/lib/x86_64-linux-gnu/xtables "$S/usr/lib/x86_64-linux-gnu/"
cp -a /usr/lib/pppd "$S/usr/lib/"
mkdir -p "$S/usr/lib/x86_64-linux-gnu/tc"
cp /usr/lib/x86_64-linux-gnu/tc/*.dist "$S/usr/lib/x86_64-linux-gnu/tc/"
# ifupdown's helper scripts (inet6 static runs settle-dad.sh by default).
mkdir -p "$S/usr/lib/ifupdown"
cp -L /usr/lib/ifupdown/*.sh "$S/usr/lib/ifupdown/"

# Shared libraries: the ldd closure of the binaries and plugins.
# shellcheck disable=SC2046
ldd $(cat "$W/bins") /usr/lib/x86_64-linux-gnu/xtables/*.so /usr/lib/pppd/*/*.so 2>/dev/null |
	awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}' | sort -u |
	while read -r lib; do
		case $lib in
		*/ld-linux*) cp -L "$lib" "$S/usr/lib64/" ;;
		*) cp -L "$lib" "$S/usr/lib/x86_64-linux-gnu/" ;;
		esac
	done

# /etc: a minimal system plus iproute2's own files as its package ships them
# (not the host's additions in rt_tables.d or rt_protos.d).
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$S/etc/passwd"
printf 'root:x:0:\n' >"$S/etc/group"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$S/etc/hosts"
echo ifisp-vm >"$S/etc/hostname"
cp /etc/protocols /etc/services "$S/etc/"
[ ! -f /etc/ethertypes ] || cp /etc/ethertypes "$S/etc/"
dpkg -L iproute2 | grep '^/etc/iproute2/' | while read -r f; do
	if [ -d "$f" ]; then
		mkdir -p "$S$f"
	elif [ -f "$f" ]; then
		mkdir -p "$S$(dirname "$f")"
		cp "$f" "$S$f"
	fi
done
# ppp's /etc/ppp as its package ships it (options, ip-up and ip-down, which
# run-parts ip-up.d and ip-down.d): the lab copies them into its
# namespaces' own /etc/ppp.
dpkg -L ppp | grep '^/etc/ppp/' | while read -r f; do
	if [ -d "$f" ]; then
		mkdir -p "$S$f"
	elif [ -f "$f" ]; then
		mkdir -p "$S$(dirname "$f")"
		cp "$f" "$S$f"
	fi
done
mkdir -p "$S/etc/netns" "$S/etc/network/interfaces.d"
for d in if-pre-up.d if-up.d if-down.d if-post-down.d; do mkdir -p "$S/etc/network/$d"; done
cat >"$S/etc/network/interfaces" <<'EOF'
# The VM guest's own interfaces file: tests use their own files (ifup -i) or
# per-namespace ones (/etc/netns/NS/network/interfaces with ip netns exec).
auto lo
iface lo inet loopback
EOF

# ---- 4. kernel modules --------------------------------------------------------
# Everything of networking that tests may reach, directly or through the
# kernel's autoload (an iptables match, a qdisc, a tunnel type), plus the
# modules' dependency closure from modules.dep. The .deb ships no modules.dep:
# busybox depmod makes it (and modules.alias, which autoload needs).
"$BB" depmod -b "$W/kroot" "$KVER"
{
	# xfrm and key: vishvananda/netlink's NewHandle opens an XFRM socket
	# too, and fails without xfrm_user.
	grep -E '^kernel/net/(netfilter|ipv4|ipv6|sched|8021q|bridge|core|llc|802|xfrm|key|netlink|packet|mpls)/' "$KD/modules.dep"
	grep -E '^kernel/drivers/net/(veth|dummy|ifb|macvlan|ipvlan/|vxlan/|tun|vrf)' "$KD/modules.dep"
	# PPP: ppp_generic, ppp_async (the pty of pppoe-server's sessions),
	# pppoe and pppox (the client's kernel-mode PPPoE), slhc.
	grep -E '^kernel/drivers/net/(ppp/|slip/slhc)' "$KD/modules.dep"
	grep -E '(^|/)(crc32c_generic|crc32c-intel)\.ko' "$KD/modules.dep"
} | tr ' :' '\n\n' | grep . | sort -u >"$W/modlist"
while read -r m; do
	mkdir -p "$S/lib/modules/$KVER/$(dirname "$m")"
	cp "$KD/$m" "$S/lib/modules/$KVER/$m"
done <"$W/modlist"
# busybox modprobe cannot load compressed modules (Debian 12 ships plain .ko;
# later kernels may not).
find "$S/lib/modules" -name '*.ko.xz' -exec xz -d {} +
find "$S/lib/modules" -name '*.ko.zst' -exec zstd -q -d --rm {} +
cp "$KD/modules.builtin" "$KD/modules.order" "$S/lib/modules/$KVER/"
"$BB" depmod -b "$S" "$KVER"
log "staged $(wc -l <"$W/modlist") modules, $(wc -l <"$W/bins") host binaries; stage $(du -sh "$S" | cut -f1)"

# ---- 5. archive ------------------------------------------------------------------
# newc cpio, owned by root; the kernel unpacks it and then the payload archive
# that run.sh concatenates after it.
(cd "$S" && find . | LC_ALL=C sort | "$BB" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -6 >"$W/out/base.cpio.gz"
touch "$W/out/done"

# Keep one base: older ones are dead weight.
for old in "$CACHE"/base-*; do
	[ -d "$old" ] && [ "$old" != "$BASE" ] && rm -rf "$old"
done
mv "$W/out" "$BASE" 2>/dev/null || [ -f "$BASE/done" ] # lost a race: the winner's is as good
log "base ready: $(du -h --apparent-size "$BASE/kernel" | cut -f1) kernel, $(du -h --apparent-size "$BASE/base.cpio.gz" | cut -f1) base.cpio.gz"
echo "$BASE"
