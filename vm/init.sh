#!/bin/sh
# /init of the VM test guest (PID 1, run by dash from the initramfs).
#
# Sets the guest up, loads the kernel modules ifisp needs, runs every test
# binary listed in /ifisp-vm/plan, prints one verdict line and ends qemu
# through its isa-debug-exit device:
#
#   IFISP-VM RESULT: PASS         -> writes 0 to port 0xf4 -> qemu exits 1
#   IFISP-VM RESULT: FAIL (...)   -> writes 1 to port 0xf4 -> qemu exits 3
#
# Any other end (a kernel panic, /init dying, a plain power-off, a hang that
# vm/run.sh times out) exits qemu some other way and counts as a failure:
# nothing here can pass by accident. A skipped test fails the run too: a test
# that skips in the guest means the guest misses something the VM tier exists
# to provide.
#
# Deliberately no `set -e`: every step reports its own failure and the run
# always reaches the verdict.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp
# Tests check this to know they run in the guest (and skip elsewhere).
export IFISP_VM=1
# Where the project's binaries are (also on PATH).
export IFISP_VM_BIN=/usr/local/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
# ip netns keeps its namespaces here; ifupdown its state and lock.
mkdir -p /run/netns /run/network /run/lock
exec </dev/console >/dev/console 2>&1
hostname -F /etc/hostname

uptime_s() { cut -d' ' -f1 /proc/uptime; }
say() { echo "IFISP-VM: $*"; }
FAILED=""
fail() {
	say "FAIL: $*"
	FAILED="$FAILED${FAILED:+, }$1"
}

verdict() {
	say "guest uptime at end: $(uptime_s)s"
	sync
	# isa-debug-exit at iobase 0xf4 (244): qemu exits with (value << 1) | 1.
	if [ -z "$FAILED" ]; then
		echo "IFISP-VM RESULT: PASS"
		printf '\000' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
	else
		echo "IFISP-VM RESULT: FAIL ($FAILED)"
		printf '\001' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
	fi
	# Only reached if the port write did nothing: qemu then exits 0, which
	# vm/run.sh reads as "no verdict".
	say "isa-debug-exit did not end qemu"
	poweroff -f
}

hv=$(dmesg | grep -o -m1 'Hypervisor detected: .*')
say "/init at $(uptime_s)s; kernel $(uname -r); ${hv:-no hypervisor signature (TCG)}; $(nproc) CPU; $(free -m | awk '/^Mem:/{print $2}') MB"

# ---- kernel modules -----------------------------------------------------------
# What ifisp and its tests use; the rest of netfilter/sched/tunnels is in the
# initramfs and autoloads on first use. A module that does not load is a
# failure: the VM tier exists to have these.
for m in veth dummy 8021q sit ip6_tunnel ipip ip_gre bridge ifb sch_netem sch_htb sch_tbf \
	nf_conntrack nf_conntrack_netlink nf_nat nf_tables nft_compat nft_chain_nat nft_ct \
	ip_tables iptable_filter iptable_nat iptable_mangle iptable_raw \
	ip6_tables ip6table_filter ip6table_nat ip6table_mangle ip6table_raw \
	xt_conntrack xt_comment xt_nat xt_MASQUERADE xt_addrtype xt_tcpudp xt_mark \
	ppp_generic ppp_async pppoe; do
	modprobe "$m" || fail "modprobe $m"
done
ip link set lo up
say "modules loaded at $(uptime_s)s"

# ---- tests ----------------------------------------------------------------------
# plan: one line per test binary, "NAME<TAB>DIR": run /ifisp-vm/tests/NAME
# with DIR (its package's source folder, as `go test` does) as working
# directory. flags: one argument per line, given to every binary.
set --
if [ -f /ifisp-vm/flags ]; then
	while IFS= read -r a; do set -- "$@" "$a"; done </ifisp-vm/flags
fi
tab=$(printf '\t')
ran=0
while IFS="$tab" read -r name dir; do
	[ -n "$name" ] || continue
	ran=$((ran + 1))
	t0=$(uptime_s)
	say "=== $name (in $dir, at ${t0}s)"
	out=/tmp/$name.out
	# dash has no pipefail: the binary's status goes through a file.
	{
		cd "$dir" && /ifisp-vm/tests/"$name" -test.v -test.paniconexit0 "$@" </dev/null 2>&1
		echo $? >/tmp/rc
	} | tee "$out"
	cd /
	rc=$(cat /tmp/rc)
	took=$(awk -v a="$(uptime_s)" -v b="$t0" 'BEGIN{printf "%.1f", a-b}')
	if [ "$rc" != 0 ]; then
		fail "$name" "exit status $rc after ${took}s"
	elif grep -q -- '--- SKIP' "$out"; then
		fail "$name" "tests skipped in the guest ($(grep -c -- '--- SKIP' "$out")), see above"
	elif grep -q '^testing: warning: no tests to run' "$out"; then
		fail "$name" "ran no tests"
	else
		say "PASS: $name in ${took}s"
	fi
done </ifisp-vm/plan
[ "$ran" -gt 0 ] || fail "plan" "no test binaries in /ifisp-vm/plan"

verdict
