# ifisp: multi-ISP source routing, SNAT and conntrack for Debian's ifupdown.

PREFIX         ?= /usr
SBINDIR        ?= $(PREFIX)/sbin
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR         ?= $(PREFIX)/share/man
DOCDIR         ?= $(PREFIX)/share/doc/ifisp
DESTDIR        ?=
GO             ?= go
SCDOC          ?= scdoc
# go build -ldflags: without the symbol table and DWARF (panics still print
# their stacks). A hook is started some ten times per ifup and ifdown, and
# the smaller binary starts 0.5 ms sooner each time.
GOLDFLAGS      ?= -s -w
# How the hooks go into /etc/network/if-*.d: "links", symlinks to the
# binaries (what the lab's tests install), or "scripts", small conffile
# scripts that run them (the Debian package; see hooks/hook.sh.in).
HOOKS          ?= links
# Static binaries: hooks run early at boot and in minimal systems.
export CGO_ENABLED = 0

BINARIES := $(notdir $(wildcard cmd/*))
# The binaries hooks/layout puts in if-*.d: each name is a link to the page
# ifisp-hooks(8).
HOOK_BINARIES := $(sort $(shell awk '!/^\#/ && NF == 3 { print $$3 }' hooks/layout))
# The man pages, from scdoc sources in man/ (NAME.SECTION.scd).
MANPAGES := $(patsubst man/%.scd,bin/man/%,$(wildcard man/*.scd))
VERSION := $(shell head -n1 debian/changelog | cut -d'(' -f2 | cut -d')' -f1)
# The pages' date: the last commit's, so that a rebuild makes the same
# pages (dpkg-buildpackage sets it from debian/changelog).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH

.PHONY: all build docs man check-man test test-deb test-vm test-vm-systemd bench soak demo install deb clean

all: build

build:
	$(GO) build -trimpath -ldflags='$(GOLDFLAGS)' -o bin/ ./cmd/...

# What is generated from the stanza options table (pkg/stanza/options.go):
# the option tables of README.md and docs/design.md and the defaults of
# ifisp-interfaces(5). `go test ./internal/optdoc` fails when they differ.
docs:
	$(GO) generate ./pkg/stanza

# Man pages, scdoc to roff, in bin/man.
man: $(MANPAGES)

bin/man/%: man/%.scd debian/changelog
	@mkdir -p bin/man
	sed 's/@VERSION@/$(VERSION)/' $< | $(SCDOC) >$@.tmp
	mv $@.tmp $@

# man(1) must render every page without a warning.
check-man: man
	@for page in $(MANPAGES); do \
		out=$$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z $$page 2>&1 >/dev/null); \
		[ -z "$$out" ] || { echo "$$page:"; echo "$$out"; exit 1; }; \
	done

# The whole suite; the lab tests need root (they make network namespaces).
# The integration package takes several minutes, more on a busy machine:
# past go test's default limit of 10 minutes a package.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 30m $(TESTFLAGS) ./...

# Installs the binaries into SBINDIR, links them (or, with HOOKS=scripts,
# scripts that run them) into the ifupdown hook folders under the run-parts
# names hooks/layout gives, installs ifisp-watch's systemd unit with its
# ExecStart in SBINDIR (enable it with systemctl), dhclient's exit hook
# and pppd's ip-up.d and ip-down.d scripts for ifisp-lease, the man pages
# (plain roff: a package's tools compress them), README and the examples.
install: build man
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR)/iproute2/rt_protos.d $(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 0755 $(addprefix bin/,$(BINARIES)) $(DESTDIR)$(SBINDIR)/
	install -m 0644 hooks/rt_protos.conf $(DESTDIR)$(SYSCONFDIR)/iproute2/rt_protos.d/ifisp.conf
	sed 's|^ExecStart=/usr/sbin/|ExecStart=$(SBINDIR)/|' hooks/ifisp-watch.service >bin/ifisp-watch.service
	install -m 0644 bin/ifisp-watch.service $(DESTDIR)$(SYSTEMDUNITDIR)/
	install -d $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 examples/*.interfaces examples/*.conf $(DESTDIR)$(DOCDIR)/examples/
	for page in $(MANPAGES); do install -m 0644 $$page $(DESTDIR)$(MANDIR)/man$${page##*.}/ || exit 1; done
	for binary in $(HOOK_BINARIES); do ln -sfn ifisp-hooks.8 $(DESTDIR)$(MANDIR)/man8/$$binary.8 || exit 1; done
	install -d $(DESTDIR)$(SYSCONFDIR)/ifisp/notify.d
	install -d $(DESTDIR)$(SYSCONFDIR)/dhcp/dhclient-exit-hooks.d $(DESTDIR)$(SYSCONFDIR)/ppp/ip-up.d $(DESTDIR)$(SYSCONFDIR)/ppp/ip-down.d
	sed "s|@SBINDIR@|$(SBINDIR)|g" hooks/dhclient-exit-hook >$(DESTDIR)$(SYSCONFDIR)/dhcp/dhclient-exit-hooks.d/ifisp
	chmod 0644 $(DESTDIR)$(SYSCONFDIR)/dhcp/dhclient-exit-hooks.d/ifisp
	sed -e "s|@SBINDIR@|$(SBINDIR)|g" -e "s|@SCRIPT@|ip-up|g" -e "s|@WHAT@|up on the session's address|g" -e "s|@DIR@|up|g" \
		hooks/ppp-hook.sh.in >$(DESTDIR)$(SYSCONFDIR)/ppp/ip-up.d/ifisp
	sed -e "s|@SBINDIR@|$(SBINDIR)|g" -e "s|@SCRIPT@|ip-down|g" -e "s|@WHAT@|down|g" -e "s|@DIR@|down|g" \
		hooks/ppp-hook.sh.in >$(DESTDIR)$(SYSCONFDIR)/ppp/ip-down.d/ifisp
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/ppp/ip-up.d/ifisp $(DESTDIR)$(SYSCONFDIR)/ppp/ip-down.d/ifisp
	case "$(HOOKS)" in links|scripts) ;; *) echo "HOOKS=$(HOOKS): links or scripts" >&2; exit 1;; esac
	grep -v '^#' hooks/layout | while read -r folder name binary; do \
		[ -n "$$folder" ] || continue; \
		install -d $(DESTDIR)$(SYSCONFDIR)/network/$$folder || exit 1; \
		hook=$(DESTDIR)$(SYSCONFDIR)/network/$$folder/$$name; \
		if [ "$(HOOKS)" = scripts ]; then \
			rm -f $$hook && \
			sed -e "s|@SBINDIR@|$(SBINDIR)|g" -e "s|@BINARY@|$$binary|g" hooks/hook.sh.in >$$hook && \
			chmod 0755 $$hook || exit 1; \
		else \
			ln -sfn $(SBINDIR)/$$binary $$hook || exit 1; \
		fi; \
	done

# The Debian packages bin/deb/ifisp_VERSION_{amd64,arm64}.deb (VERSION
# from debian/changelog). Built by dpkg-buildpackage with debhelper from
# debian/, not nfpm: debhelper writes the maintainer scripts (systemd
# enable, try-restart on upgrade, purge) and marks conffiles the way
# Debian's own packages get them, and the rules file says what differs.
# The Go build itself is this Makefile's (debian/rules says why not
# dh-golang). Each architecture builds in a copy of the tree under bin/deb:
# dpkg-buildpackage writes beside the tree it builds, and one
# architecture's binaries must not stand in the other's. nocheck: a
# package build runs no tests (make test does). lintian must find no error
# or warning. Needs dpkg-dev, debhelper, scdoc, lintian, and Go on PATH.
DEB_ARCHES ?= amd64 arm64
deb:
	rm -rf bin/deb
	set -e; for arch in $(DEB_ARCHES); do \
		mkdir -p bin/deb/$$arch/ifisp; \
		tar -c --exclude=./bin --exclude=./.git . | tar -x -C bin/deb/$$arch/ifisp; \
		(cd bin/deb/$$arch/ifisp && DEB_BUILD_OPTIONS="nocheck $$DEB_BUILD_OPTIONS" \
			dpkg-buildpackage --host-arch=$$arch --build=binary --no-sign); \
		mv bin/deb/$$arch/*.deb bin/deb/; \
	done
	lintian --fail-on error,warning bin/deb/*.deb
	@ls bin/deb/*.deb

# Both packages' contents, then the amd64 one installed, installed again,
# upgraded, removed and purged in a clean Debian 12 root (chroot, in a
# network namespace of its own; the base root, made by mmdebstrap from
# Debian's mirror, is cached in ~/.cache/ifisp-deb). Root.
test-deb: deb
	$(GO) vet -tags debtest ./integration/
	$(GO) test -count=1 -tags debtest -run '^TestDeb' $(TESTFLAGS) ./integration/

clean:
	rm -rf bin/

# The VM tier: a stock Debian kernel under qemu, for what this kernel lacks
# (sit/6rd, VLAN, netem). See vm/README.md. One boot for the guest's
# self-check, one for the scenarios that need its kernel; the second has
# the amd64 package of `make deb` installed, for TestPackagedWAN.
test-vm:
	$(GO) vet -tags vmtest ./...
	$(MAKE) deb DEB_ARCHES=amd64
	vm/run.sh ./vm/selftest
	IFISP_VM_DEB=bin/deb/ifisp_$(VERSION)_amd64.deb vm/run.sh ./integration -- \
		-test.run='^(TestSixRD.*|TestVLANWAN|TestImpairedUplink|TestPackagedWAN|TestPPPoE)$$'

# The VM tier's systemd scenario (vm/systemd.sh, see vm/README.md): a
# Debian 12 root booted with systemd as PID 1, the amd64 package of `make
# deb` installed with dpkg -i, ifisp-watch under its unit as shipped;
# withdrawals, restores, router advertisements and repairs. Two boots,
# with iptables' nft and legacy alternatives: the unit's sandbox does not
# look the same to both. Root; the root image is cached.
test-vm-systemd:
	$(GO) vet -tags vmtest ./vm/systemd/
	$(MAKE) deb DEB_ARCHES=amd64
	IFISP_VM_DEB=bin/deb/ifisp_$(VERSION)_amd64.deb IFISP_VM_IPTABLES=nft vm/systemd.sh
	IFISP_VM_DEB=bin/deb/ifisp_$(VERSION)_amd64.deb IFISP_VM_IPTABLES=legacy vm/systemd.sh

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
