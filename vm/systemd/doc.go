// Package systemd is the VM tier's systemd scenario (vm/systemd.sh, make
// test-vm-systemd): a Debian 12 root booted with systemd as PID 1 and the
// ifisp package installed with dpkg, its ISPs, LAN host and internet host
// network namespaces beside the guest's own network, which is the router.
// networking.service brings the `auto` WAN up and udev's hotplug
// (ifup@.service) the `allow-hotplug` one, and ifisp-watch runs under its
// unit as the package ships it.
//
// Its tests build only with the vmtest tag and run only in that guest
// (which sets IFISP_VM_SYSTEMD=1): they change the machine's own routes.
package systemd
