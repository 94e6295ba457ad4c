/* SPDX-License-Identifier: MIT */
/*
 * i8042 keyboard controller (ports 0x60 data, 0x64 status/command) with
 * nothing plugged into either PS/2 port. It exists for two reasons: Linux
 * resets the machine by pulsing the reset line through it (command 0xfe),
 * and Linux's i8042 driver probes it at boot. The controller answers every
 * probe command at once; a byte sent to the keyboard or the mouse comes back
 * as a transmit timeout (status bit 6, data 0xfe), so atkbd and psmouse give
 * up after one exchange each, without waiting out a timer and without a
 * warning in dmesg.
 *
 * Port 0x61 (system control port B, PIT channel 2 gate) is not here: KVM's
 * in-kernel PIT (KVM_CREATE_PIT2) serves it.
 *
 * IRQ 1 and IRQ 12 follow the output buffer: held high while it holds a
 * byte for that port and the command byte enables that port's interrupt,
 * low once the guest reads it (see i8042__update_irq()).
 */
#ifndef KEMARI_HV_KVM_HW_I8042_H
#define KEMARI_HV_KVM_HW_I8042_H

#include <stddef.h>
#include <stdint.h>

#include "hw.h"

struct kemari_buf;

#define KVM_I8042_DATA 0x60
#define KVM_I8042_CMD 0x64
#define KVM_I8042_KBD_IRQ 1
#define KVM_I8042_AUX_IRQ 12
#define KVM_I8042_QUEUE 16

/* Status register bits. */
#define KVM_I8042_STR_OBF 0x01
#define KVM_I8042_STR_IBF 0x02
#define KVM_I8042_STR_SYS 0x04
#define KVM_I8042_STR_CMD 0x08
#define KVM_I8042_STR_KEYLOCK 0x10 /* 1: keyboard not inhibited */
#define KVM_I8042_STR_AUXDATA 0x20
#define KVM_I8042_STR_TIMEOUT 0x40

/* Controller command byte (CTR) bits. */
#define KVM_I8042_CTR_KBDINT 0x01
#define KVM_I8042_CTR_AUXINT 0x02
#define KVM_I8042_CTR_SYS 0x04
#define KVM_I8042_CTR_KBDDIS 0x10
#define KVM_I8042_CTR_AUXDIS 0x20
#define KVM_I8042_CTR_XLATE 0x40
/* As a BIOS leaves it: translation on, mouse port off, interrupts polled. */
#define KVM_I8042_CTR_RESET                                                    \
	(KVM_I8042_CTR_XLATE | KVM_I8042_CTR_AUXDIS | KVM_I8042_CTR_SYS)

/* The guest pulsed the CPU reset line: what `reboot` ends with. */
typedef void kvm_i8042_reset_fn(void *ctx);

/*
 * Everything the guest can observe, as plain data (saved byte for byte by
 * kvm_i8042__save()).
 */
struct kvm_i8042_state {
	uint8_t ram[32];  /* controller RAM, ram[0] is the command byte */
	uint8_t outport;  /* output port (bit 0: reset line, 1: A20) */
	uint8_t pending;  /* command waiting for its data byte, 0: none */
	uint8_t cmd_last; /* the last write went to the command port */
	uint8_t last;	  /* last byte read from the output buffer */
	uint8_t kbd_level, aux_level; /* IRQ 1 / IRQ 12 as last driven */
	uint8_t q_head, q_count;      /* output buffer queue */
	uint8_t q[KVM_I8042_QUEUE];
	uint8_t q_str[KVM_I8042_QUEUE]; /* per byte: AUXDATA, TIMEOUT bits */
};

struct kvm_i8042 {
	struct kvm_i8042_state st; /* the whole guest-visible state */
	const struct kvm_irq *irq;
	kvm_i8042_reset_fn *reset;
	void *reset_ctx;
};

/* Power-on state; irq and reset may be NULL. Does not register ports. */
void kvm_i8042__init(struct kvm_i8042 *k, const struct kvm_irq *irq,
		     kvm_i8042_reset_fn *reset, void *reset_ctx);
/* Claim ports 0x60 and 0x64: 0 or kvm_pio__register()'s error. */
int kvm_i8042__register(struct kvm_i8042 *k, struct kvm_pio_bus *bus);

/* Append st: 0 or -ENOMEM. */
int kvm_i8042__save(const struct kvm_i8042 *k, struct kemari_buf *out);
/* Replace st and drive IRQ 1/12 to match; -EINVAL for a bad blob. */
int kvm_i8042__load(struct kvm_i8042 *k, const void *blob, size_t len);

#endif
