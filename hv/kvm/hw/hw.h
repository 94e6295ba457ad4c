/* SPDX-License-Identifier: MIT */
/*
 * What a platform device model (hv/kvm/hw/, hv/kvm/virtio/) gets from the
 * VMM, and nothing more: guest memory, interrupt lines, port I/O
 * registration. The models never call KVM themselves, so they are
 * unit-tested with a plain buffer as RAM and a recording IRQ sink.
 *
 * Concurrency: the VMM calls a device's handlers with its device lock held
 * (one device is never entered twice at once); an I/O thread of the device
 * (e.g. a TAP reader) takes the same lock through the VMM.
 */
#ifndef KEMARI_HV_KVM_HW_H
#define KEMARI_HV_KVM_HW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Guest-physical memory. RAM is one host mapping; guest-physical addresses
 * below 3 GiB map to the same offset, those at 4 GiB and above to offset
 * gpa - 1 GiB (the 32-bit PCI hole has no RAM behind it; see
 * hv/kvm/linux_boot.h).
 */
struct kvm_gmem {
	uint8_t *ram;
	uint64_t ram_size;
	/* Record a device's write to guest RAM: the dirty log never sees
	 * it, and a replica without it would be torn. May be NULL. */
	void (*mark_dirty)(void *ctx, uint64_t gpa, uint64_t len);
	void *ctx;
};

/*
 * Host pointer to [gpa, gpa + len) if the range is RAM and does not cross
 * the PCI hole, else NULL. len 0 is valid for any gpa inside RAM.
 */
void *kvm_gmem__ptr(const struct kvm_gmem *m, uint64_t gpa, uint64_t len);

/* Device wrote [gpa, gpa + len): mark it dirty. */
static inline void kvm_gmem__dirty(const struct kvm_gmem *m, uint64_t gpa,
				   uint64_t len)
{
	if (m->mark_dirty && len)
		m->mark_dirty(m->ctx, gpa, len);
}

/*
 * An interrupt line: an ISA IRQ or IOAPIC pin (GSI). Edge-triggered users
 * raise then lower; level-triggered ones hold it while their condition
 * lasts (virtio-pci INTx while ISR is non-zero).
 */
struct kvm_irq {
	void (*set)(void *ctx, unsigned int gsi, int level);
	void *ctx;
};

static inline void kvm_irq__set(const struct kvm_irq *irq, unsigned int gsi,
				int level)
{
	if (irq && irq->set)
		irq->set(irq->ctx, gsi, level);
}

/*
 * A port I/O range [base, base + len). data is size (1, 2 or 4) bytes,
 * little-endian; an IN handler must fill all of them. Returns 0, or a
 * negative errno that stops the VM (only for a VMM-side failure, never for
 * a guest's odd access: those are ignored or read as all ones).
 */
struct kvm_pio_ops {
	int (*in)(void *dev, uint16_t port, void *data, unsigned int size);
	int (*out)(void *dev, uint16_t port, const void *data,
		   unsigned int size);
};

struct kvm_pio {
	uint16_t base, len;
	const struct kvm_pio_ops *ops;
	void *dev;
};

#define KVM_PIO_MAX 64

/* A table of port ranges, looked up on every KVM_EXIT_IO. */
struct kvm_pio_bus {
	struct kvm_pio range[KVM_PIO_MAX];
	unsigned int n;
};

/* Add a range; -EEXIST if it overlaps one already there, -ENOSPC if full. */
int kvm_pio__register(struct kvm_pio_bus *bus, uint16_t base, uint16_t len,
		      const struct kvm_pio_ops *ops, void *dev);
/* Move or remove (len 0) the range registered for dev at old_base (a PCI
 * I/O BAR the guest reprograms); -ENOENT if there is none. */
int kvm_pio__move(struct kvm_pio_bus *bus, void *dev, uint16_t old_base,
		  uint16_t new_base, uint16_t len);
/*
 * Dispatch one access. Ports nobody claims read as all ones and ignore
 * writes (as on a PC), returning 0; *claimed says whether a device took it.
 */
int kvm_pio__io(struct kvm_pio_bus *bus, uint16_t port, bool in, void *data,
		unsigned int size, bool *claimed);

#endif
