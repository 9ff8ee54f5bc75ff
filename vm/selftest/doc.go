// Package selftest proves that the VM test tier's guest has everything ifisp's
// tests rely on: network namespaces, veth, VLAN, sit tunnels with 6rd, netem,
// iptables (nft and legacy) with NAT, conntrack and ifupdown with its hooks.
//
// Its tests build only with the vmtest tag and run only inside the guest that
// vm/run.sh boots (which sets IFISP_VM=1); there a missing feature fails a
// test, it never skips one. `go test ./...` on the host leaves them out.
package selftest
