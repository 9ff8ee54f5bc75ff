#!/bin/sh
# ifisp-vmlab.service: the lab around the router (the guest itself).
#
#   [lan] eth0 ── lan0 [router] wana ── cpe [ispa] uplink ── ispa [inet] 192.0.2.100, 2001:db8:ffff::100
#                               wanb ── cpe [ispb] uplink ── ispb
#
# The router's ends (lan0, wana, wanb) come without addresses: those are
# /etc/network/interfaces', brought up by ifupdown. lan0 is up already
# (its cable is in); the WANs come up with their stanzas. Each ISP routes
# the /56 it delegates to the router; the internet host routes each ISP's
# ranges back through it. The LAN host is a plain IPv6 host: SLAAC from
# the router's advertisements. One `ip -batch` per namespace: under
# emulation every process start costs.
set -eu

for ns in ispa ispb inet lan; do
	ip netns add $ns
	# Before any interface exists there, so each inherits it.
	fwd=1
	[ $ns != lan ] || fwd=0
	ip netns exec $ns sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
		net.ipv4.ip_forward=$fwd net.ipv6.conf.all.forwarding=$fwd net.ipv6.conf.default.forwarding=$fwd
done

ip -batch - <<'END'
link add lan0 type veth peer name eth0 netns lan
link add wana type veth peer name cpe netns ispa
link add wanb type veth peer name cpe netns ispb
link set lan0 up
END

ip -n lan -batch - <<'END'
link set lo up
link set eth0 up
addr add 10.1.0.10/24 dev eth0
route add default via 10.1.0.1
END

# isp ID NET N: ISP ID (a, b), the router's customer range NET.0/24 and
# 2001:db8:ID::/64 on its cpe, link number N to the internet host.
isp() {
	ip -n isp$1 -batch - <<END
link set lo up
link add uplink type veth peer name isp$1 netns inet
link set cpe up
link set uplink up
addr add $2.1/24 dev cpe
addr add 2001:db8:$1::1/64 dev cpe nodad
addr add 10.255.$3.1/30 dev uplink
addr add fd00:255:$3::1/64 dev uplink nodad
route add default via 10.255.$3.2
route add default via fd00:255:$3::2
route add 2001:db8:$1:100::/56 via 2001:db8:$1::2
END
}
isp a 198.51.100 1
isp b 203.0.113 2

ip -n inet -batch - <<'END'
link set lo up
addr add 192.0.2.100/32 dev lo
addr add 2001:db8:ffff::100/128 dev lo nodad
link set ispa up
addr add 10.255.1.2/30 dev ispa
addr add fd00:255:1::2/64 dev ispa nodad
route add 198.51.100.0/24 via 10.255.1.1 src 192.0.2.100
route add 2001:db8:a::/48 via fd00:255:1::1 src 2001:db8:ffff::100
link set ispb up
addr add 10.255.2.2/30 dev ispb
addr add fd00:255:2::2/64 dev ispb nodad
route add 203.0.113.0/24 via 10.255.2.1 src 192.0.2.100
route add 2001:db8:b::/48 via fd00:255:2::1 src 2001:db8:ffff::100
END
echo "ifisp-vmlab: namespaces $(ip netns list | cut -d' ' -f1 | tr '\n' ' ')beside the router's lan0, wana, wanb"
