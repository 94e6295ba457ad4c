# Kemari-RDMA: one entry point.
#   make            build build/kemari-run, build/kemari-kv and the guests
#   make deps       install missing Debian packages (idempotent)
#   make check      deps + build + every test: check-run, check-rdma, check-patches
#   make check-run  unit, fuzz, conformance, synth failover, KVM integration (tcp, ofi-tcp)
#   make check-linux-vm  the whole Linux-guest suite (in the emulated VM without vmx/svm)
#   make demo       deps + build + the primary/secondary/failover demo
#   make demo-soak  the demo N=10 times in a row (one emulated VM), verdicts
#   make linux-guest  Debian's kernel + an initramfs with kemari-kvstore
#   make man        the manual pages (docs/man/*.scd) into $(BUILD)/man/
#   make install    PREFIX=/usr/local DESTDIR=: programs, man pages, guests, systemd units
#   make check-rdma soft-RoCE tests inside an emulated VM
#   make fuzz       libFuzzer harnesses of every decoder, FUZZ_SECS=N each
#   make perf       pause-time benchmark matrix (perf/) into $(BUILD)/perf/
#   make perf-quick a reduced matrix (tcp, 64M, 0/256/4096 pages)
#   make format     clang-format all C
# Options: V=1 verbose, WERROR=1 (CI), SAN=address,undefined, BUILD=dir

BUILD ?= build$(if $(SAN),-san)
PKG_CONFIG ?= pkg-config
CC ?= cc
ifeq ($(V),1)
Q :=
else
Q := @
endif

WARN := -Wall -Wextra -Wmissing-prototypes -Wstrict-prototypes -Wshadow -Wformat=2
CFLAGS ?= -O2 -g
override CFLAGS += -std=gnu11 -D_GNU_SOURCE -Iinclude -MMD -MP -pthread $(WARN)
ifneq ($(WERROR),)
override CFLAGS += -Werror
endif
ifneq ($(SAN),)
override CFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
override LDFLAGS += -fsanitize=$(SAN)
endif
# OpenSSL: libcrypto for --auth-key (HMAC-SHA256, random bytes), libssl for
# --tls (TCP in TLS 1.3 with a pre-shared key); required.
LDLIBS += -pthread -lrt -lssl -lcrypto

# Optional backends: detected, never assumed.
have = $(shell $(PKG_CONFIG) --exists $(1) 2>/dev/null && echo 1)
HAVE_RDMA := $(call have,libibverbs librdmacm)
HAVE_OFI := $(call have,libfabric)
HAVE_CRITERION := $(call have,criterion)
HAVE_XEN := $(call have,xencontrol)
HAVE_MHD := $(call have,libmicrohttpd)
HAVE_CRYPTO := $(call have,libcrypto)

ifneq ($(MAKECMDGOALS),deps)
ifeq ($(HAVE_CRYPTO),)
$(info kemari: libcrypto not found (OpenSSL, Debian's libssl-dev): the build will fail; run 'make deps')
endif
ifeq ($(HAVE_RDMA),)
$(info kemari: rdma transport disabled (libibverbs/librdmacm not found; run 'make deps'))
endif
ifeq ($(HAVE_OFI),)
$(info kemari: ofi transport disabled (libfabric not found; run 'make deps'))
endif
ifeq ($(HAVE_CRITERION),)
$(info kemari: tests disabled (criterion not found; run 'make deps'))
endif
ifeq ($(HAVE_MHD),)
$(info kemari: --metrics disabled (libmicrohttpd not found; run 'make deps'))
endif
endif

CORE_SRCS := $(wildcard core/*.c)
# hv/kvm in kvmtool's shape: the VMM itself (vm, cpu, platform), boot/
# (ELF and bzImage loaders, zero page, e820, MP table), hw/ (PC devices,
# host backends), virtio/ (virtio-pci, ring, blk, net), kemari/ (the
# freestanding guests' paravirtual devices).
HV_SRCS := $(wildcard hv/kvm/*.c) $(wildcard hv/kvm/boot/*.c) \
	$(wildcard hv/kvm/hw/*.c) $(wildcard hv/kvm/virtio/*.c) \
	$(wildcard hv/kvm/kemari/*.c) $(wildcard hv/synth/*.c)
# transports/common/ (the one-sided layer rdma and ofi share: planner,
# credits, control queue, sticky failure, test knobs) is pure (no verbs or
# libfabric): always built, so its unit tests run everywhere; the rdma and
# ofi control data checks (ctrl.c) too, for the fuzz harnesses.
XPORT_COMMON := $(wildcard transports/common/*.c)
RDMA_PURE := $(wildcard transports/rdma/ctrl.c)
OFI_PURE := $(wildcard transports/ofi/ctrl.c)
XPORT_SRCS := $(wildcard transports/tcp/*.c) $(XPORT_COMMON) $(RDMA_PURE) \
	$(OFI_PURE)
BACKEND_DEFS :=
ifneq ($(and $(HAVE_RDMA),$(wildcard transports/rdma/rdma_cm.c)),)
XPORT_SRCS += $(filter-out $(RDMA_PURE),$(wildcard transports/rdma/*.c))
BACKEND_DEFS += -DHAVE_RDMA
LDLIBS += $(shell $(PKG_CONFIG) --libs libibverbs librdmacm)
endif
ifneq ($(and $(HAVE_OFI),$(wildcard transports/ofi/*.c)),)
XPORT_SRCS += $(filter-out $(OFI_PURE),$(wildcard transports/ofi/*.c))
BACKEND_DEFS += -DHAVE_OFI
LDLIBS += $(shell $(PKG_CONFIG) --libs libfabric)
endif
LIB_SRCS := $(CORE_SRCS) $(HV_SRCS) $(XPORT_SRCS) backends/backends.c
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIB := $(BUILD)/libkemari.a

CMDS := $(BUILD)/kemari-run $(BUILD)/kemari-kv $(BUILD)/kemari-perf $(BUILD)/kemari-ctl

# Manual pages: written once in scdoc (docs/man/*.scd), built when scdoc is
# here (make deps installs it); `make man` insists.
SCDOC ?= scdoc
HAVE_SCDOC := $(shell command -v $(SCDOC) >/dev/null 2>&1 && echo 1)
MAN_PAGES := $(patsubst docs/man/%.scd,$(BUILD)/man/%,$(wildcard docs/man/*.scd))

all: $(CMDS) guests $(if $(HAVE_SCDOC),man)

man: $(MAN_PAGES)

$(BUILD)/man/%: docs/man/%.scd
	@mkdir -p $(@D)
	@$(if $(Q),echo "  SCDOC   $<")
	$(Q)$(SCDOC) < $< > $@.tmp && mv $@.tmp $@

include guest/guest.mk

# Test guests (tests/guests/*.c) on the same runtime.
TEST_GUEST_ELFS := $(patsubst tests/guests/%.c,$(BUILD)/guests/%.elf,$(wildcard tests/guests/*.c))
$(BUILD)/guests/obj/tests/%.c.o: tests/guests/%.c guest/guest.mk
	@mkdir -p $(@D)
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) -Iguest -c $< -o $@
$(TEST_GUEST_ELFS): $(BUILD)/guests/%.elf: $(BUILD)/guests/obj/tests/%.c.o $(GUEST_RT_OBJS) guest/guest.ld
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ $< $(GUEST_RT_OBJS)

guests: $(GUEST_ELFS) $(TEST_GUEST_ELFS)

$(BUILD)/obj/backends/backends.o: override CFLAGS += $(BACKEND_DEFS)
# Rebuild the backend table when the set of detected backends changes.
$(BUILD)/obj/backends/backends.o: $(BUILD)/backends.flags
$(BUILD)/backends.flags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(BACKEND_DEFS)' | cmp -s - $@ || echo '$(BACKEND_DEFS)' > $@
FORCE:

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJS)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# --metrics (cmd/metrics-http.c): libmicrohttpd when detected, else a stub
# that says how to get it; rebuilt when that changes.
MHD_DEFS := $(if $(HAVE_MHD),-DHAVE_MICROHTTPD)
MHD_LIBS := $(if $(HAVE_MHD),$(shell $(PKG_CONFIG) --libs libmicrohttpd))
$(BUILD)/obj/cmd/metrics-http.o: override CFLAGS += $(MHD_DEFS)
$(BUILD)/obj/cmd/metrics-http.o: $(BUILD)/mhd.flags
$(BUILD)/mhd.flags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(MHD_DEFS)' | cmp -s - $@ || echo '$(MHD_DEFS)' > $@

$(BUILD)/kemari-run: $(BUILD)/obj/cmd/kemari-run.o $(BUILD)/obj/cmd/metrics-http.o \
		$(BUILD)/obj/cmd/control.o $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(MHD_LIBS) $(LDLIBS)

$(BUILD)/kemari-kv: $(BUILD)/obj/cmd/kemari-kv.o $(BUILD)/obj/cmd/kvclient.o $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/kemari-perf: $(BUILD)/obj/cmd/kemari-perf.o $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/kemari-ctl: $(BUILD)/obj/cmd/kemari-ctl.o $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- tests ---------------------------------------------------------------
CRIT_LIBS = $(shell $(PKG_CONFIG) --libs criterion 2>/dev/null)
UNIT_SRCS := $(wildcard tests/unit/*.c)
INTEG_SRCS := $(wildcard tests/integration/*.c)
TEST_LIB_SRCS := $(wildcard tests/lib/*.c)
XPORT_SRCS := $(wildcard tests/xport/*.c)
SYNTH_SRCS := $(wildcard tests/synth/*.c)
UNIT_BIN := $(BUILD)/tests/unit
INTEG_BIN := $(BUILD)/tests/integration
XPORT_BIN := $(BUILD)/tests/xport
FUZZ_BIN := $(BUILD)/tests/fuzz
SYNTH_BIN := $(BUILD)/tests/synth

$(BUILD)/obj/tests/%.o: override CFLAGS += -Iguest -Itests/lib -Icmd

$(UNIT_BIN): $(UNIT_SRCS:%.c=$(BUILD)/obj/%.o) $(KV_HOST_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CRIT_LIBS) $(LDLIBS)

$(INTEG_BIN): $(INTEG_SRCS:%.c=$(BUILD)/obj/%.o) $(TEST_LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/cmd/kvclient.o $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CRIT_LIBS) $(LDLIBS)

$(XPORT_BIN): $(XPORT_SRCS:%.c=$(BUILD)/obj/%.o) $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CRIT_LIBS) $(LDLIBS)

$(FUZZ_BIN): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/fuzz/*.c)) $(KV_HOST_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CRIT_LIBS) $(LDLIBS)

$(SYNTH_BIN): $(SYNTH_SRCS:%.c=$(BUILD)/obj/%.o) $(TEST_LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/cmd/kvclient.o $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CRIT_LIBS) $(LDLIBS)

tests: $(UNIT_BIN) $(INTEG_BIN) $(XPORT_BIN) $(FUZZ_BIN) $(SYNTH_BIN)

# ---- libFuzzer harnesses (tests/fuzz/libfuzzer/fuzz_*.c) -----------------
# Coverage-guided, one binary per decoder, built with clang's libFuzzer and
# ASan+UBSan against the library compiled the same way into
# $(BUILD)/fuzz/obj/ (the gcc objects are untouched). `make fuzz
# FUZZ_SECS=N` runs each for N seconds (FUZZ_RUNS=N: at most N executions;
# FUZZ=a,b: only those) from its seeds in tests/fuzz/corpus/<name>/ and prints its
# executions and crashes (tests/fuzz/libfuzzer/run.sh); `make fuzz-seeds`
# regenerates the seeds (seed-*; the regression inputs, regress-*, stay).
FUZZ_CC ?= clang
FUZZ_SECS ?= 10
# Per harness in check-run.
FUZZ_CHECK_SECS ?= 15
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
# The kernel's variable-sized headers (struct kvm_msrs) lead fixed arrays
# on purpose; clang warns where gcc accepts the GNU extension.
FUZZ_CFLAGS := -O1 -g -std=gnu11 -D_GNU_SOURCE -Iinclude -MMD -MP -pthread \
	$(WARN) -Wno-gnu-variable-sized-type-not-at-end $(if $(WERROR),-Werror) \
	-fsanitize=fuzzer-no-link $(FUZZ_SAN)
FUZZ_DIR := tests/fuzz/libfuzzer
FUZZ_NAMES := $(patsubst $(FUZZ_DIR)/fuzz_%.c,%,$(wildcard $(FUZZ_DIR)/fuzz_*.c))
FUZZ_BINS := $(FUZZ_NAMES:%=$(BUILD)/fuzz/%)
FUZZ_LIB := $(BUILD)/fuzz/libkemari.a
# Expanded only by the recipes that ask: whether clang links a fuzzer.
HAVE_LIBFUZZER = $(shell printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n; }\n' | \
	$(FUZZ_CC) -fsanitize=fuzzer -x c - -o /dev/null >/dev/null 2>&1 && echo 1)

$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<
# The harnesses reach internals: the engine's, the VMM's, the kvstore's.
$(BUILD)/fuzz/obj/$(FUZZ_DIR)/%.o: FUZZ_CFLAGS += -Iguest -Icore -Ihv/kvm

$(FUZZ_LIB): $(LIB_SRCS:%.c=$(BUILD)/fuzz/obj/%.o) \
		$(KV_HOST_SRCS:%.c=$(BUILD)/fuzz/obj/%.o)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# --as-needed: a harness without verbs or libfabric does not load them (the
# PSM provider's SIGABRT handler would turn an abort into an exit).
$(FUZZ_BINS): $(BUILD)/fuzz/%: $(BUILD)/fuzz/obj/$(FUZZ_DIR)/fuzz_%.o \
		$(BUILD)/fuzz/obj/$(FUZZ_DIR)/harness.o $(FUZZ_LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ -Wl,--as-needed $(LDLIBS)

fuzz-build: $(FUZZ_BINS)

fuzz:
	$(Q)if [ -z "$(HAVE_LIBFUZZER)" ]; then \
		echo "fuzz: $(FUZZ_CC) cannot link -fsanitize=fuzzer (run 'make deps': clang, libclang-rt-14-dev)" >&2; exit 1; fi
	$(Q)$(MAKE) --no-print-directory fuzz-build
	$(Q)tests/fuzz/libfuzzer/run.sh $(BUILD)/fuzz $(FUZZ_SECS) $(FUZZ_NAMES)

# Each harness writes its own seeds (fuzz_seeds() next to the code that
# reads them) when FUZZ_WRITE_SEEDS names a directory.
fuzz-seeds: fuzz-build
	$(Q)for n in $(FUZZ_NAMES); do \
		mkdir -p tests/fuzz/corpus/$$n && rm -f tests/fuzz/corpus/$$n/seed-* && \
		FUZZ_WRITE_SEEDS=tests/fuzz/corpus/$$n $(BUILD)/fuzz/$$n || exit 1; \
	done

deps:
	$(Q)scripts/deps.sh

# check/demo install what is missing first, then re-read this Makefile so
# the backend detection sees the new libraries.
check: deps
	$(Q)scripts/check.sh

# Tests left out of make check where the Linux suite runs in the emulated
# VM (a glob, KEMARI_VM_LEAVE_OUT; by-test.sh names each). None: the Linux
# guest's kill -9 at each phase was left out while nested paging under TCG
# crashed its takeovers; with kvm_amd.npt=0 in the VM it passes there
# (docs/testing.md). make check-linux-vm runs the whole Linux suite there.
LINUX_VM_LEAVE_OUT ?=
LINUX_SUITE = tests/run-suite.sh "KVM integration, Linux guest (tcp)" \
	tests/run-kvm.sh $(INTEG_BIN) --jobs 1 --short-filename --filter 'linux_*/*'

check-run: all tests man linux-guest-test
	$(Q)guest/check-nosse.sh $(GUEST_ELFS)
	$(Q)echo "== unit tests [$$(date -u +%T)]"
	$(Q)$(UNIT_BIN) --jobs 2 --short-filename
	$(Q)echo "== manual pages: render without warnings, every option documented [$$(date -u +%T)]"
	$(Q)BUILD=$(BUILD) tests/man.sh
	$(Q)echo "== the test scripts judged on made-up suites (tests/scripts) [$$(date -u +%T)]"
	$(Q)tests/scripts/runner-selftest.sh
	$(Q)echo "== make install into a temporary DESTDIR [$$(date -u +%T)]"
	$(Q)BUILD=$(BUILD) MAKE="$(MAKE)" tests/install.sh
	$(Q)echo "== fuzz: replication stream over tcp, kvstore datagrams [$$(date -u +%T)]"
	$(Q)$(FUZZ_BIN) --jobs 2 --short-filename
	$(Q)if [ -n "$(HAVE_LIBFUZZER)" ]; then \
		echo "== libFuzzer: every decoder's harness for $(FUZZ_CHECK_SECS) s [$$(date -u +%T)]"; \
		$(MAKE) --no-print-directory fuzz FUZZ_SECS=$(FUZZ_CHECK_SECS); \
	else \
		echo "== libFuzzer: SKIPPED ($(FUZZ_CC) cannot link -fsanitize=fuzzer; 'make deps' installs clang and libclang-rt-14-dev) [$$(date -u +%T)]"; \
	fi
	$(Q)echo "== transport conformance (every transport usable here) [$$(date -u +%T)]"
	$(Q)$(XPORT_BIN) --jobs 1 --short-filename
	$(Q)echo "== engine failover with the synthetic guest, natively (every transport usable here) [$$(date -u +%T)]"
	$(Q)$(SYNTH_BIN) --jobs 1 --short-filename
	$(Q)echo "== kemari-kvstore (the Linux guest's service), natively [$$(date -u +%T)]"
	$(Q)BUILD=$(BUILD) tests/linux-kvstore.sh
	$(Q)echo "== the Linux guest image (make linux-guest) under QEMU TCG [$$(date -u +%T)]"
	$(Q)BUILD=$(BUILD) tests/linux-guest-qemu.sh; rc=$$?; \
	if [ $$rc -eq 77 ]; then echo "linux-guest-qemu: SKIPPED"; exit 0; fi; exit $$rc
	$(Q)echo "== KVM integration, the freestanding guest (tcp; natively where /dev/kvm opens, PVM included) [$$(date -u +%T)]"
	$(Q)tests/run-suite.sh "KVM integration, freestanding guest (tcp)" \
		tests/run-kvm.sh --freestanding $(INTEG_BIN) --jobs 1 --short-filename \
		--filter '!(linux_*)/*'
	$(Q)echo "== KVM integration, the Linux guest (tcp; natively where KVM has vmx/svm) [$$(date -u +%T)]"
	$(Q)KEMARI_VM_LEAVE_OUT=$(LINUX_VM_LEAVE_OUT) $(LINUX_SUITE)
ifneq ($(and $(HAVE_OFI),$(wildcard transports/ofi/*.c)),)
	$(Q)echo "== kill -9 failover over ofi (libfabric tcp provider, FI_EP_MSG) [$$(date -u +%T)]"
	$(Q)KEMARI_FAILOVER_RUNS=5 tests/run-suite.sh "kill -9 failover over ofi-tcp" \
		tests/run-kvm.sh --freestanding env "KEMARI_TEST_TRANSPORT=ofi --provider=tcp" \
		$(INTEG_BIN) --jobs 1 --short-filename --filter 'replication/kill9*'
	$(Q)echo "== kill -9 failover over ofi (libfabric shm provider, FI_EP_RDM) [$$(date -u +%T)]"
	$(Q)KEMARI_FAILOVER_RUNS=5 tests/run-suite.sh "kill -9 failover over ofi-shm" \
		tests/run-kvm.sh --freestanding env "KEMARI_TEST_TRANSPORT=ofi --provider=shm" \
		$(INTEG_BIN) --jobs 1 --short-filename --filter 'replication/kill9*'
endif

# The whole Linux-guest suite, in the emulated VM where KVM lacks vmx/svm.
check-linux-vm: all tests linux-guest-test
	$(Q)$(LINUX_SUITE)

# make demo: the freestanding kvstore guest (fast); make demo GUEST=linux:
# Debian's Linux kernel with the kvstore image, TCP connection included.
demo: deps
	$(Q)$(MAKE) --no-print-directory all
ifeq ($(GUEST),linux)
	$(Q)$(MAKE) --no-print-directory linux-guest
	$(Q)BUILD=$(BUILD) scripts/demo-linux.sh
else
	$(Q)scripts/demo.sh
endif

demo-soak: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/demo-soak.sh $(or $(N),10)

# Soft-RoCE: rdma and ofi-verbs inside the emulated VM (tests/check-rdma.sh).
# Exit 77 (no qemu or kernel package here) is reported as a skip.
check-rdma: deps
	$(Q)$(MAKE) --no-print-directory all tests linux-guest
	$(Q)BUILD=$(BUILD) tests/check-rdma.sh; rc=$$?; \
	if [ $$rc -eq 77 ]; then echo "check-rdma: SKIPPED"; exit 0; fi; exit $$rc

# Pause-time benchmark matrix into $(BUILD)/perf/ (perf/run.sh, docs/perf.md);
# PERF_ARGS passes options through, e.g. PERF_ARGS=--events=50.
perf: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) perf/run.sh $(PERF_ARGS)

perf-quick: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) perf/run.sh --quick $(PERF_ARGS)

# Patch series against Debian 12's Xen, Linux and QEMU (scripts/check-patches.sh).
check-patches: deps
	$(Q)scripts/check-patches.sh

# The patched Xen booted under QEMU TCG, tap tested against a PV domU
# (also part of check-patches; needs the tree check-patches built).
check-xen-tap:
	$(Q)tests/xen/check-xen-tap.sh

# The Linux guest image: Debian's stock kernel and an initramfs with the
# static kemari-kvstore, in $(BUILD)/guests/linux/ (docs/linux-guest.md).
linux-guest:
	$(Q)BUILD=$(BUILD) scripts/linux-guest.sh

# The same image with the test overlay (tests/guests/linux-overlay) and the
# ext4 module with the crc32c it asks for by name at every mount (the file
# test's ext2 filesystem), for the Linux integration tests.
linux-guest-test: linux-guest
	$(Q)BUILD=$(BUILD) scripts/linux-guest.sh --overlay=tests/guests/linux-overlay \
		--modules=ext4,crc32c_generic --out=$(BUILD)/guests/linux-test

# make install PREFIX=/usr/local DESTDIR=: the programs, the manual pages,
# the freestanding guests and the systemd unit templates (dist/systemd/,
# ExecStart pointed at $(BINDIR)). The test guests stay in $(BUILD).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share/kemari
SYSTEMD_UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSTEMD_UNITS := $(wildcard dist/systemd/*.service)

install: $(CMDS) $(GUEST_ELFS) man
	$(Q)install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/guests \
		$(DESTDIR)$(SYSTEMD_UNITDIR)
	$(Q)install -m 0755 $(CMDS) $(DESTDIR)$(BINDIR)/
	$(Q)for p in $(MAN_PAGES); do \
		install -D -m 0644 $$p $(DESTDIR)$(MANDIR)/man$${p##*.}/$${p##*/} || exit 1; \
	done
	$(Q)install -m 0644 $(GUEST_ELFS) $(DESTDIR)$(DATADIR)/guests/
	$(Q)for u in $(SYSTEMD_UNITS); do \
		sed 's|@BINDIR@|$(BINDIR)|g' $$u > $(DESTDIR)$(SYSTEMD_UNITDIR)/$${u##*/} && \
		chmod 0644 $(DESTDIR)$(SYSTEMD_UNITDIR)/$${u##*/} || exit 1; \
	done
	@echo "kemari: installed into $(DESTDIR)$(PREFIX)"

format:
	$(Q)clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-san

.PHONY: all man install guests tests fuzz fuzz-build fuzz-seeds deps check check-run check-linux-vm check-rdma check-patches check-xen-tap demo demo-soak perf perf-quick linux-guest linux-guest-test format clean

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
