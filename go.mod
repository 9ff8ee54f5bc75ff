module github.com/ifisp/ifisp

go 1.26.8

require (
	github.com/google/go-cmp v0.7.0
	github.com/mdlayher/netlink v1.7.2
	github.com/spf13/pflag v1.1.0
	github.com/ti-mo/conntrack v0.6.0
	github.com/ti-mo/netfilter v0.5.3
	github.com/vishvananda/netlink v1.3.1
	github.com/vishvananda/netns v0.0.5
	golang.org/x/net v0.39.0
	golang.org/x/sys v0.33.0
)

require (
	github.com/josharian/native v1.1.0 // indirect
	github.com/mdlayher/ndp v1.1.0 // indirect
	github.com/mdlayher/socket v0.5.1 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	golang.org/x/sync v0.14.0 // indirect
	golang.org/x/text v0.24.0 // indirect
)
