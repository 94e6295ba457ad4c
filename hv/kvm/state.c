// SPDX-License-Identifier: MIT
/*
 * The complete vCPU state of a PC-platform VM (a Linux guest) with the
 * in-kernel platform's (vm.c: kvmclock, PICs, IOAPIC, PIT), as the cpu
 * blob behind save_cpu/load_cpu. A freestanding guest's stays in cpu.c.
 *
 * The VM state travels here, not in the dev blob, for the restore order:
 * the engine loads the cpu blob first, and the clock and interrupt
 * controllers must be in place before the vCPUs' MSRs and LAPICs (see
 * kvm_vm__set_state); the dev blob then holds only the device models.
 *
 * Layout: TLV records, tag = vCPU << 16 | kind, version-tagged by HDR:
 *   HDR   (vCPU 0)   magic, version, vCPU count, XSAVE bytes, MSR count
 *                    and list CRC, the saving VM's instance (a VM that
 *                    loads its own blob back, the self-check, leaves its
 *                    running kvmclock and TSCs alone)
 *   VM    (vCPU 0)   struct kvm_vm_state
 *   per vCPU, as saved: MP_STATE, REGS, SREGS, XSAVE, XCRS, DEBUGREGS,
 *   LAPIC, TSC (kHz and offset), CPUID (compared, never set), MSRS (one
 *   record per chunk of the list, in restore order), EVENTS.
 *
 * What cannot change is probed once at creation (kvm_state__create): the
 * XSAVE size, the MSRs KVM reads and writes, each vCPU's CPUID and TSC
 * frequency; each epoch then costs a fixed set of GET ioctls into buffers
 * kept for the VM's life.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <unistd.h>

#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kvm.h"

#define MSR_IA32_TSC 0x10
#define MSR_IA32_MTRRCAP 0xfe
#define MSR_IA32_MTRR_PHYSBASE0 0x200
#define MSR_IA32_MTRR_FIX64K 0x250
#define MSR_IA32_MTRR_FIX16K_80000 0x258
#define MSR_IA32_MTRR_FIX16K_A0000 0x259
#define MSR_IA32_MTRR_FIX4K_C0000 0x268
#define MSR_IA32_MTRR_FIX4K_F8000 0x26f
#define MSR_IA32_CR_PAT 0x277
#define MSR_IA32_MTRR_DEF_TYPE 0x2ff
#define MSR_IA32_VMX_FIRST 0x480
#define MSR_IA32_VMX_LAST 0x492
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_HYPERV_FIRST 0x40000000
#define MSR_HYPERV_LAST 0x400001ff
#define MSR_KVM_WALL_CLOCK 0x11
#define MSR_KVM_WALL_CLOCK_NEW 0x4b564d00
#define MSR_KVM_ASYNC_PF_INT 0x4b564d06

#define APIC_LVTT 0x320
#define APIC_TMICT 0x380
#define APIC_LVT_MASKED (1U << 16)
#define APIC_LVT_TIMER_MODE(v) (((v) >> 17) & 3)
#define APIC_LVT_TIMER_TSCDEADLINE 2

/* KVM_GET/SET_MSRS take fewer than 256 entries at a time (MAX_IO_MSRS). */
#define ST_MSR_CHUNK 240
#define ST_MAX_MSRS (8 * ST_MSR_CHUNK)
#define ST_MAX_CHUNKS (ST_MAX_MSRS / ST_MSR_CHUNK)

#define ST_MAGIC 0x5543504bU /* "KPCU" */
#define ST_VERSION 1

enum {
	ST_HDR,
	ST_VM,
	ST_MP_STATE,
	ST_REGS,
	ST_SREGS,
	ST_XSAVE,
	ST_XCRS,
	ST_DEBUGREGS,
	ST_LAPIC,
	ST_TSC,
	ST_CPUID,
	ST_MSRS,
	ST_EVENTS,
	ST_NKINDS
};

/* Kinds above the freestanding guests' (cpu.c): a blob of either platform
 * never reads as the other. */
#define ST_KIND_BASE 0x40
#define ST_TAG(id, kind) ((uint32_t)(id) << 16 | (ST_KIND_BASE + (kind)))

struct st_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t ncpus;
	uint32_t xsave_size;
	uint32_t nmsrs;
	uint32_t msr_crc; /* of the MSR index list, in order */
	uint32_t pad;
	uint64_t instance; /* the saving VM (kvm_state.instance) */
};

struct st_tsc {
	uint32_t khz;
	uint32_t has_offset; /* KVM_VCPU_TSC_OFFSET was readable */
	uint64_t offset;
};

struct st_msr_io {
	struct kvm_msrs hdr;
	struct kvm_msr_entry e[ST_MSR_CHUNK];
};

struct st_rec {
	const void *val;
	uint32_t len;
};

/* A blob being loaded: its records by vCPU and kind, checked. */
struct st_parsed {
	struct st_hdr hdr;
	struct st_rec rec[KVM_MAX_VCPUS][ST_NKINDS];
	struct st_rec msr[KVM_MAX_VCPUS][ST_MAX_CHUNKS];
	unsigned int nchunks[KVM_MAX_VCPUS];
	struct st_tsc tsc[KVM_MAX_VCPUS];
	uint64_t tsc_value[KVM_MAX_VCPUS]; /* the saved MSR_IA32_TSC */
	bool have_tsc_value[KVM_MAX_VCPUS];
	uint32_t lvtt[KVM_MAX_VCPUS];
};

/* How the vCPUs' TSCs are restored (st__plan_tsc). */
enum st_tsc_mode {
	ST_TSC_KEEP,   /* a VM loading its own state: left alone */
	ST_TSC_OFFSET, /* KVM_VCPU_TSC_OFFSET */
	ST_TSC_MSR,    /* MSR_IA32_TSC, KVM's write heuristics apply */
};

struct kvm_state {
	uint64_t instance; /* random, this VM's: a blob's saver is known */
	uint32_t xsave_size;
	bool xsave2, xcrs, tsc_offset, tsc_control;
	uint32_t nmsrs;
	uint32_t msr[ST_MAX_MSRS]; /* restore order: TSC first, deadline last */
	uint32_t msr_crc;
	unsigned int nexcluded; /* listed by KVM but not read and written */
	struct {
		struct kvm_cpuid2 *cpuid; /* as KVM holds it, before any run */
		uint32_t cpuid_len;
		uint32_t tsc_khz;
	} cpu[KVM_MAX_VCPUS];
	/* Reused every epoch. */
	void *xsave;
	void *tmp; /* aligned, writable copies of records for SET ioctls */
	size_t tmp_size;
	struct st_msr_io io;
	struct kvm_vm_state vm;
	struct st_parsed parsed;
};

/* --- probing, once at creation ------------------------------------------ */

static int st__get_msr(struct kvm_vcpu *v, struct kvm_state *st, uint32_t index,
		       uint64_t *val)
{
	st->io.hdr.nmsrs = 1;
	st->io.e[0] = (struct kvm_msr_entry){ .index = index };
	if (ioctl(v->fd, KVM_GET_MSRS, &st->io) != 1)
		return -EIO;
	*val = st->io.e[0].data;
	return 0;
}

static int st__set_msr(struct kvm_vcpu *v, struct kvm_state *st, uint32_t index,
		       uint64_t val)
{
	st->io.hdr.nmsrs = 1;
	st->io.e[0] = (struct kvm_msr_entry){ .index = index, .data = val };
	return ioctl(v->fd, KVM_SET_MSRS, &st->io) == 1 ? 0 : -EIO;
}

/* The order KVM needs on restore: the TSC first (the deadline is in TSC
 * cycles), the async-PF vector before async PF is enabled (QEMU's order),
 * the TSC deadline last, once the TSC and LAPIC timer mode are in. */
static int st__msr_rank(uint32_t index)
{
	switch (index) {
	case MSR_IA32_TSC:
		return 0;
	case MSR_KVM_ASYNC_PF_INT:
		return 1;
	case MSR_IA32_TSC_DEADLINE:
		return 3;
	default:
		return 2;
	}
}

static bool st__msr_excluded(uint32_t index)
{
	/*
	 * Hyper-V's: this guest's CPUID has no Hyper-V leaves, so it cannot
	 * use them, and KVM refuses host writes of some of their own values
	 * (SynIC). VMX capabilities: read-only reports fixed at creation,
	 * which newer KVMs refuse to rewrite once the vCPU ran.
	 */
	return (index >= MSR_HYPERV_FIRST && index <= MSR_HYPERV_LAST) ||
	       (index >= MSR_IA32_VMX_FIRST && index <= MSR_IA32_VMX_LAST);
}

static void st__add_candidate(uint32_t *list, uint32_t *n, uint32_t max,
			      uint32_t index)
{
	for (uint32_t i = 0; i < *n; i++)
		if (list[i] == index)
			return;
	if (*n < max && !st__msr_excluded(index))
		list[(*n)++] = index;
}

static const struct kvm_cpuid_entry2 *st__cpuid(const struct kvm_cpuid2 *c,
						uint32_t function)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == function)
			return &c->entries[i];
	return NULL;
}

/*
 * The MSRs to carry: KVM_GET_MSR_INDEX_LIST plus those the guest's CPUID
 * implies and the list leaves out (the MTRRs, PAT), each kept if vCPU 0
 * reads it and takes its own value back. Written back here, before the
 * guest exists: the values are the ones it starts with (reset, or set at
 * vCPU creation: the MTRRs). The wall clock is not
 * written (KVM would write the time into guest memory at 0): KVM takes
 * it like the other kvmclock MSRs.
 */
static int st__probe_msrs(struct kvm_vm *vm, struct kvm_state *st)
{
	struct kvm_vcpu *v0 = &vm->vcpus[0];
	const struct kvm_cpuid_entry2 *leaf1 = st__cpuid(st->cpu[0].cpuid, 1);
	struct kvm_msr_list probe = { .nmsrs = 0 }, *list;
	uint32_t *cand, ncand = 0, nlisted, max;
	uint64_t val;
	int err = 0;

	if (ioctl(vm->sys_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 &&
	    errno != E2BIG)
		return kemari_err(-errno, "KVM_GET_MSR_INDEX_LIST: %s",
				  strerror(errno));
	max = probe.nmsrs + 64;
	list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
	cand = calloc(max, sizeof(*cand));
	if (!list || !cand) {
		err = -ENOMEM;
		goto out;
	}
	list->nmsrs = probe.nmsrs;
	if (ioctl(vm->sys_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		err = kemari_err(-errno, "KVM_GET_MSR_INDEX_LIST: %s",
				 strerror(errno));
		goto out;
	}
	for (uint32_t i = 0; i < list->nmsrs; i++)
		st__add_candidate(cand, &ncand, max, list->indices[i]);
	nlisted = ncand;
	st__add_candidate(cand, &ncand, max, MSR_IA32_CR_PAT);
	if (leaf1 && (leaf1->edx & (1U << 12)) && /* MTRR */
	    !st__get_msr(v0, st, MSR_IA32_MTRRCAP, &val)) {
		uint32_t vcnt = KEMARI_MIN((uint32_t)(val & 0xff), 16U);

		for (uint32_t i = 0; i < 2 * vcnt; i++)
			st__add_candidate(cand, &ncand, max,
					  MSR_IA32_MTRR_PHYSBASE0 + i);
		st__add_candidate(cand, &ncand, max, MSR_IA32_MTRR_FIX64K);
		st__add_candidate(cand, &ncand, max,
				  MSR_IA32_MTRR_FIX16K_80000);
		st__add_candidate(cand, &ncand, max,
				  MSR_IA32_MTRR_FIX16K_A0000);
		for (uint32_t i = MSR_IA32_MTRR_FIX4K_C0000;
		     i <= MSR_IA32_MTRR_FIX4K_F8000; i++)
			st__add_candidate(cand, &ncand, max, i);
		st__add_candidate(cand, &ncand, max, MSR_IA32_MTRR_DEF_TYPE);
	}
	st->nmsrs = 0;
	for (uint32_t i = 0; i < ncand; i++) {
		uint32_t index = cand[i];

		if (st__get_msr(v0, st, index, &val)) {
			kemari_debug(
				"vCPU state: MSR 0x%x: KVM does not read it",
				index);
			continue;
		}
		if (index != MSR_IA32_TSC && index != MSR_KVM_WALL_CLOCK &&
		    index != MSR_KVM_WALL_CLOCK_NEW &&
		    st__set_msr(v0, st, index, val)) {
			kemari_debug(
				"vCPU state: MSR 0x%x: KVM refuses 0x%llx back",
				index, (unsigned long long)val);
			continue;
		}
		if (st->nmsrs == ST_MAX_MSRS) {
			err = kemari_err(-E2BIG,
					 "KVM lists more than %d MSRs to save",
					 ST_MAX_MSRS);
			goto out;
		}
		st->msr[st->nmsrs++] = index;
	}
	/* Stable insertion sort by restore rank (a hundred entries). */
	for (uint32_t i = 1; i < st->nmsrs; i++) {
		uint32_t x = st->msr[i], j = i;

		while (j > 0 &&
		       st__msr_rank(st->msr[j - 1]) > st__msr_rank(x)) {
			st->msr[j] = st->msr[j - 1];
			j--;
		}
		st->msr[j] = x;
	}
	st->nexcluded = ncand - st->nmsrs;
	st->msr_crc = kemari_crc32c(0, st->msr, st->nmsrs * sizeof(uint32_t));
	kemari_debug(
		"vCPU state: %u MSRs carried: KVM lists %u (%u left out: Hyper-V, VMX), CPUID implies %u more; %u of those not read and written back",
		st->nmsrs, list->nmsrs, list->nmsrs - nlisted, ncand - nlisted,
		st->nexcluded);
	for (uint32_t i = 0; i < st->nmsrs; i += 16) {
		char line[16 * 11 + 1];
		size_t used = 0;

		for (uint32_t j = i; j < st->nmsrs && j < i + 16; j++)
			used += (size_t)snprintf(line + used,
						 sizeof(line) - used, " %x",
						 st->msr[j]);
		kemari_debug("vCPU state: MSRs%s", line);
	}
out:
	free(list);
	free(cand);
	return err;
}

/* KVM_GET_CPUID2: what KVM made of KVM_SET_CPUID2 (firecracker#1942). */
static int st__read_cpuid(struct kvm_vcpu *v, struct kvm_state *st)
{
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		size_t len = sizeof(struct kvm_cpuid2) +
			     n * sizeof(struct kvm_cpuid_entry2);
		struct kvm_cpuid2 *c = calloc(1, len);

		if (!c)
			return -ENOMEM;
		c->nent = n;
		if (ioctl(v->fd, KVM_GET_CPUID2, c) == 0) {
			st->cpu[v->id].cpuid = c;
			st->cpu[v->id].cpuid_len =
				(uint32_t)(sizeof(*c) +
					   c->nent * sizeof(c->entries[0]));
			return 0;
		}
		free(c);
		if (errno != E2BIG)
			return kemari_err(-errno, "KVM_GET_CPUID2: %s",
					  strerror(errno));
	}
	return kemari_err(-E2BIG, "KVM_GET_CPUID2: too many entries");
}

int kvm_state__create(struct kvm_vm *vm)
{
	struct kvm_device_attr attr = { .group = KVM_VCPU_TSC_CTRL,
					.attr = KVM_VCPU_TSC_OFFSET };
	struct kvm_state *st = calloc(1, sizeof(*st));
	int r, err;

	if (!st)
		return -ENOMEM;
	vm->state = st;
	if (getrandom(&st->instance, sizeof(st->instance), 0) !=
	    sizeof(st->instance))
		st->instance = kemari_now_ns() ^ (uint64_t)getpid() << 32 ^
			       (uint64_t)(uintptr_t)st;
	r = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (r > 0) {
		st->xsave2 = true;
		st->xsave_size = KEMARI_MAX((uint32_t)r,
					    (uint32_t)sizeof(struct kvm_xsave));
	} else if (ioctl(vm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
		st->xsave_size = sizeof(struct kvm_xsave);
	} else {
		return kemari_err(
			-ENOTSUP,
			"this KVM cannot save a vCPU's FPU/SSE/AVX state (no KVM_CAP_XSAVE): a Linux guest cannot be replicated on it");
	}
	st->xcrs = ioctl(vm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
	st->tsc_control =
		ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0;
	st->tsc_offset =
		ioctl(vm->vcpus[0].fd, KVM_HAS_DEVICE_ATTR, &attr) == 0;
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		int khz = ioctl(vm->vcpus[i].fd, KVM_GET_TSC_KHZ, 0);

		st->cpu[i].tsc_khz = khz > 0 ? (uint32_t)khz : 0;
		err = st__read_cpuid(&vm->vcpus[i], st);
		if (err)
			return err;
	}
	/* The largest record st__set copies: XSAVE or the LAPIC. */
	st->tmp_size = KEMARI_MAX((size_t)st->xsave_size,
				  sizeof(struct kvm_lapic_state));
	st->xsave = aligned_alloc(64, KEMARI_ALIGN_UP(st->xsave_size, 64));
	st->tmp = aligned_alloc(64, KEMARI_ALIGN_UP(st->tmp_size, 64));
	if (!st->xsave || !st->tmp)
		return -ENOMEM;
	kemari_debug(
		"vCPU state: XSAVE %u bytes%s, XCRs %s, TSC %u kHz, TSC offset attribute %s, TSC scaling %s, CPUID %u leaves",
		st->xsave_size, st->xsave2 ? " (KVM_CAP_XSAVE2)" : "",
		st->xcrs ? "yes" : "no", st->cpu[0].tsc_khz,
		st->tsc_offset ? "yes" : "no", st->tsc_control ? "yes" : "no",
		st->cpu[0].cpuid->nent);
	return st__probe_msrs(vm, st);
}

void kvm_state__tsc(struct kvm_vm *vm, uint32_t *khz, bool *can_scale)
{
	const struct kvm_state *st = vm->state;

	*khz = st ? st->cpu[0].tsc_khz : 0;
	*can_scale = st && st->tsc_control;
}

void kvm_state__destroy(struct kvm_vm *vm)
{
	struct kvm_state *st = vm->state;

	if (!st)
		return;
	for (unsigned int i = 0; i < KVM_MAX_VCPUS; i++)
		free(st->cpu[i].cpuid);
	free(st->xsave);
	free(st->tmp);
	free(st);
	vm->state = NULL;
}

static const struct {
	uint32_t size; /* 0: checked elsewhere */
	bool required;
	const char *what;
} st_kinds[ST_NKINDS] = {
	[ST_HDR] = { sizeof(struct st_hdr), false, "header" },
	[ST_VM] = { sizeof(struct kvm_vm_state), false, "VM state" },
	[ST_MP_STATE] = { sizeof(struct kvm_mp_state), true, "MP state" },
	[ST_REGS] = { sizeof(struct kvm_regs), true, "registers" },
	[ST_SREGS] = { sizeof(struct kvm_sregs), true, "special registers" },
	[ST_XSAVE] = { 0, true, "XSAVE area" },
	[ST_XCRS] = { sizeof(struct kvm_xcrs), false, "XCRs" },
	[ST_DEBUGREGS] = { sizeof(struct kvm_debugregs), true,
			   "debug registers" },
	[ST_LAPIC] = { sizeof(struct kvm_lapic_state), true, "local APIC" },
	[ST_TSC] = { sizeof(struct st_tsc), true, "TSC" },
	[ST_CPUID] = { 0, true, "CPUID" },
	[ST_MSRS] = { 0, true, "MSRs" },
	[ST_EVENTS] = { sizeof(struct kvm_vcpu_events), true,
			"pending events" },
};

/* --- save, every epoch --------------------------------------------------- */

static int st__get(struct kvm_vcpu *v, unsigned long req, void *buf,
		   const char *what)
{
	if (ioctl(v->fd, req, buf) < 0)
		return kemari_err(-errno, "saving vCPU %u %s: %s", v->id, what,
				  strerror(errno));
	return 0;
}

/* The MSR list in chunks, each its own record, in restore order. */
static int st__save_msrs(struct kvm_vcpu *v, struct kvm_state *st,
			 struct kemari_buf *out)
{
	for (uint32_t off = 0; off < st->nmsrs; off += ST_MSR_CHUNK) {
		uint32_t n =
			KEMARI_MIN(st->nmsrs - off, (uint32_t)ST_MSR_CHUNK);
		int got, err;

		st->io.hdr.nmsrs = n;
		for (uint32_t i = 0; i < n; i++)
			st->io.e[i] = (struct kvm_msr_entry){
				.index = st->msr[off + i]
			};
		got = ioctl(v->fd, KVM_GET_MSRS, &st->io);
		if (got < 0)
			return kemari_err(-errno, "saving vCPU %u MSRs: %s",
					  v->id, strerror(errno));
		if ((uint32_t)got != n)
			return kemari_err(
				-EIO,
				"saving vCPU %u MSRs: KVM no longer reads MSR 0x%x",
				v->id, st->msr[off + (uint32_t)got]);
		err = kemari_tlv__put(out, ST_TAG(v->id, ST_MSRS), &st->io,
				      (uint32_t)(sizeof(st->io.hdr) +
						 n * sizeof(st->io.e[0])));
		if (err)
			return err;
	}
	return 0;
}

static int st__save_vcpu(struct kvm_vm *vm, struct kvm_state *st,
			 struct kvm_vcpu *v, struct kemari_buf *out)
{
	struct kvm_device_attr attr = { .group = KVM_VCPU_TSC_CTRL,
					.attr = KVM_VCPU_TSC_OFFSET };
	struct kvm_mp_state mp;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct st_tsc tsc = { .khz = st->cpu[v->id].tsc_khz };
	/* MP_STATE first: reading it makes KVM take a pending INIT or
	 * SIPI, which changes the LAPIC read after it. */
	const struct {
		unsigned int kind;
		unsigned long req; /* 0: KVM has none */
		void *buf;
		uint32_t size;
	} before_msrs[] = {
		{ ST_MP_STATE, KVM_GET_MP_STATE, &mp, sizeof(mp) },
		{ ST_REGS, KVM_GET_REGS, &v->last_regs, sizeof(v->last_regs) },
		{ ST_SREGS, KVM_GET_SREGS, &v->last_sregs,
		  sizeof(v->last_sregs) },
		{ ST_XSAVE, st->xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE,
		  st->xsave, st->xsave_size },
		{ ST_XCRS, st->xcrs ? KVM_GET_XCRS : 0, &xcrs, sizeof(xcrs) },
		{ ST_DEBUGREGS, KVM_GET_DEBUGREGS, &dbg, sizeof(dbg) },
		{ ST_LAPIC, KVM_GET_LAPIC, &lapic, sizeof(lapic) },
	};
	unsigned int id = v->id;
	int err = 0;

	for (unsigned int i = 0; i < KEMARI_ARRAY_SIZE(before_msrs); i++) {
		unsigned int k = before_msrs[i].kind;

		if (!before_msrs[i].req)
			continue;
		err = st__get(v, before_msrs[i].req, before_msrs[i].buf,
			      st_kinds[k].what);
		err = err
			      ?: kemari_tlv__put(out, ST_TAG(id, k),
						 before_msrs[i].buf,
						 before_msrs[i].size);
		if (err)
			return err;
	}
	v->have_last = true; /* the post-mortem's registers */
	if (st->tsc_offset) {
		attr.addr = (uint64_t)(uintptr_t)&tsc.offset;
		tsc.has_offset = ioctl(v->fd, KVM_GET_DEVICE_ATTR, &attr) == 0;
	}
	err = kemari_tlv__put(out, ST_TAG(id, ST_TSC), &tsc, sizeof(tsc));
	if (!err)
		err = kemari_tlv__put(out, ST_TAG(id, ST_CPUID),
				      st->cpu[id].cpuid, st->cpu[id].cpuid_len);
	/*
	 * The clock right before vCPU 0's MSRs, whose first is the TSC: the
	 * restore reads them back-to-back the same way, so the TSC follows
	 * the restored kvmclock without a systematic error.
	 */
	if (!err && id == 0)
		err = kvm_vm__get_clock(vm, &st->vm.clock);
	err = err ?: st__save_msrs(v, st, out);
	/* Events last: what is pending after everything above. */
	err = err ?: st__get(v, KVM_GET_VCPU_EVENTS, &ev, "pending events");
	if (!err)
		err = kemari_tlv__put(out, ST_TAG(id, ST_EVENTS), &ev,
				      sizeof(ev));
	return err;
}

int kvm_state__save(struct kvm_vm *vm, struct kemari_buf *out)
{
	struct kvm_state *st = vm->state;
	struct st_hdr hdr = {
		.magic = ST_MAGIC,
		.version = ST_VERSION,
		.ncpus = (uint16_t)vm->ncpus,
		.xsave_size = st->xsave_size,
		.nmsrs = st->nmsrs,
		.msr_crc = st->msr_crc,
		.instance = st->instance,
	};
	int err = kemari_tlv__put(out, ST_TAG(0, ST_HDR), &hdr, sizeof(hdr));

	for (unsigned int i = 0; i < vm->ncpus && !err; i++)
		err = st__save_vcpu(vm, st, &vm->vcpus[i], out);
	err = err ?: kvm_vm__get_state(vm, &st->vm);
	return err
		       ?: kemari_tlv__put(out, ST_TAG(0, ST_VM), &st->vm,
					  sizeof(st->vm));
}

/* --- load ---------------------------------------------------------------- */

/* One line naming the first CPUID leaf that differs. */
static int st__cpuid_mismatch(unsigned int id, const struct kvm_cpuid2 *here,
			      const void *val, uint32_t len)
{
	struct kvm_cpuid2 hdr;
	struct kvm_cpuid_entry2 e;

	if (len < sizeof(hdr))
		return kemari_err(-EBADMSG,
				  "vCPU state: vCPU %u CPUID is %u bytes", id,
				  len);
	memcpy(&hdr, val, sizeof(hdr));
	if (hdr.nent != here->nent || len != sizeof(hdr) + hdr.nent * sizeof(e))
		return kemari_err(
			-EINVAL,
			"vCPU %u CPUID has %u leaves on the primary but %u here: run both sides on the same CPU model and KVM",
			id, hdr.nent, here->nent);
	for (uint32_t i = 0; i < hdr.nent; i++) {
		const struct kvm_cpuid_entry2 *h = &here->entries[i];

		memcpy(&e, (const uint8_t *)val + sizeof(hdr) + i * sizeof(e),
		       sizeof(e));
		if (!memcmp(&e, h, sizeof(e)))
			continue;
		if (e.function != h->function || e.index != h->index)
			return kemari_err(
				-EINVAL,
				"vCPU %u CPUID: leaf 0x%x.%u on the primary where this host has 0x%x.%u: run both sides on the same CPU model and KVM",
				id, e.function, e.index, h->function, h->index);
		return kemari_err(
			-EINVAL,
			"vCPU %u CPUID leaf 0x%x.%u is %08x %08x %08x %08x on the primary but %08x %08x %08x %08x here: run both sides on the same CPU model and KVM",
			id, e.function, e.index, e.eax, e.ebx, e.ecx, e.edx,
			h->eax, h->ebx, h->ecx, h->edx);
	}
	return 0;
}

static bool st__msr_known(const struct kvm_state *st, uint32_t index)
{
	for (uint32_t i = 0; i < st->nmsrs; i++)
		if (st->msr[i] == index)
			return true;
	return false;
}

/* Check one MSR chunk and note the saved TSC. */
static int st__parse_msrs(struct kvm_state *st, struct st_parsed *p,
			  unsigned int id, const void *val, uint32_t len,
			  uint32_t *count)
{
	struct kvm_msrs hdr;

	if (len < sizeof(hdr))
		return kemari_err(-EBADMSG, "vCPU state: bad MSR record");
	memcpy(&hdr, val, sizeof(hdr));
	if (hdr.nmsrs == 0 || hdr.nmsrs > ST_MSR_CHUNK ||
	    len != sizeof(hdr) + hdr.nmsrs * sizeof(struct kvm_msr_entry) ||
	    p->nchunks[id] == ST_MAX_CHUNKS)
		return kemari_err(-EBADMSG, "vCPU state: bad MSR record");
	for (uint32_t i = 0; i < hdr.nmsrs; i++) {
		struct kvm_msr_entry e;

		memcpy(&e, (const uint8_t *)val + sizeof(hdr) + i * sizeof(e),
		       sizeof(e));
		if (e.index == MSR_IA32_TSC) {
			p->tsc_value[id] = e.data;
			p->have_tsc_value[id] = true;
		}
		/* Same list as here: nothing to look up. */
		if (p->hdr.msr_crc != st->msr_crc &&
		    !st__msr_known(st, e.index))
			return kemari_err(
				-EINVAL,
				"vCPU state: the primary saved MSR 0x%x, which KVM here does not restore: run both sides on the same CPU model and KVM",
				e.index);
	}
	p->msr[id][p->nchunks[id]++] = (struct st_rec){ val, len };
	*count += hdr.nmsrs;
	return 0;
}

/* TSC frequencies more than 250 ppm apart need KVM's TSC scaling. */
static int st__check_tsc_khz(struct kvm_state *st, unsigned int id,
			     uint32_t khz)
{
	uint32_t here = st->cpu[id].tsc_khz;
	uint64_t diff = khz > here ? khz - here : here - khz;

	if (!khz || !here || diff * 4000 <= here || st->tsc_control)
		return 0;
	return kemari_err(
		-EINVAL,
		"vCPU %u TSC runs at %u kHz on the primary but %u kHz here (more than 250 ppm apart) and this KVM cannot scale it: run both sides on hosts with the same TSC frequency",
		id, khz, here);
}

/* Every record in place, of the right size, and for this VM: nothing is
 * changed before the whole blob is known to fit. */
static int st__parse(struct kvm_vm *vm, struct kvm_state *st, const void *blob,
		     size_t len)
{
	struct st_parsed *p = &st->parsed;
	struct kemari_tlv_iter it = { blob, len };
	uint32_t tag, n, nmsr[KVM_MAX_VCPUS] = { 0 };
	const void *val;
	bool have_hdr = false;
	int r, err;

	memset(p, 0, sizeof(*p));
	while ((r = kemari_tlv__next(&it, &tag, &val, &n)) > 0) {
		unsigned int id = tag >> 16,
			     kind = (tag & 0xffff) - ST_KIND_BASE;

		if ((tag & 0xffff) < ST_KIND_BASE || kind >= ST_NKINDS)
			return kemari_err(
				-EBADMSG,
				"vCPU state: record 0x%x is not a PC vCPU's (both sides must run a Linux guest on the same kemari-run)",
				tag);
		if (kind == ST_HDR) {
			if (n != sizeof(p->hdr))
				return kemari_err(-EBADMSG,
						  "vCPU state: bad header");
			memcpy(&p->hdr, val, sizeof(p->hdr));
			if (p->hdr.magic != ST_MAGIC ||
			    p->hdr.version != ST_VERSION)
				return kemari_err(
					-EINVAL,
					"vCPU state version %u, this kemari-run reads %u: run the same build on both sides",
					p->hdr.version, ST_VERSION);
			if (p->hdr.ncpus != vm->ncpus)
				return kemari_err(
					-EINVAL,
					"vCPU state has %u vCPUs but this VM %u: use the same --cpus on both sides",
					p->hdr.ncpus, vm->ncpus);
			if (p->hdr.xsave_size != st->xsave_size)
				return kemari_err(
					-EINVAL,
					"vCPU XSAVE area is %u bytes on the primary but %u here: run both sides on the same CPU model and KVM",
					p->hdr.xsave_size, st->xsave_size);
			have_hdr = true;
			continue;
		}
		if (!have_hdr)
			return kemari_err(-EBADMSG,
					  "vCPU state: no header first");
		if (id >= vm->ncpus || (kind == ST_VM && id))
			return kemari_err(-EBADMSG,
					  "vCPU state names vCPU %u of %u", id,
					  vm->ncpus);
		if (kind == ST_MSRS) {
			err = st__parse_msrs(st, p, id, val, n, &nmsr[id]);
			if (err)
				return err;
			continue;
		}
		if (p->rec[id][kind].val)
			return kemari_err(-EBADMSG,
					  "vCPU state: vCPU %u %s twice", id,
					  st_kinds[kind].what);
		if ((st_kinds[kind].size && n != st_kinds[kind].size) ||
		    (kind == ST_XSAVE && n != st->xsave_size))
			return kemari_err(
				-EBADMSG,
				"vCPU state: vCPU %u %s is %u bytes, expected %u",
				id, st_kinds[kind].what, n,
				kind == ST_XSAVE ? st->xsave_size
						 : st_kinds[kind].size);
		if (kind == ST_XCRS && !st->xcrs)
			return kemari_err(
				-EINVAL,
				"vCPU state has XCRs but this KVM cannot set them (no KVM_CAP_XCRS): run both sides on the same KVM");
		if (kind == ST_CPUID) {
			err = st__cpuid_mismatch(id, st->cpu[id].cpuid, val, n);
			if (err)
				return err;
		}
		p->rec[id][kind] = (struct st_rec){ val, n };
	}
	if (r < 0)
		return kemari_err(r, "vCPU state blob is malformed");
	if (!have_hdr || !p->rec[0][ST_VM].val)
		return kemari_err(-EBADMSG,
				  "vCPU state: no header or no VM state");
	for (unsigned int id = 0; id < vm->ncpus; id++) {
		for (unsigned int k = 0; k < ST_NKINDS; k++)
			if (st_kinds[k].required && k != ST_MSRS &&
			    !p->rec[id][k].val)
				return kemari_err(
					-EBADMSG,
					"vCPU state: vCPU %u has no %s", id,
					st_kinds[k].what);
		if (nmsr[id] != p->hdr.nmsrs)
			return kemari_err(
				-EBADMSG,
				"vCPU state: vCPU %u has %u MSRs, the header says %u",
				id, nmsr[id], p->hdr.nmsrs);
		memcpy(&p->tsc[id], p->rec[id][ST_TSC].val, sizeof(p->tsc[id]));
		memcpy(&p->lvtt[id],
		       (const uint8_t *)p->rec[id][ST_LAPIC].val + APIC_LVTT,
		       sizeof(p->lvtt[id]));
		err = st__check_tsc_khz(st, id, p->tsc[id].khz);
		if (err)
			return err;
	}
	return 0;
}

static int st__set(struct kvm_vcpu *v, struct kvm_state *st, unsigned long req,
		   const struct st_rec *rec, const char *what)
{
	/* ioctl wants a writable, aligned copy; the blob may be neither. */
	memcpy(st->tmp, rec->val, rec->len);
	if (ioctl(v->fd, req, st->tmp) < 0)
		return kemari_err(-errno, "restoring vCPU %u %s: %s", v->id,
				  what, strerror(errno));
	return 0;
}

/* Guest TSC cycles in ns nanoseconds at khz. */
static int64_t st__cycles(int64_t ns, uint32_t khz)
{
	return (int64_t)((__int128)ns * khz / 1000000);
}

/*
 * Where the vCPUs' TSCs go: on from the saved values by exactly the time
 * kvmclock was moved on (kvm_vm__set_state), so TSC and kvmclock keep the
 * relation they had, as the KVM documentation's migration recipe for
 * KVM_VCPU_TSC_OFFSET does. With the offset attribute, every vCPU gets
 * vCPU 0's new offset plus its own saved difference to vCPU 0 (so their
 * mutual skew is the saved one, zero for Linux); without it, the TSC MSR
 * takes the value, and KVM's TSC-write heuristics apply.
 *
 * A VM loading its own state (the restore self-check) keeps its TSCs, as
 * it keeps its kvmclock (vm.c): only time moved them, as it would have
 * without the pause. Any TSC write re-anchors KVM's TSC, and where KVM
 * treats the host TSC as unstable the guest's TSC lags that anchor
 * between KVM's catch-ups, so writing back a value read while paused
 * every epoch locks the lag in: in the emulated test VM the guest's TSC
 * fell behind its kvmclock by ~2 ms per epoch and its clocksource
 * watchdog threw the TSC out.
 *
 * Fills target[] (the TSC values, for the zero-deadline case too) and,
 * for ST_TSC_OFFSET, offset[].
 */
static int st__plan_tsc(struct kvm_vm *vm, struct kvm_state *st,
			uint64_t *target, uint64_t *offset,
			enum st_tsc_mode *mode)
{
	struct st_parsed *p = &st->parsed;
	struct kvm_vcpu *v0 = &vm->vcpus[0];
	struct kvm_device_attr attr = { .group = KVM_VCPU_TSC_CTRL,
					.attr = KVM_VCPU_TSC_OFFSET };
	struct kvm_vm_clock now;
	uint64_t tsc0, ofs0;
	int64_t elapsed;
	int err;

	if (p->hdr.instance == st->instance) {
		*mode = ST_TSC_KEEP;
		memcpy(target, p->tsc_value, vm->ncpus * sizeof(*target));
		return 0;
	}
	*mode = st->tsc_offset ? ST_TSC_OFFSET : ST_TSC_MSR;
	for (unsigned int i = 0; i < vm->ncpus; i++)
		if (!p->have_tsc_value[i] || !p->tsc[i].has_offset)
			*mode = ST_TSC_MSR;
	/* Clock, then TSC, as saved (st__save_vcpu). */
	err = kvm_vm__get_clock(vm, &now);
	if (err)
		return err;
	elapsed = (int64_t)(now.kvm.clock - st->vm.clock.kvm.clock);
	for (unsigned int i = 0; i < vm->ncpus; i++)
		target[i] = p->tsc_value[i] +
			    (uint64_t)st__cycles(elapsed, p->tsc[i].khz);
	if (*mode != ST_TSC_OFFSET)
		return 0;
	attr.addr = (uint64_t)(uintptr_t)&ofs0;
	if (st__get_msr(v0, st, MSR_IA32_TSC, &tsc0) ||
	    ioctl(v0->fd, KVM_GET_DEVICE_ATTR, &attr) < 0)
		return kemari_err(-EIO, "reading vCPU 0's TSC and offset");
	/* tsc0 - ofs0 is the host's (scaled) TSC as vCPU 0 sees it now. */
	for (unsigned int i = 0; i < vm->ncpus; i++)
		offset[i] = target[0] - (tsc0 - ofs0) +
			    (p->tsc[i].offset - p->tsc[0].offset);
	return 0;
}

/*
 * One chunk of MSRs into KVM. The TSC is left out when kept or when its
 * offset was set instead, else it takes its target. A zero TSC_DEADLINE
 * with the LAPIC timer armed in TSC-deadline mode means the timer fired
 * and the guest has not re-armed it yet: it gets the TSC itself, so it
 * fires again at once instead of never (firecracker PR #4618).
 */
static int st__set_msrs(struct kvm_vcpu *v, struct kvm_state *st,
			const struct st_rec *rec, uint64_t target,
			enum st_tsc_mode mode)
{
	const struct st_parsed *p = &st->parsed;
	uint32_t lvtt = p->lvtt[v->id], n = 0, total;
	struct kvm_msrs hdr;
	int set;

	memcpy(&hdr, rec->val, sizeof(hdr));
	total = hdr.nmsrs;
	for (uint32_t i = 0; i < total; i++) {
		struct kvm_msr_entry *e = &st->io.e[n];

		memcpy(e,
		       (const uint8_t *)rec->val + sizeof(hdr) + i * sizeof(*e),
		       sizeof(*e));
		if (e->index == MSR_IA32_TSC) {
			if (mode != ST_TSC_MSR)
				continue;
			e->data = target;
		} else if (e->index == MSR_IA32_TSC_DEADLINE && !e->data &&
			   p->have_tsc_value[v->id] &&
			   !(lvtt & APIC_LVT_MASKED) &&
			   APIC_LVT_TIMER_MODE(lvtt) ==
				   APIC_LVT_TIMER_TSCDEADLINE) {
			e->data = target;
		}
		n++;
	}
	st->io.hdr.nmsrs = n;
	set = ioctl(v->fd, KVM_SET_MSRS, &st->io);
	if (set < 0)
		return kemari_err(-errno, "restoring vCPU %u MSRs: %s", v->id,
				  strerror(errno));
	if ((uint32_t)set != n)
		return kemari_err(
			-EINVAL,
			"restoring vCPU %u MSRs: KVM refused MSR 0x%x = 0x%llx",
			v->id, st->io.e[set].index,
			(unsigned long long)st->io.e[set].data);
	return 0;
}

/*
 * One vCPU, in the order Firecracker restores (and KVM needs): MP_STATE
 * first, REGS, SREGS, XSAVE, XCRS, DEBUGREGS; the LAPIC before the MSRs
 * (a TSC deadline is dropped unless the LAPIC timer is already in
 * TSC-deadline mode: kata-containers PR #13798); the TSC before the rest
 * of the MSRs (firecracker#4099); the events last, as setting registers
 * clears pending exceptions.
 */
static int st__load_vcpu(struct kvm_vcpu *v, struct kvm_state *st,
			 uint64_t target, uint64_t offset,
			 enum st_tsc_mode mode)
{
	static const struct {
		unsigned int kind;
		unsigned long req;
	} before_msrs[] = {
		{ ST_MP_STATE, KVM_SET_MP_STATE },
		{ ST_REGS, KVM_SET_REGS },
		{ ST_SREGS, KVM_SET_SREGS },
		{ ST_XSAVE, KVM_SET_XSAVE },
		{ ST_XCRS, KVM_SET_XCRS },
		{ ST_DEBUGREGS, KVM_SET_DEBUGREGS },
		{ ST_LAPIC, KVM_SET_LAPIC },
	};
	struct st_rec *rec = st->parsed.rec[v->id];
	struct kvm_device_attr attr = { .group = KVM_VCPU_TSC_CTRL,
					.attr = KVM_VCPU_TSC_OFFSET,
					.addr = (uint64_t)(uintptr_t)&offset };
	int err;

	for (unsigned int i = 0; i < KEMARI_ARRAY_SIZE(before_msrs); i++) {
		unsigned int k = before_msrs[i].kind;

		if (!rec[k].val) /* XCRs: only where KVM has them */
			continue;
		err = st__set(v, st, before_msrs[i].req, &rec[k],
			      st_kinds[k].what);
		if (err)
			return err;
	}
	if (mode == ST_TSC_OFFSET &&
	    ioctl(v->fd, KVM_SET_DEVICE_ATTR, &attr) < 0)
		return kemari_err(-errno, "restoring vCPU %u TSC offset: %s",
				  v->id, strerror(errno));
	for (unsigned int c = 0; c < st->parsed.nchunks[v->id]; c++) {
		err = st__set_msrs(v, st, &st->parsed.msr[v->id][c], target,
				   mode);
		if (err)
			return err;
	}
	err = st__set(v, st, KVM_SET_VCPU_EVENTS, &rec[ST_EVENTS],
		      "pending events");
	if (err)
		return err;
	memcpy(&v->last_regs, rec[ST_REGS].val, sizeof(v->last_regs));
	memcpy(&v->last_sregs, rec[ST_SREGS].val, sizeof(v->last_sregs));
	v->have_last = true;
	return 0;
}

/*
 * At a takeover, one line per vCPU: its TSC and LAPIC timer as KVM now
 * holds them, so that a guest whose timers stay silent after a takeover
 * can be told from one whose deadline lies far ahead.
 */
static void st__report_timer(struct kvm_vm *vm, struct kvm_state *st,
			     const uint64_t *target, enum st_tsc_mode mode)
{
	static const char *const how[] = { "kept", "offset", "MSR" };

	for (unsigned int i = 0; i < vm->ncpus; i++) {
		struct kvm_vcpu *v = &vm->vcpus[i];
		struct kvm_lapic_state *l = (struct kvm_lapic_state *)st->tmp;
		uint64_t tsc = 0, dl = 0;
		uint32_t lvtt = 0, tmict = 0;

		st__get_msr(v, st, MSR_IA32_TSC, &tsc);
		st__get_msr(v, st, MSR_IA32_TSC_DEADLINE, &dl);
		if (ioctl(v->fd, KVM_GET_LAPIC, l) == 0) {
			memcpy(&lvtt, l->regs + APIC_LVTT, sizeof(lvtt));
			memcpy(&tmict, l->regs + APIC_TMICT, sizeof(tmict));
		}
		kemari_info(
			"vCPU %u restored: TSC %llu (saved %llu, set by %s to %llu), TSC deadline %+lld cycles from now, LVTT %08x, timer count %u",
			i, (unsigned long long)tsc,
			(unsigned long long)st->parsed.tsc_value[i], how[mode],
			(unsigned long long)target[i],
			dl ? (long long)(dl - tsc) : 0LL, lvtt, tmict);
	}
}

int kvm_state__load(struct kvm_vm *vm, const void *blob, size_t len)
{
	struct kvm_state *st = vm->state;
	uint64_t target[KVM_MAX_VCPUS], offset[KVM_MAX_VCPUS];
	enum st_tsc_mode mode;
	int err = st__parse(vm, st, blob, len);

	if (err)
		return err;
	/* A frequency that differs (checked above): KVM scales it. */
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		uint32_t khz = st->parsed.tsc[i].khz;

		if (!khz || khz == st->cpu[i].tsc_khz)
			continue;
		if (ioctl(vm->vcpus[i].fd, KVM_SET_TSC_KHZ, khz) < 0)
			return kemari_err(
				-errno,
				"vCPU %u TSC: cannot scale this host's %u kHz to the primary's %u kHz: %s",
				i, st->cpu[i].tsc_khz, khz, strerror(errno));
		st->cpu[i].tsc_khz = khz;
	}
	/* The VM's clock and interrupt controllers first (vm.c says why);
	 * a VM loading its own state keeps its clock and TSCs running. */
	memcpy(&st->vm, st->parsed.rec[0][ST_VM].val, sizeof(st->vm));
	err = kvm_vm__set_state(vm, &st->vm,
				st->parsed.hdr.instance != st->instance);
	err = err ?: st__plan_tsc(vm, st, target, offset, &mode);
	for (unsigned int i = 0; i < vm->ncpus && !err; i++)
		err = st__load_vcpu(&vm->vcpus[i], st, target[i], offset[i],
				    mode);
	if (err)
		return err;
	if (mode != ST_TSC_KEEP) /* a takeover, not the self-check */
		st__report_timer(vm, st, target, mode);
	vm->loaded = true;
	return 0;
}

int kvm_state__kvmclock_ctrl(struct kvm_vm *vm)
{
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		/* EINVAL: this vCPU's guest does not use kvmclock. */
		if (ioctl(vm->vcpus[i].fd, KVM_KVMCLOCK_CTRL, 0) < 0 &&
		    errno != EINVAL && errno != ENOTTY)
			return kemari_err(-errno, "KVM_KVMCLOCK_CTRL: %s",
					  strerror(errno));
	}
	return 0;
}
