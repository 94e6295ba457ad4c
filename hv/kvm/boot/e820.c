// SPDX-License-Identifier: MIT
/*
 * The guest-physical memory map of a Linux guest: the e820 table handed over
 * in the zero page and the KVM memory slots backing it. Both come from the
 * same few constants so they cannot disagree.
 */
#include <errno.h>

#include "kemari/kemari.h"
#include "linux_boot.h"

static void e820__set(struct boot_e820_entry *e, uint64_t start, uint64_t end,
		      uint32_t type)
{
	e->addr = start;
	e->size = end - start;
	e->type = type;
}

int kvm_e820__build(uint64_t ram_size, struct boot_e820_entry *tab,
		    unsigned int max)
{
	uint64_t low = kvm_e820__below_hole(ram_size);
	unsigned int n = ram_size > KVM_E820_PCI_HOLE_START ? 5 : 4;

	if (ram_size <= KVM_E820_HIGH_START)
		return kemari_err(
			-EINVAL,
			"--mem of %llu KiB leaves no RAM above 1 MiB for a Linux guest: raise --mem",
			(unsigned long long)(ram_size >> 10));
	if (max < n)
		return -ENOSPC;
	/*
	 * The EBDA and BIOS ranges are reserved, not RAM, so the kernel
	 * leaves the MP table there alone; [0xa0000, 0xf0000) is a hole
	 * (VGA and option ROMs on a PC).
	 */
	e820__set(&tab[0], 0, KVM_E820_EBDA_START, KVM_E820_RAM);
	e820__set(&tab[1], KVM_E820_EBDA_START, KVM_E820_EBDA_END,
		  KVM_E820_RESERVED);
	e820__set(&tab[2], KVM_E820_BIOS_START, KVM_E820_HIGH_START,
		  KVM_E820_RESERVED);
	e820__set(&tab[3], KVM_E820_HIGH_START, low, KVM_E820_RAM);
	if (n == 5)
		e820__set(&tab[4], KVM_E820_PCI_HOLE_END,
			  KVM_E820_PCI_HOLE_END + (ram_size - low),
			  KVM_E820_RAM);
	return (int)n;
}

int kvm_e820__slots(uint64_t ram_size, struct kvm_e820_slot *slots,
		    unsigned int max)
{
	uint64_t low = kvm_e820__below_hole(ram_size);
	unsigned int n = ram_size > low ? 2 : 1;

	if (!ram_size)
		return -EINVAL;
	if (max < n)
		return -ENOSPC;
	/* The low slot also backs the EBDA/BIOS ranges: reserved, not absent. */
	slots[0] = (struct kvm_e820_slot){
		.gpa = 0,
		.size = low,
		.host_off = 0,
	};
	if (n == 2)
		slots[1] = (struct kvm_e820_slot){
			.gpa = KVM_E820_PCI_HOLE_END,
			.size = ram_size - low,
			.host_off = low,
		};
	return (int)n;
}
