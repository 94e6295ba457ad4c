// SPDX-License-Identifier: MIT
/*
 * Intel MultiProcessor Specification 1.4 table: how a Linux guest without
 * ACPI learns its CPUs, its IOAPIC and how interrupts are wired
 * (arch/x86/kernel/mpparse.c). Linux finds the 16-byte floating pointer by
 * scanning 16-byte steps of the first KiB, of [0x9fc00, 0xa0000) and of the
 * BIOS area, checks its and the configuration table's checksums, then walks
 * the entries by type; an unknown type makes it give up on the rest.
 */
#include <errno.h>
#include <string.h>

#include "kemari/kemari.h"
#include "linux_boot.h"

_Static_assert(sizeof(struct kvm_mpf) == 16, "MP floating pointer");
_Static_assert(sizeof(struct kvm_mpc_table) == 44, "MP config header");
_Static_assert(sizeof(struct kvm_mpc_cpu) == 20, "MP processor entry");
_Static_assert(sizeof(struct kvm_mpc_bus) == 8, "MP bus entry");
_Static_assert(sizeof(struct kvm_mpc_ioapic) == 8, "MP IOAPIC entry");
_Static_assert(sizeof(struct kvm_mpc_intsrc) == 8, "MP interrupt entry");
_Static_assert(sizeof(struct kvm_mpc_lintsrc) == 8, "MP local int entry");

#define MP_OEM "KEMARI  "	  /* 8 bytes, space padded */
#define MP_PRODUCT "KEMARI-RDMA " /* 12 bytes */
/*
 * Linux ignores the CPU signature and features here (it asks CPUID); a
 * family 6 CPU with FPU and APIC (CPUID.1:EDX bits 0 and 9) is a plain PC.
 */
#define MP_CPU_SIGNATURE (6U << 8)
#define MP_CPU_FEATURES ((1U << 0) | (1U << 9))
#define MP_ISA_TIMER_PIN 2 /* the PIT's IRQ 0 reaches IOAPIC pin 2 */
#define MP_ISA_CASCADE_IRQ 2

static uint8_t mp__checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return (uint8_t)-sum;
}

size_t kvm_mptable__size(unsigned int ncpus, unsigned int npci)
{
	return sizeof(struct kvm_mpf) + sizeof(struct kvm_mpc_table) +
	       ncpus * sizeof(struct kvm_mpc_cpu) +
	       2 * sizeof(struct kvm_mpc_bus) + sizeof(struct kvm_mpc_ioapic) +
	       (KVM_MP_ISA_IRQS + npci) * sizeof(struct kvm_mpc_intsrc) +
	       2 * sizeof(struct kvm_mpc_lintsrc);
}

static void mp__intsrc(uint8_t **pos, uint16_t flags, uint8_t bus,
		       uint8_t busirq, uint8_t ioapic, uint8_t pin)
{
	struct kvm_mpc_intsrc e = {
		.type = KVM_MP_INTSRC,
		.irqtype = KVM_MP_INT,
		.irqflag = flags,
		.srcbus = bus,
		.srcbusirq = busirq,
		.dstapic = ioapic,
		.dstirq = pin,
	};

	memcpy(*pos, &e, sizeof(e));
	*pos += sizeof(e);
}

static void mp__lintsrc(uint8_t **pos, uint8_t type, uint8_t lint)
{
	struct kvm_mpc_lintsrc e = {
		.type = KVM_MP_LINTSRC,
		.irqtype = type,
		.irqflag = KVM_MP_IRQ_CONFORMING,
		.srcbusid = KVM_MP_ISA_BUS,
		.srcbusirq = 0,
		.destapic = KVM_MP_APIC_ALL,
		.destapiclint = lint,
	};

	memcpy(*pos, &e, sizeof(e));
	*pos += sizeof(e);
}

static void mp__bus(uint8_t **pos, uint8_t id, const char type[6])
{
	struct kvm_mpc_bus e = { .type = KVM_MP_BUS, .busid = id };

	memcpy(e.bustype, type, sizeof(e.bustype));
	memcpy(*pos, &e, sizeof(e));
	*pos += sizeof(e);
}

int kvm_mptable__build(void *buf, size_t cap, uint64_t gpa, unsigned int ncpus,
		       const struct kvm_mp_pci_irq *pci, unsigned int npci)
{
	uint8_t *base = buf, *pos;
	uint8_t ioapic_id = (uint8_t)ncpus;
	struct kvm_mpc_table *mpc;
	struct kvm_mpf *mpf;
	size_t size;

	if (!ncpus || ncpus > KVM_MP_MAX_CPUS || (gpa & 15) || npci > 32 * 4 ||
	    (npci && !pci))
		return -EINVAL;
	for (unsigned int i = 0; i < npci; i++)
		if (pci[i].dev > 31 || pci[i].pin < 1 || pci[i].pin > 4 ||
		    pci[i].ioapic_pin >= KVM_MP_IOAPIC_PINS)
			return -EINVAL;
	size = kvm_mptable__size(ncpus, npci);
	if (gpa > KVM_E820_PCI_HOLE_END - size)
		return -EINVAL; /* physptr is 32 bits */
	if (cap < size)
		return -ENOSPC;
	memset(base, 0, size);

	/*
	 * The floating pointer first, at gpa itself: then it is inside the
	 * region Linux scans however long the table grows behind it.
	 */
	mpf = (struct kvm_mpf *)base;
	mpc = (struct kvm_mpc_table *)(base + sizeof(*mpf));
	pos = (uint8_t *)(mpc + 1);

	/* Entries in the order the spec asks: by type. */
	for (unsigned int i = 0; i < ncpus; i++) {
		struct kvm_mpc_cpu e = {
			.type = KVM_MP_PROCESSOR,
			.apicid = (uint8_t)i,
			.apicver = KVM_MP_LAPIC_VERSION,
			.cpuflag = KVM_MP_CPU_ENABLED |
				   (i == 0 ? KVM_MP_CPU_BSP : 0),
			.cpufeature = MP_CPU_SIGNATURE,
			.featureflag = MP_CPU_FEATURES,
		};

		memcpy(pos, &e, sizeof(e));
		pos += sizeof(e);
	}
	mp__bus(&pos, KVM_MP_PCI_BUS, "PCI   ");
	mp__bus(&pos, KVM_MP_ISA_BUS, "ISA   ");
	{
		struct kvm_mpc_ioapic e = {
			.type = KVM_MP_IOAPIC,
			.apicid = ioapic_id,
			.apicver = KVM_MP_IOAPIC_VERSION,
			.flags = KVM_MP_APIC_USABLE,
			.apicaddr = KVM_MP_IOAPIC_ADDR,
		};

		memcpy(pos, &e, sizeof(e));
		pos += sizeof(e);
	}
	/*
	 * ISA IRQs as on a PC: the timer's IRQ 0 on pin 2, IRQ 2 (the
	 * 8259 cascade) on nothing, so no pin is claimed twice; ISA's own
	 * rules (edge, active high) apply.
	 */
	for (unsigned int irq = 0; irq < 16; irq++) {
		if (irq == MP_ISA_CASCADE_IRQ)
			continue;
		mp__intsrc(&pos, KVM_MP_IRQ_CONFORMING, KVM_MP_ISA_BUS,
			   (uint8_t)irq, ioapic_id,
			   irq ? (uint8_t)irq : MP_ISA_TIMER_PIN);
	}
	/* PCI INTx: the source is (device, pin); level, active low. */
	for (unsigned int i = 0; i < npci; i++)
		mp__intsrc(&pos, KVM_MP_IRQ_LEVEL_LOW, KVM_MP_PCI_BUS,
			   (uint8_t)(pci[i].dev << 2 | (pci[i].pin - 1)),
			   ioapic_id, pci[i].ioapic_pin);
	mp__lintsrc(&pos, KVM_MP_EXTINT, 0);
	mp__lintsrc(&pos, KVM_MP_NMI, 1);

	memcpy(mpc->signature, KVM_MP_CONFIG_SIG, 4);
	mpc->length = (uint16_t)(pos - (uint8_t *)mpc);
	mpc->spec = KVM_MP_SPEC_REV;
	memcpy(mpc->oem, MP_OEM, sizeof(mpc->oem));
	memcpy(mpc->productid, MP_PRODUCT, sizeof(mpc->productid));
	mpc->oemcount = (uint16_t)(ncpus + 2 + 1 + KVM_MP_ISA_IRQS + npci + 2);
	mpc->lapic = KVM_MP_LAPIC_ADDR;
	/* The checksum field is 0 while summing, so the total becomes 0. */
	mpc->checksum = mp__checksum(mpc, mpc->length);

	memcpy(mpf->signature, KVM_MP_FLOATING_SIG, 4);
	mpf->physptr = (uint32_t)(gpa + sizeof(*mpf));
	mpf->length = 1;
	mpf->spec = KVM_MP_SPEC_REV;
	mpf->checksum = mp__checksum(mpf, sizeof(*mpf));
	return (int)size;
}
