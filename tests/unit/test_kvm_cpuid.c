// SPDX-License-Identifier: MIT
/*
 * The guest's CPUID as the VMM makes it from KVM's supported one
 * (kvm_cpuid__adjust): APIC and topology IDs per vCPU, the hypervisor bit,
 * TSC-deadline only with the in-kernel LAPIC, and 5-level paging (LA57)
 * hidden unless asked for (KEMARI_KVM_LA57=1): a guest's CPU must be one
 * the secondary's host can give it too; the XCR0 a guest starts with
 * (kvm_cpuid__xcr0); whether KVM pages by shadow page tables
 * (kvm_vm__shadow_paging_of).
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>

#include "../../hv/kvm/kvm.h"

#define LA57 (1U << 16)

static struct kvm_cpuid2 *table(void)
{
	struct kvm_cpuid2 *c =
		calloc(1, sizeof(*c) + 5 * sizeof(c->entries[0]));

	cr_assert(c != NULL);
	c->nent = 5;
	c->entries[0] = (struct kvm_cpuid_entry2){ .function = 1,
						   .ebx = 0x07020800,
						   .ecx = 0x00000001 };
	/* Leaf 7, subleaf 0: LA57 and two neighbours (UMIP, PKU). */
	c->entries[1] = (struct kvm_cpuid_entry2){
		.function = 7, .index = 0, .ecx = LA57 | (1U << 2) | (1U << 3)
	};
	/* Subleaf 1 of leaf 7 has other bits at 16: left alone. */
	c->entries[2] = (struct kvm_cpuid_entry2){ .function = 7,
						   .index = 1,
						   .ecx = LA57 };
	c->entries[3] = (struct kvm_cpuid_entry2){ .function = 0xb, .edx = 99 };
	c->entries[4] =
		(struct kvm_cpuid_entry2){ .function = 0x1f, .edx = 99 };
	return c;
}

Test(kvm_cpuid, la57_is_hidden_and_nothing_else_in_leaf_7)
{
	struct kvm_cpuid2 *c = table();

	kvm_cpuid__adjust(c, 0, false, false);
	cr_assert(eq(u32, c->entries[1].ecx, (1U << 2) | (1U << 3)));
	cr_assert(eq(u32, c->entries[2].ecx, LA57), "subleaf 1 untouched");
	free(c);
}

Test(kvm_cpuid, la57_is_kept_when_asked_for)
{
	struct kvm_cpuid2 *c = table();

	kvm_cpuid__adjust(c, 0, false, true);
	cr_assert(eq(u32, c->entries[1].ecx, LA57 | (1U << 2) | (1U << 3)));
	free(c);
}

Test(kvm_cpuid, each_vcpu_has_its_own_ids_and_the_hypervisor_bit)
{
	struct kvm_cpuid2 *c = table();

	kvm_cpuid__adjust(c, 3, false, false);
	cr_assert(eq(u32, c->entries[0].ebx, 0x03020800),
		  "APIC ID in EBX[31:24]");
	cr_assert(eq(u32, c->entries[0].ecx, 0x80000001),
		  "hypervisor bit, no deadline");
	cr_assert(eq(u32, c->entries[3].edx, 3));
	cr_assert(eq(u32, c->entries[4].edx, 3));
	free(c);
}

Test(kvm_cpuid, tsc_deadline_only_with_the_in_kernel_lapic)
{
	struct kvm_cpuid2 *c = table();

	kvm_cpuid__adjust(c, 0, true, false);
	cr_assert(eq(u32, c->entries[0].ecx, 0x81000001));
	free(c);
}

/*
 * kvm_cpuid__xcr0: the XCR0 a guest starts with is what Linux will set,
 * every component of leaf 0xD whose feature CPUID offers: KVM without
 * nested paging (kvm_amd.npt=0) drops PKU but keeps PKRU in leaf 0xD, and
 * a preset XCR0 with PKRU then disagreed with the guest's own (Linux:
 * "XSAVE consistency problem: size 832 != kernel_size 2696").
 */
static struct kvm_cpuid2 *xsave_table(bool pku)
{
	struct kvm_cpuid2 *c =
		calloc(1, sizeof(*c) + 5 * sizeof(c->entries[0]));

	cr_assert(c != NULL);
	c->nent = 5;
	c->entries[0] = (struct kvm_cpuid_entry2){
		.function = 1, .ecx = (1U << 26) | (1U << 28) /* XSAVE AVX */
	};
	c->entries[1] = (struct kvm_cpuid_entry2){
		.function = 7, .index = 0, .ecx = pku ? 1U << 3 : 0
	};
	c->entries[2] = (struct kvm_cpuid_entry2){ .function = 0xd,
						   .index = 0,
						   .eax = 0x207,
						   .ecx = 2696 };
	c->entries[3] = (struct kvm_cpuid_entry2){
		.function = 0xd, .index = 2, .eax = 256, .ebx = 576
	};
	c->entries[4] = (struct kvm_cpuid_entry2){
		.function = 0xd, .index = 9, .eax = 8, .ebx = 2688
	};
	return c;
}

Test(kvm_cpuid, xcr0_leaves_out_pkru_without_pku)
{
	struct kvm_cpuid2 *c = xsave_table(false);

	cr_assert(eq(u64, kvm_cpuid__xcr0(c), 0x7));
	cr_assert(eq(u32, c->entries[2].eax, 0x7));
	cr_assert(eq(u32, c->entries[2].ecx, 832));
	free(c);
}

Test(kvm_cpuid, xcr0_keeps_pkru_with_pku)
{
	struct kvm_cpuid2 *c = xsave_table(true);

	cr_assert(eq(u64, kvm_cpuid__xcr0(c), 0x207));
	cr_assert(eq(u32, c->entries[2].eax, 0x207));
	cr_assert(eq(u32, c->entries[2].ecx, 2696));
	free(c);
}

Test(kvm_cpuid, xcr0_leaves_out_avx_without_its_feature_bit)
{
	struct kvm_cpuid2 *c = xsave_table(true);

	c->entries[0].ecx &= ~(1U << 28);
	cr_assert(eq(u64, kvm_cpuid__xcr0(c), 0x203));
	cr_assert(eq(u32, c->entries[2].ecx, 2696));
	free(c);
}

/*
 * kvm_vm__shadow_paging_of: where KVM pages guests by shadow page tables,
 * --dirty-track=auto takes the bitmap (KVM overran its dirty ring there).
 */
Test(kvm_paging, shadow_without_vmx_or_svm)
{
	cr_assert(kvm_vm__shadow_paging_of("flags\t: fpu vme pae lm", 0, 0));
}

Test(kvm_paging, nested_paging_with_svm_and_npt_on)
{
	cr_assert(not(kvm_vm__shadow_paging_of("flags\t: fpu svm npt", 'Y', 0)));
	cr_assert(not(kvm_vm__shadow_paging_of("flags\t: fpu vmx ept", 0, 'Y')));
}

Test(kvm_paging, shadow_with_npt_or_ept_off)
{
	cr_assert(kvm_vm__shadow_paging_of("flags\t: fpu svm npt", 'N', 0));
	cr_assert(kvm_vm__shadow_paging_of("flags\t: fpu vmx ept", 0, 'N'));
	cr_assert(kvm_vm__shadow_paging_of("flags\t: fpu vmx ept", 0, '0'));
}

Test(kvm_paging, no_flags_line_is_not_shadow)
{
	cr_assert(not(kvm_vm__shadow_paging_of(NULL, 'N', 0)));
}
