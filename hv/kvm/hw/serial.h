/* SPDX-License-Identifier: MIT */
/*
 * 16550A UART (COM1 at 0x3f8, IRQ 4) for Linux's 8250 driver and console.
 *
 * Transmission is instantaneous: THR and the transmitter are always empty
 * (LSR.THRE and LSR.TEMT always set) and every byte written goes straight to
 * the tx callback. Reception comes from the VMM through kvm_serial__input().
 * No baud rate timing, no character timeout interrupt: received data is
 * reported as "receiver data available" (IIR 0x04) as soon as one byte is
 * there, which Linux's 8250 interrupt handler treats like a timeout
 * interrupt.
 *
 * The interrupt line follows what a 16550's INTRPT pin does on a PC: held
 * high while an enabled interrupt is pending and MCR.OUT2 (the PC's IRQ
 * gate) is set, low otherwise; see ser__update_irq() in serial.c.
 */
#ifndef KEMARI_HV_KVM_HW_SERIAL_H
#define KEMARI_HV_KVM_HW_SERIAL_H

#include <stddef.h>
#include <stdint.h>

#include "hw.h"

struct kemari_buf;

#define KVM_SERIAL_COM1_BASE 0x3f8
#define KVM_SERIAL_COM1_IRQ 4
#define KVM_SERIAL_PORTS 8
/*
 * A 16550A's receive FIFO: the depth a byte looped back by the guest's own
 * transmitter (MCR.LOOP) may fill before an overrun, so that Linux's
 * size_fifo() probe counts 16 and keeps calling the port a 16550A.
 */
#define KVM_SERIAL_FIFO 16
/*
 * Host input waits in a larger receive buffer the guest drains through RBR
 * while LSR.DR is set; it cannot tell the difference, and the VMM can hand
 * over a line of pasted text at once.
 */
#define KVM_SERIAL_RXBUF 256

/* The guest transmitted len bytes (not in loopback mode). Must not block
 * for long: it runs inside the vCPU's port I/O exit. */
typedef void kvm_serial_tx_fn(void *ctx, const uint8_t *buf, size_t len);

/*
 * Everything the guest can observe, as plain data: saved and restored byte
 * for byte by kvm_serial__save()/kvm_serial__load(). Explicitly sized, no
 * padding, no pointers.
 */
struct kvm_serial_state {
	uint8_t ier; /* bits 0-3 */
	uint8_t lcr;
	uint8_t mcr;	   /* bits 0-4 */
	uint8_t lsr_err;   /* sticky LSR error bits (OE), cleared on read */
	uint8_t msr_delta; /* MSR bits 0-3 (delta bits), cleared on read */
	uint8_t scr;
	uint8_t dll, dlm;
	uint8_t fcr;	      /* FIFO enable, DMA mode and trigger bits */
	uint8_t thr_ipending; /* THRE interrupt pending (IIR 0x02) */
	uint8_t irq_level;    /* level the line was last driven to */
	uint8_t rbr;	      /* last byte read from the receiver */
	uint16_t rx_head;     /* receive buffer: ring of rx_count bytes */
	uint16_t rx_count;
	uint8_t rx[KVM_SERIAL_RXBUF];
};

struct kvm_serial {
	struct kvm_serial_state st; /* the whole guest-visible state */
	uint16_t base;
	unsigned int gsi;
	const struct kvm_irq *irq;
	kvm_serial_tx_fn *tx;
	void *tx_ctx;
};

/*
 * Put the UART in its power-on state (IER 0, LCR 0, MCR 0, FIFOs off and
 * empty) with its I/O base, interrupt line and transmit callback. irq and
 * tx may be NULL (no interrupts, output dropped). Does not register ports.
 */
void kvm_serial__init(struct kvm_serial *s, uint16_t base, unsigned int gsi,
		      const struct kvm_irq *irq, kvm_serial_tx_fn *tx,
		      void *tx_ctx);
/* Claim the 8 ports [base, base + 8): 0 or kvm_pio__register()'s error. */
int kvm_serial__register(struct kvm_serial *s, struct kvm_pio_bus *bus);
/* Back to the power-on state; the interrupt line is lowered if it was up. */
void kvm_serial__reset(struct kvm_serial *s);

/*
 * Host input: queue up to len bytes for the guest to read and raise the
 * receive interrupt if enabled. Returns how many were taken (fewer than
 * len when the receive buffer is full, 0 in loopback mode); the caller
 * keeps the rest and offers them again later; nothing is lost or flagged
 * as an overrun.
 */
size_t kvm_serial__input(struct kvm_serial *s, const void *buf, size_t len);
/* How many bytes kvm_serial__input() would take now. */
size_t kvm_serial__rx_room(const struct kvm_serial *s);

/* Append st (sizeof(struct kvm_serial_state) bytes): 0 or -ENOMEM. */
int kvm_serial__save(const struct kvm_serial *s, struct kemari_buf *out);
/*
 * Replace st with a blob from kvm_serial__save() and drive the interrupt
 * line to the level that state implies (call after the in-kernel irqchip
 * is restored). -EINVAL for a blob of the wrong size or with ring indices
 * out of range; st is then unchanged.
 */
int kvm_serial__load(struct kvm_serial *s, const void *blob, size_t len);

#endif
