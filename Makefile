# ifisp: multi-ISP source routing, SNAT and conntrack for Debian's ifupdown.

PREFIX         ?= /usr
SBINDIR        ?= $(PREFIX)/sbin
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
DESTDIR        ?=
GO             ?= go
# Static binaries: hooks run early at boot and in minimal systems.
export CGO_ENABLED = 0
# Without the symbol table and DWARF (panics still print their stacks): a
# hook is started some ten times per ifup and ifdown, and the smaller binary
# starts 0.5 ms sooner each time.
GOFLAGS_BUILD ?= -trimpath -ldflags=-s\ -w

BINARIES := $(notdir $(wildcard cmd/*))

.PHONY: all build test test-vm bench soak demo install clean

all: build

build:
	$(GO) build $(GOFLAGS_BUILD) -o bin/ ./cmd/...

# The whole suite; the lab tests need root (they make network namespaces).
# The integration package takes several minutes, more on a busy machine:
# past go test's default limit of 10 minutes a package.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 30m $(TESTFLAGS) ./...

# Installs the binaries into SBINDIR, links them into the ifupdown hook
# folders under the run-parts names hooks/layout gives, and installs
# ifisp-watch's systemd unit with its ExecStart in SBINDIR (enable it with
# systemctl).
install: build
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR)/iproute2/rt_protos.d $(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 0755 $(addprefix bin/,$(BINARIES)) $(DESTDIR)$(SBINDIR)/
	install -m 0644 hooks/rt_protos.conf $(DESTDIR)$(SYSCONFDIR)/iproute2/rt_protos.d/ifisp.conf
	sed 's|^ExecStart=/usr/sbin/|ExecStart=$(SBINDIR)/|' hooks/ifisp-watch.service >bin/ifisp-watch.service
	install -m 0644 bin/ifisp-watch.service $(DESTDIR)$(SYSTEMDUNITDIR)/
	install -d $(DESTDIR)$(PREFIX)/share/doc/ifisp
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/ifisp/
	grep -v '^#' hooks/layout | while read -r folder name binary; do \
		[ -n "$$folder" ] || continue; \
		install -d $(DESTDIR)$(SYSCONFDIR)/network/$$folder && \
		ln -sfn $(SBINDIR)/$$binary $(DESTDIR)$(SYSCONFDIR)/network/$$folder/$$name || exit 1; \
	done

clean:
	rm -rf bin/

# The VM tier: a stock Debian kernel under qemu, for what this kernel lacks
# (sit/6rd, VLAN, netem). See vm/README.md. One boot for the guest's
# self-check, one for the scenarios that need its kernel.
test-vm:
	$(GO) vet -tags vmtest ./...
	vm/run.sh ./vm/selftest
	vm/run.sh ./integration -- -test.run='^(TestSixRD.*|TestVLANWAN|TestImpairedUplink)$$'

# The flap soak alone, long: both links flapped SOAK_CYCLES times (ifdown
# and ifup of each; every fifth cycle a pulled cable or a dead upstream)
# with ifisp-watch and LAN traffic running. The final state must equal the
# first; ifisp-watch's memory and fds and the conntrack table must stay
# bounded; nothing spoofed (root: the lab). `make test` runs the same test
# for 10 cycles. A cycle takes 1 to 2 s.
SOAK_CYCLES ?= 200
soak:
	IFISP_SOAK_CYCLES=$(SOAK_CYCLES) $(GO) test -count=1 -p 1 -timeout 60m -run '^TestFlapSoak$$' -v ./integration/

# Speed goals as ratios against a baseline measured in the same run, printed
# as tables (root: the lab).
bench:
	$(GO) test -count=1 -p 1 -timeout 60m -run '^$$' -bench . -benchtime 1x ./integration/

# The lab's failover, ifisp against the seed recipe, as a timeline (root).
demo:
	@[ "$$(id -u)" = 0 ] || { echo "make demo needs root: it builds network namespaces (try: sudo make demo)"; exit 1; }
	$(GO) run ./demo
