// SPDX-License-Identifier: MIT
/*
 * The vCPU state blob a secondary loads at takeover (hv/kvm/state.c): its
 * records are checked (st__parse: header, vCPU ids, kinds, sizes, MSR
 * chunks, CPUID against this host's, TSC frequency) before any ioctl. The
 * parser is static and reads the probed layout (struct kvm_state, private
 * to state.c), so this file compiles state.c itself and fills that layout
 * as probing would on a small host; nothing here calls KVM. Input: one
 * byte (bit 0: two vCPUs, bit 1: KVM sets XCRs, bit 2: the primary's MSR
 * list differs), then the blob.
 */
#include "state.c"

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_XSAVE 4096
#define FUZZ_NENT 2
#define FUZZ_TSC_KHZ 2000000

static const uint32_t fuzz_msrs[] = { MSR_IA32_TSC, MSR_IA32_CR_PAT,
				      MSR_IA32_TSC_DEADLINE };
static struct kvm_vm *vm;
static struct kvm_state *st;

static void setup(void)
{
	vm = calloc(1, sizeof(*vm));
	st = calloc(1, sizeof(*st));
	if (!vm || !st)
		abort();
	vm->state = st;
	st->xsave_size = FUZZ_XSAVE;
	st->nmsrs = KEMARI_ARRAY_SIZE(fuzz_msrs);
	memcpy(st->msr, fuzz_msrs, sizeof(fuzz_msrs));
	st->msr_crc = kemari_crc32c(0, st->msr, st->nmsrs * sizeof(uint32_t));
	for (unsigned int i = 0; i < KVM_MAX_VCPUS; i++) {
		struct kvm_cpuid2 *c = calloc(
			1, sizeof(*c) + FUZZ_NENT * sizeof(c->entries[0]));

		if (!c)
			abort();
		c->nent = FUZZ_NENT;
		c->entries[0] =
			(struct kvm_cpuid_entry2){ .function = 0, .eax = 0xd };
		c->entries[1] = (struct kvm_cpuid_entry2){ .function = 1,
							   .eax = 0x806f8 };
		st->cpu[i].cpuid = c;
		st->cpu[i].cpuid_len =
			sizeof(*c) + FUZZ_NENT * sizeof(c->entries[0]);
		st->cpu[i].tsc_khz = FUZZ_TSC_KHZ;
	}
	fuzz__quiet();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t saved_crc;
	int err;

	if (!vm)
		setup();
	if (size < 1)
		return 0;
	vm->ncpus = data[0] & 1 ? 2 : 1;
	st->xcrs = data[0] & 2;
	saved_crc = st->msr_crc;
	if (data[0] & 4)
		st->msr_crc ^= 1; /* the blob's list must be looked up */
	err = st__parse(vm, st, data + 1, size - 1);
	st->msr_crc = saved_crc;
	kemari_debug("vCPU state: %s", err ? kemari_last_error(err) : "fits");
	if (!err) {
		/* What the load goes on to use is all there, whole. */
		for (unsigned int id = 0; id < vm->ncpus; id++)
			for (unsigned int k = 0; k < ST_NKINDS; k++)
				if (st_kinds[k].required && k != ST_MSRS &&
				    (!st->parsed.rec[id][k].val ||
				     (st_kinds[k].size &&
				      st->parsed.rec[id][k].len !=
					      st_kinds[k].size)))
					abort();
	}
	kemari_err_clear();
	return 0;
}

static void put(struct kemari_buf *b, unsigned int id, unsigned int kind,
		const void *p, uint32_t len)
{
	if (kemari_tlv__put(b, ST_TAG(id, kind), p, len))
		abort();
}

/* A blob as kvm_state__save writes it on the host setup() describes. */
static void seed_blob(const char *name, unsigned int ncpus)
{
	static uint8_t zero[FUZZ_XSAVE];
	struct st_hdr hdr = { .magic = ST_MAGIC,
			      .version = ST_VERSION,
			      .ncpus = (uint16_t)ncpus,
			      .xsave_size = FUZZ_XSAVE,
			      .nmsrs = KEMARI_ARRAY_SIZE(fuzz_msrs) };
	struct st_tsc tsc = { .khz = FUZZ_TSC_KHZ, .has_offset = 1 };
	struct kemari_buf b = { 0 };
	uint8_t byte = ncpus == 2 ? 1 : 0;

	if (!vm)
		setup();
	hdr.msr_crc = st->msr_crc;
	kemari_buf__append(&b, &byte, 1);
	put(&b, 0, ST_HDR, &hdr, sizeof(hdr));
	for (unsigned int id = 0; id < ncpus; id++) {
		struct st_msr_io io = { .hdr.nmsrs = hdr.nmsrs };

		for (uint32_t i = 0; i < hdr.nmsrs; i++)
			io.e[i].index = fuzz_msrs[i];
		put(&b, id, ST_MP_STATE, zero, sizeof(struct kvm_mp_state));
		put(&b, id, ST_SREGS, zero, sizeof(struct kvm_sregs));
		put(&b, id, ST_REGS, zero, sizeof(struct kvm_regs));
		put(&b, id, ST_XSAVE, zero, FUZZ_XSAVE);
		put(&b, id, ST_DEBUGREGS, zero, sizeof(struct kvm_debugregs));
		put(&b, id, ST_LAPIC, zero, sizeof(struct kvm_lapic_state));
		put(&b, id, ST_TSC, &tsc, sizeof(tsc));
		put(&b, id, ST_CPUID, st->cpu[id].cpuid, st->cpu[id].cpuid_len);
		put(&b, id, ST_MSRS, &io,
		    (uint32_t)(sizeof(io.hdr) + hdr.nmsrs * sizeof(io.e[0])));
		put(&b, id, ST_EVENTS, zero, sizeof(struct kvm_vcpu_events));
	}
	put(&b, 0, ST_VM, zero, sizeof(struct kvm_vm_state));
	fuzz__seed(name, b.data, b.len);
	kemari_buf__fini(&b);
}

void fuzz_seeds(void)
{
	seed_blob("one-vcpu", 1);
	seed_blob("two-vcpus", 2);
}
