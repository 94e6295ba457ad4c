/* SPDX-License-Identifier: MIT */
/*
 * Linux x86-64 boot protocol building blocks (Documentation/arch/x86/boot.rst)
 * for the built-in VMM: bzImage header checks, the zero page, initrd
 * placement, the e820 map with its memory slots, and an Intel MultiProcessor
 * Specification 1.4 table. Everything here is pure: it reads and writes
 * caller buffers only (no ioctl, no file access), so it is unit-tested
 * without KVM. The caller reads files, maps guest RAM and copies the results
 * to the guest-physical addresses these functions were told about.
 *
 * Guest-physical layout these pieces agree on:
 *   [0, 0x9fc00)             RAM
 *   [0x9fc00, 0xa0000)       reserved: EBDA, the MP table lives here
 *   [0xf0000, 0x100000)      reserved: BIOS area
 *   [1 MiB, min(ram, 3 GiB)) RAM
 *   [3 GiB, 4 GiB)           hole: 32-bit PCI MMIO, IOAPIC, LAPIC
 *   [4 GiB, 4 GiB + ram - 3 GiB) RAM, when ram > 3 GiB
 */
#ifndef KEMARI_HV_KVM_LINUX_BOOT_H
#define KEMARI_HV_KVM_LINUX_BOOT_H

#include <asm/bootparam.h>
#include <stddef.h>
#include <stdint.h>

/* ---- e820 (e820.c) ------------------------------------------------------ */

/* Types of struct boot_e820_entry (the uapi <asm/e820.h> is legacy). */
#define KVM_E820_RAM 1
#define KVM_E820_RESERVED 2

#define KVM_E820_EBDA_START 0x9fc00ULL /* top 1 KiB of base memory */
#define KVM_E820_EBDA_END 0xa0000ULL
#define KVM_E820_BIOS_START 0xf0000ULL
#define KVM_E820_HIGH_START 0x100000ULL
#define KVM_E820_PCI_HOLE_START (3ULL << 30)
#define KVM_E820_PCI_HOLE_END (4ULL << 30)

/* The part of ram_size mapped below the 32-bit PCI hole. */
static inline uint64_t kvm_e820__below_hole(uint64_t ram_size)
{
	return ram_size < KVM_E820_PCI_HOLE_START ? ram_size
						  : KVM_E820_PCI_HOLE_START;
}

/*
 * Fill tab[0..max) with the e820 map of a guest with ram_size bytes of RAM
 * (the layout above, ascending, non-overlapping). Returns the number of
 * entries (4, or 5 when ram_size exceeds 3 GiB), -ENOSPC when max is too
 * small, -EINVAL (with a message) when ram_size is not above 1 MiB.
 */
int kvm_e820__build(uint64_t ram_size, struct boot_e820_entry *tab,
		    unsigned int max);

/*
 * One KVM memory slot: guest-physical [gpa, gpa + size) backed by the VMM's
 * single contiguous RAM mapping at host_off.
 */
struct kvm_e820_slot {
	uint64_t gpa;
	uint64_t size;
	uint64_t host_off;
};

/*
 * Fill slots[0..max) with the memory slots for the same layout: one slot
 * [0, ram_size) when ram_size <= 3 GiB, else [0, 3 GiB) at host offset 0
 * and [4 GiB, 4 GiB + ram_size - 3 GiB) at host offset 3 GiB. Returns the
 * number of slots, -ENOSPC when max is too small, -EINVAL when ram_size is 0.
 */
int kvm_e820__slots(uint64_t ram_size, struct kvm_e820_slot *slots,
		    unsigned int max);

/* ---- bzImage and zero page (bzimage.c) ---------------------------------- */

#define KVM_BZIMAGE_HDR_OFF 0x1f1     /* struct setup_header in the file */
#define KVM_BZIMAGE_MIN_VERSION 0x20c /* 2.12: xloadflags */
#define KVM_BZIMAGE_LOADER_UNDEF 0xff /* type_of_loader: no assigned id */
#define KVM_BZIMAGE_DEFAULT_LOAD (16ULL << 20)
#define KVM_BZIMAGE_MIN_LOAD (1ULL << 20)

/* What kvm_bzimage__parse() learnt from a bzImage's setup header. */
struct kvm_bzimage {
	uint16_t version;	   /* boot protocol, 0x20f = 2.15 */
	unsigned int setup_sects;  /* effective: a 0 in the file means 4 */
	size_t kernel_offset;	   /* protected-mode kernel in the file */
	size_t kernel_size;	   /* its bytes, to the end of the file */
	uint32_t initrd_addr_max;  /* highest byte an initrd may occupy */
	uint32_t cmdline_size;	   /* max command line, without the NUL */
	uint64_t pref_address;	   /* preferred load address */
	uint32_t kernel_alignment; /* a power of two */
	uint32_t init_size;	   /* bytes needed from the runtime start */
	uint16_t xloadflags;
	size_t hdr_len;		 /* header bytes from 0x1f1 the image has */
	struct setup_header hdr; /* those bytes; the rest zero */
};

/*
 * Check the setup header of the bzImage img[0..len) and fill *out. Accepts
 * only what this VMM boots: boot flag 0xAA55, "HdrS", protocol >= 2.12, a
 * relocatable kernel with a 64-bit entry point, setup sectors inside the
 * file, a sane kernel_alignment and init_size. Each refusal is -ENOEXEC with
 * one line naming path recorded by kemari_err(). img is not kept.
 */
int kvm_bzimage__parse(const void *img, size_t len, const char *path,
		       struct kvm_bzimage *out);

/*
 * Guest-physical address to copy the protected-mode kernel to:
 * pref_address, or 16 MiB when the header's is below 1 MiB, aligned up to
 * kernel_alignment. The 64-bit entry point is this + 0x200.
 */
uint64_t kvm_bzimage__load_addr(const struct kvm_bzimage *bz);

/*
 * Pick where an initrd of initrd_size bytes goes: the highest page-aligned
 * address whose initrd ends at or below both initrd_addr_max + 1 and the
 * RAM below the PCI hole, and starts at or above the kernel's end (its
 * runtime start, max(kernel_gpa, pref_address), plus init_size). 0 and *gpa,
 * or -E2BIG with a line naming path and saying to raise --mem. An
 * initrd_size of 0 gives *gpa = 0.
 */
int kvm_bzimage__initrd_addr(const struct kvm_bzimage *bz, uint64_t ram_size,
			     uint64_t kernel_gpa, uint64_t initrd_size,
			     const char *path, uint64_t *gpa);

/* Where the loader put things, for kvm_bzimage__zero_page(). */
struct kvm_linux_boot {
	uint64_t ram_size;
	uint64_t cmdline_gpa; /* NUL-terminated command line, 0: none */
	size_t cmdline_len;   /* strlen() of it */
	uint64_t initrd_gpa;  /* 0 with initrd_size 0: no initrd */
	uint64_t initrd_size;
};

/*
 * Build the zero page (struct boot_params) in the caller's buffer bp, which
 * is cleared first: the image's setup header (hdr_len bytes, as boot.rst
 * says: up to 0x202 + the byte at 0x201), type_of_loader 0xff, loadflags,
 * heap_end_ptr, the command line and initrd pointers split into their low
 * and ext_ high halves, and the e820 table for lb->ram_size. 0, -E2BIG when
 * the command line is longer than the kernel's cmdline_size, or an error of
 * kvm_e820__build(); each with a message.
 */
int kvm_bzimage__zero_page(struct boot_params *bp, const struct kvm_bzimage *bz,
			   const struct kvm_linux_boot *lb);

/* ---- MP table (mptable.c) ------------------------------------------------ */

/*
 * Intel MultiProcessor Specification 1.4 structures, as the kernel's
 * mpparse.c reads them (linux-libc-dev has no <asm/mpspec_def.h>).
 */
#define KVM_MP_FLOATING_SIG "_MP_"
#define KVM_MP_CONFIG_SIG "PCMP"
#define KVM_MP_SPEC_REV 4
#define KVM_MP_LAPIC_ADDR 0xfee00000U
#define KVM_MP_IOAPIC_ADDR 0xfec00000U
#define KVM_MP_LAPIC_VERSION 0x14
#define KVM_MP_IOAPIC_VERSION 0x11
#define KVM_MP_IOAPIC_PINS 24 /* KVM's in-kernel IOAPIC */
#define KVM_MP_MAX_CPUS 254   /* APIC ids 0..253, IOAPIC 254; 0xff: all */
#define KVM_MP_PCI_BUS 0
#define KVM_MP_ISA_BUS 1
#define KVM_MP_ISA_IRQS 15 /* 0-15 less the cascade IRQ 2 */

enum kvm_mp_entry_type {
	KVM_MP_PROCESSOR = 0,
	KVM_MP_BUS = 1,
	KVM_MP_IOAPIC = 2,
	KVM_MP_INTSRC = 3,
	KVM_MP_LINTSRC = 4,
};

enum kvm_mp_irq_type {
	KVM_MP_INT = 0,
	KVM_MP_NMI = 1,
	KVM_MP_SMI = 2,
	KVM_MP_EXTINT = 3,
};

#define KVM_MP_CPU_ENABLED 0x1
#define KVM_MP_CPU_BSP 0x2
#define KVM_MP_APIC_USABLE 0x1
#define KVM_MP_APIC_ALL 0xff
/* irqflag: polarity bits 0-1, trigger bits 2-3; 0 = "as the bus says" */
#define KVM_MP_IRQ_CONFORMING 0x0
#define KVM_MP_IRQ_LEVEL_LOW 0xf

struct kvm_mpf {
	char signature[4]; /* "_MP_" */
	uint32_t physptr;  /* the "PCMP" table */
	uint8_t length;	   /* in 16-byte units: 1 */
	uint8_t spec;	   /* 4 */
	uint8_t checksum;
	uint8_t feature1; /* 0: a configuration table is present */
	uint8_t feature2; /* bit 7: IMCR present (PIC mode) */
	uint8_t feature3[3];
} __attribute__((packed));

struct kvm_mpc_table {
	char signature[4]; /* "PCMP" */
	uint16_t length;   /* header and base entries */
	uint8_t spec;
	uint8_t checksum;
	char oem[8];
	char productid[12];
	uint32_t oemptr;
	uint16_t oemsize;
	uint16_t oemcount; /* number of entries */
	uint32_t lapic;
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

struct kvm_mpc_cpu {
	uint8_t type;
	uint8_t apicid;
	uint8_t apicver;
	uint8_t cpuflag;
	uint32_t cpufeature;  /* CPUID signature: family, model, stepping */
	uint32_t featureflag; /* CPUID.1:EDX */
	uint32_t reserved[2];
} __attribute__((packed));

struct kvm_mpc_bus {
	uint8_t type;
	uint8_t busid;
	char bustype[6]; /* "PCI   ", "ISA   " */
} __attribute__((packed));

struct kvm_mpc_ioapic {
	uint8_t type;
	uint8_t apicid;
	uint8_t apicver;
	uint8_t flags;
	uint32_t apicaddr;
} __attribute__((packed));

struct kvm_mpc_intsrc {
	uint8_t type; /* KVM_MP_INTSRC */
	uint8_t irqtype;
	uint16_t irqflag;
	uint8_t srcbus;
	uint8_t srcbusirq; /* ISA: the IRQ; PCI: device << 2 | (pin - 1) */
	uint8_t dstapic;
	uint8_t dstirq; /* IOAPIC pin */
} __attribute__((packed));

struct kvm_mpc_lintsrc {
	uint8_t type; /* KVM_MP_LINTSRC */
	uint8_t irqtype;
	uint16_t irqflag;
	uint8_t srcbusid;
	uint8_t srcbusirq;
	uint8_t destapic;     /* KVM_MP_APIC_ALL: every local APIC */
	uint8_t destapiclint; /* LINT0 or LINT1 */
} __attribute__((packed));

/* One PCI INTx line on bus 0 and the IOAPIC pin it is wired to. */
struct kvm_mp_pci_irq {
	uint8_t dev;	    /* device number, 0-31 */
	uint8_t pin;	    /* 1-4: INTA#-INTD#, as in config space */
	uint8_t ioapic_pin; /* 0-23 */
};

/* Bytes kvm_mptable__build() uses for ncpus CPUs and npci PCI routes. */
size_t kvm_mptable__size(unsigned int ncpus, unsigned int npci);

/*
 * Write an MP table into buf[0..cap) that the guest will find at
 * guest-physical gpa (16-byte aligned, inside a region Linux scans: the
 * first KiB, [0x9fc00, 0xa0000) or [0xf0000, 0x100000)): the floating
 * pointer first, then the "PCMP" table it points to. The table lists ncpus
 * processors (APIC ids 0..ncpus-1, CPU 0 the BSP), PCI bus 0 and ISA bus 1,
 * one IOAPIC (id ncpus), ISA IRQs 0-15 (IRQ 0 on pin 2, IRQ 2 left out as
 * the cascade, the rest on their own pin), the npci routes of pci (level,
 * active low), and ExtINT on LINT0 and NMI on LINT1 of every local APIC.
 * Returns the bytes written, -ENOSPC when cap is too small, -EINVAL for
 * ncpus outside 1..KVM_MP_MAX_CPUS, a misaligned gpa, or a bad route.
 */
int kvm_mptable__build(void *buf, size_t cap, uint64_t gpa, unsigned int ncpus,
		       const struct kvm_mp_pci_irq *pci, unsigned int npci);

#endif
