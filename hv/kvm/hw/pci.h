/* SPDX-License-Identifier: MIT */
/*
 * PCI bus 0 behind configuration mechanism #1: CONFIG_ADDRESS at 0xcf8
 * (32-bit accesses only), CONFIG_DATA at 0xcfc-0xcff (1, 2 or 4 bytes at
 * any offset). Slot 0 is an i440FX host bridge; other models add their
 * devices with kvm_pci__add(), each function 0 of its own slot, with up to
 * six I/O BARs the guest may size, move, enable and disable, and a legacy
 * INTx pin wired to one IOAPIC input (GSI).
 */
#ifndef KEMARI_HV_KVM_HW_PCI_H
#define KEMARI_HV_KVM_HW_PCI_H

#include <stddef.h>
#include <stdint.h>

#include "../boot/linux_boot.h"
#include "hw.h"

struct kemari_buf;

#define KVM_PCI_CONFIG_ADDRESS 0xcf8
#define KVM_PCI_CONFIG_DATA 0xcfc
#define KVM_PCI_CFG_SIZE 256
#define KVM_PCI_SLOTS 32
#define KVM_PCI_BARS 6
#define KVM_PCI_IO_LIMIT 0x10000

/* Standard header offsets and bits this model acts on. */
#define KVM_PCI_VENDOR_ID 0x00
#define KVM_PCI_DEVICE_ID 0x02
#define KVM_PCI_COMMAND 0x04
#define KVM_PCI_STATUS 0x06
#define KVM_PCI_REVISION 0x08
#define KVM_PCI_CLASS_PROG 0x09
#define KVM_PCI_CLASS_DEVICE 0x0a
#define KVM_PCI_HEADER_TYPE 0x0e
#define KVM_PCI_BAR0 0x10
#define KVM_PCI_SUBSYS_VENDOR 0x2c
#define KVM_PCI_SUBSYS_ID 0x2e
#define KVM_PCI_INTERRUPT_LINE 0x3c
#define KVM_PCI_INTERRUPT_PIN 0x3d
#define KVM_PCI_CMD_IO 0x0001
#define KVM_PCI_CMD_MEM 0x0002
#define KVM_PCI_CMD_MASTER 0x0004
#define KVM_PCI_CMD_INTX_DISABLE 0x0400
#define KVM_PCI_STATUS_INTERRUPT 0x0008
#define KVM_PCI_STATUS_CAP_LIST 0x0010
#define KVM_PCI_BAR_IO 0x1

/* The host bridge at 00:00.0. */
#define KVM_PCI_HOST_VENDOR 0x8086 /* Intel */
#define KVM_PCI_HOST_DEVICE 0x1237 /* 82441FX (i440FX) */
#define KVM_PCI_HOST_CLASS 0x060000

/*
 * An I/O BAR. The model registers [addr, addr + size) on the port I/O bus
 * with ops and opaque (ops' dev argument; each handler gets the absolute
 * port, so it subtracts kvm_pci__bar_addr()) while the guest has I/O decode
 * on and the BAR at a non-zero address that fits below 64 KiB.
 */
struct kvm_pci_bar {
	uint32_t size; /* power of two, 4 to 64 KiB; 0: BAR not implemented */
	uint16_t addr; /* where it starts, as firmware would have put it;
			* 0: unassigned, the guest assigns it */
	const struct kvm_pio_ops *ops;
	void *opaque;
	/* Kept by kvm_pci: where the range is registered now. */
	bool mapped;
	uint16_t mapped_base;
};

struct kvm_pci_dev {
	/*
	 * Configuration space: the device's whole guest-visible PCI state.
	 * The owner fills vendor/device/class/subsystem (and any capability
	 * list) before kvm_pci__add(), which writes the BARs, command,
	 * interrupt line and pin bytes.
	 */
	uint8_t cfg[KVM_PCI_CFG_SIZE];
	/* Guest-writable bits. kvm_pci__add() sets those of the standard
	 * header (0x00-0x3f); the owner's bytes at 0x40 and up are kept. */
	uint8_t wmask[KVM_PCI_CFG_SIZE];
	uint8_t slot; /* device number on bus 0, 1-31 */
	uint8_t pin;  /* 1-4: INTA#-INTD#; 0: no interrupt */
	uint8_t gsi;  /* IOAPIC input the pin is wired to: 16-23 */
	struct kvm_pci_bar bar[KVM_PCI_BARS];
	/*
	 * Optional: the guest wrote len config bytes at off (after the BAR
	 * and command side effects), or kvm_pci__load() replaced the whole
	 * config (off 0, len 256). A model that needs its BAR's base reads
	 * kvm_pci__bar_addr() here.
	 */
	void (*cfg_written)(struct kvm_pci_dev *dev, unsigned int off,
			    unsigned int len);
	void *priv; /* the owner's, untouched */
	/*
	 * Set by kvm_pci__add(): a line whose kvm_irq__set(&dev->intx, any,
	 * level) is kvm_pci__set_irq(pci, dev, level), for models that raise
	 * their own interrupt line (virtio-pci's set_irq takes it).
	 */
	struct kvm_irq intx;
	struct kvm_pci *pci;
};

struct kvm_pci {
	uint32_t addr; /* CONFIG_ADDRESS: with the devices' cfg, the state */
	struct kvm_pci_dev host;
	struct kvm_pci_dev *dev[KVM_PCI_SLOTS];
	struct kvm_pio_bus *bus;
	const struct kvm_irq *irq;
};

/*
 * Set up the bus with its host bridge and claim 0xcf8-0xcff on bus (which
 * later BARs are registered on too); irq (may be NULL) carries INTx. 0, or
 * kvm_pio__register()'s error.
 */
int kvm_pci__init(struct kvm_pci *pci, struct kvm_pio_bus *bus,
		  const struct kvm_irq *irq);
/*
 * Plug dev (owned by the caller, kept until the bus goes) into its slot:
 * sets its header's write masks, BAR type bits, interrupt pin, interrupt
 * line (= gsi, as firmware routes it) and, if any BAR has an address, I/O
 * decode on with those BARs registered. -EINVAL for slot 0 or > 31, a
 * vendor ID of 0xffff or 0, pin > 4, a pin with gsi outside 16-23 (0-15
 * are ISA IRQs, edge-triggered), a BAR size that is not a
 * power of two in [4, 64 KiB] or an address not aligned to it or past
 * 64 KiB, or a BAR without ops; -EEXIST if the slot is taken or a BAR
 * overlaps a registered range (nothing is left registered then).
 */
int kvm_pci__add(struct kvm_pci *pci, struct kvm_pci_dev *dev);

/* Base address BAR i holds now (0: unassigned or no such BAR). */
uint32_t kvm_pci__bar_addr(const struct kvm_pci_dev *dev, unsigned int i);

/*
 * The device's INTx condition (e.g. virtio's ISR non-zero): sets or clears
 * the Interrupt Status bit and holds its GSI at level unless the guest set
 * Interrupt Disable in the command register. Level-triggered: the line
 * stays up until the device lowers it.
 */
void kvm_pci__set_irq(struct kvm_pci *pci, struct kvm_pci_dev *dev, int level);

/*
 * The INTx routes for the MP table (kvm_mptable__build()): one entry per
 * device with a pin, ascending by slot. Returns the count, or -ENOSPC if
 * more than max.
 */
int kvm_pci__routes(const struct kvm_pci *pci, struct kvm_mp_pci_irq *out,
		    unsigned int max);

/*
 * Append CONFIG_ADDRESS and, per present slot, its number and 256 config
 * bytes (host bridge included): 0 or -ENOMEM.
 */
int kvm_pci__save(const struct kvm_pci *pci, struct kemari_buf *out);
/*
 * Restore a blob from kvm_pci__save() into a bus with the same devices in
 * the same slots, then re-register every BAR where its restored config
 * places it, drive each INTx line to its restored level and tell each
 * device through cfg_written(dev, 0, 256). -EINVAL for a
 * blob that does not match the bus (nothing changed then); a BAR that
 * cannot be registered gives kvm_pio__register()'s error.
 */
int kvm_pci__load(struct kvm_pci *pci, const void *blob, size_t len);

#endif
