/* SPDX-License-Identifier: MIT */
/*
 * Legacy virtio-pci transport (virtio 1.x spec 4.1.4.8, "Legacy
 * Interfaces: A Note on PCI Device Layout"): a transitional device ID, one
 * I/O BAR holding the register block below, INTx, no MSI-X and no virtio
 * capabilities, so Linux's virtio_pci takes its legacy path and kicks
 * with an OUT to QUEUE_NOTIFY.
 *
 * The PCI side (config space, BAR placement, INTx routing) belongs to the
 * integrator's PCI bus: this file gives it the 256-byte header to expose
 * (kvm_virtio_pci__fill_config) and the register block's port handlers
 * (kvm_virtio_pci__pio_ops, relative to wherever BAR0 is placed).
 *
 * The kick is the event tap: QUEUE_NOTIFY calls vp->notify, which the VMM
 * may hold and release later by calling kvm_virtio_pci__process(); by
 * default the queue is served at once.
 */
#ifndef KEMARI_HV_KVM_VIRTIO_PCI_H
#define KEMARI_HV_KVM_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "../hw/hw.h"
#include "ring.h"

/* Register block in BAR0 (legacy, MSI-X disabled). */
#define VIRTIO_PCI_HOST_FEATURES 0  /* 32, RO */
#define VIRTIO_PCI_GUEST_FEATURES 4 /* 32, RW */
#define VIRTIO_PCI_QUEUE_PFN 8	    /* 32, RW */
#define VIRTIO_PCI_QUEUE_NUM 12	    /* 16, RO */
#define VIRTIO_PCI_QUEUE_SEL 14	    /* 16, RW */
#define VIRTIO_PCI_QUEUE_NOTIFY 16  /* 16, WO */
#define VIRTIO_PCI_STATUS 18	    /* 8, RW */
#define VIRTIO_PCI_ISR 19	    /* 8, RO, read clears */
#define VIRTIO_PCI_CONFIG_OFF 20    /* device-specific config */

#define VIRTIO_CONFIG_S_ACKNOWLEDGE 1
#define VIRTIO_CONFIG_S_DRIVER 2
#define VIRTIO_CONFIG_S_DRIVER_OK 4
#define VIRTIO_CONFIG_S_FEATURES_OK 8
#define VIRTIO_CONFIG_S_NEEDS_RESET 0x40
#define VIRTIO_CONFIG_S_FAILED 0x80

#define VIRTIO_PCI_ISR_QUEUE 0x1
#define VIRTIO_PCI_ISR_CONFIG 0x2

#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4

#define KVM_VIRTIO_PCI_VENDOR 0x1af4
#define KVM_VIRTIO_MAX_QUEUES 4

struct kvm_virtio_pci;

/* What a device model (blk, net) provides to the transport. */
struct kvm_virtio_dev_ops {
	/*
	 * Serve queue q now. 0, or a negative errno for a VMM-side failure
	 * that stops the VM. A guest's malformed request is not an error
	 * here: the model calls kvm_virtio_pci__fail() (or the ring marks
	 * itself broken) and returns 0.
	 */
	int (*queue)(struct kvm_virtio_pci *vp, unsigned int q);
	/* The driver reset the device: drop model-side state. May be NULL. */
	void (*reset)(struct kvm_virtio_pci *vp);
};

/* The fixed description of a device model. */
struct kvm_virtio_model {
	const struct kvm_virtio_dev_ops *ops;
	uint16_t device_type; /* VIRTIO_ID_* */
	uint16_t nqueues;     /* <= KVM_VIRTIO_MAX_QUEUES */
	uint16_t queue_size;  /* every queue: a power of two <= 1024 */
	uint16_t config_len;
	uint32_t host_features;
	uint8_t *config; /* device config, little-endian, read-only */
};

/*
 * The kick hook. Return 0, or a negative errno that stops the VM. The
 * default (NULL) serves the queue at once; a VMM that taps the kick
 * records (vp, q) and calls kvm_virtio_pci__process(vp, q) on release.
 */
typedef int kvm_virtio_notify_fn(struct kvm_virtio_pci *vp, unsigned int q,
				 void *ctx);

/*
 * Everything about the device that changes: plain data, saved and loaded
 * as is (device config is re-derived from the model's create parameters,
 * which both sides share).
 */
struct kvm_virtio_pci_state {
	uint16_t device_type;
	uint16_t nqueues;
	uint32_t guest_features;
	uint16_t queue_sel;
	uint8_t status;
	uint8_t isr;
	struct kvm_vq vq[KVM_VIRTIO_MAX_QUEUES];
};

struct kvm_virtio_pci {
	struct kvm_virtio_model model;
	/* The machine, set by the integrator. */
	const struct kvm_gmem *mem;
	const struct kvm_irq *irq;
	unsigned int gsi;
	uint16_t io_base;
	kvm_virtio_notify_fn *notify;
	void *notify_ctx;
	struct kvm_virtio_pci_state st;
};

/* Set up vp for model over mem, in the reset state. */
int kvm_virtio_pci__init(struct kvm_virtio_pci *vp,
			 const struct kvm_virtio_model *model,
			 const struct kvm_gmem *mem);

/* The INTx line (the GSI pin A is routed to). Held high while ISR != 0. */
void kvm_virtio_pci__set_irq(struct kvm_virtio_pci *vp,
			     const struct kvm_irq *irq, unsigned int gsi);
/* Install the kick hook (NULL: serve at once). */
void kvm_virtio_pci__set_notify(struct kvm_virtio_pci *vp,
				kvm_virtio_notify_fn *fn, void *ctx);
/* Where BAR0 now is: kvm_virtio_pci__pio_ops subtract it. */
void kvm_virtio_pci__set_base(struct kvm_virtio_pci *vp, uint16_t io_base);

/* Size of BAR0: a power of two holding the registers and device config. */
uint16_t kvm_virtio_pci__bar_size(const struct kvm_virtio_pci *vp);

/*
 * Fill a type-0 PCI header for vp: vendor 0x1af4, transitional device
 * ID, revision 0, subsystem vendor 0x1af4 and subsystem ID = virtio type,
 * class code, BAR0 = io_base as an I/O BAR, interrupt pin A with
 * irq_line, no capability list. -EINVAL for a type without a transitional
 * ID.
 */
int kvm_virtio_pci__fill_config(const struct kvm_virtio_pci *vp,
				uint8_t cfg[256], uint8_t irq_line);

/* Register block accesses at offset off inside BAR0 (any size 1/2/4). */
int kvm_virtio_pci__read(struct kvm_virtio_pci *vp, uint16_t off, void *data,
			 unsigned int size);
int kvm_virtio_pci__write(struct kvm_virtio_pci *vp, uint16_t off,
			  const void *data, unsigned int size);

/* Port handlers for BAR0, dev = the struct kvm_virtio_pci. */
extern const struct kvm_pio_ops kvm_virtio_pci__pio_ops;

/* A kick from anywhere (QUEUE_NOTIFY, re-attach): goes through the hook. */
int kvm_virtio_pci__kick(struct kvm_virtio_pci *vp, unsigned int q);
/* Serve queue q now, bypassing the hook: what a released tap calls. */
int kvm_virtio_pci__process(struct kvm_virtio_pci *vp, unsigned int q);

/* Set ISR bits and raise the INTx line. */
void kvm_virtio_pci__interrupt(struct kvm_virtio_pci *vp, uint8_t isr_bits);
/* After pushes on q: interrupt the driver if the ring asks for it. */
void kvm_virtio_pci__signal(struct kvm_virtio_pci *vp, unsigned int q);
/* Device config changed (ISR bit 1). */
void kvm_virtio_pci__config_changed(struct kvm_virtio_pci *vp);
/* The guest broke the protocol: NEEDS_RESET, stop serving until reset. */
void kvm_virtio_pci__fail(struct kvm_virtio_pci *vp);

static inline struct kvm_vq *kvm_virtio_pci__vq(struct kvm_virtio_pci *vp,
						unsigned int q)
{
	return &vp->st.vq[q];
}

static inline bool kvm_virtio_pci__driver_ok(const struct kvm_virtio_pci *vp)
{
	return (vp->st.status & VIRTIO_CONFIG_S_DRIVER_OK) &&
	       !(vp->st.status & VIRTIO_CONFIG_S_NEEDS_RESET);
}

static inline bool kvm_virtio_pci__has(const struct kvm_virtio_pci *vp,
				       unsigned int bit)
{
	return vp->st.guest_features & (1U << bit);
}

/* The whole mutable state, for a checkpoint. */
void kvm_virtio_pci__save(const struct kvm_virtio_pci *vp,
			  struct kvm_virtio_pci_state *st);
/*
 * Take a saved state: -EINVAL if it is not this device's (type, queue
 * count, queue sizes). The INTx level follows the restored ISR.
 */
int kvm_virtio_pci__load(struct kvm_virtio_pci *vp,
			 const struct kvm_virtio_pci_state *st);
/*
 * After load, before the vCPUs run: re-read every queue's indices from
 * guest memory (kvm_vq__reattach); *pending gets a bit per queue with
 * available chains (in flight at the checkpoint or added since), which
 * the caller kicks (kvm_virtio_pci__kick) once it is ready for output. A
 * ring that no longer makes sense sets NEEDS_RESET. Returns 0.
 */
int kvm_virtio_pci__reattach(struct kvm_virtio_pci *vp, uint32_t *pending);

#endif
