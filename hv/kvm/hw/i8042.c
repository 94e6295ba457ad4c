// SPDX-License-Identifier: MIT
/*
 * i8042 keyboard controller with empty PS/2 ports. Linux's probe, and what
 * it gets (drivers/input/serio/i8042.c):
 *
 *   i8042_controller_check()  status has OBF clear: a controller is there
 *   i8042_controller_init()   0x20 twice reads a stable CTR, status bit 4
 *                             says "not inhibited", 0x60 writes the CTR
 *   i8042_check_aux()         0xd3 (loop a byte back as if from the mouse)
 *                             echoes with AUXDATA; 0xa7/0xa8 flip CTR bit 5;
 *                             the looped 0xa5 raises IRQ 12 (AUXINT is on)
 *   i8042_check_mux()         three loops echo unchanged: no multiplexer
 *   atkbd / psmouse probe     0x60 data (keyboard) or 0xd4 + byte (mouse)
 *                             answers 0xfe with the timeout bit: libps2
 *                             fails the command at once
 *
 * Every command is done by the time the OUT returns, so IBF never shows.
 */
#include <errno.h>
#include <string.h>

#include "i8042.h"
#include "kemari/buf.h"

_Static_assert(sizeof(struct kvm_i8042_state) == 40 + 2 * KVM_I8042_QUEUE,
	       "kvm_i8042_state must stay free of padding");

#define I8042_RET_TEST_OK 0x55
#define I8042_RET_NO_DEVICE 0xfe
#define I8042_OUT_RESET 0x01
#define I8042_OUT_A20 0x02

static uint8_t *i8042__ctr(struct kvm_i8042_state *st)
{
	return &st->ram[0];
}

/*
 * Levels, not pulses, for the same reason as the UART's (serial.c): the
 * in-kernel PIC/IOAPIC see a rising edge when a byte for an enabled port
 * lands in an empty output buffer, and the guest's read of 0x60 lowers the
 * line before the next byte can raise it again.
 */
static void i8042__levels(const struct kvm_i8042_state *st, uint8_t *kbd,
			  uint8_t *aux)
{
	uint8_t ctr = st->ram[0];
	bool is_aux =
		st->q_count && (st->q_str[st->q_head] & KVM_I8042_STR_AUXDATA);

	*kbd = st->q_count && !is_aux && (ctr & KVM_I8042_CTR_KBDINT);
	*aux = is_aux && (ctr & KVM_I8042_CTR_AUXINT);
}

static void i8042__update_irq(struct kvm_i8042 *k)
{
	struct kvm_i8042_state *st = &k->st;
	uint8_t kbd, aux;

	i8042__levels(st, &kbd, &aux);
	if (kbd != st->kbd_level) {
		st->kbd_level = kbd;
		kvm_irq__set(k->irq, KVM_I8042_KBD_IRQ, kbd);
	}
	if (aux != st->aux_level) {
		st->aux_level = aux;
		kvm_irq__set(k->irq, KVM_I8042_AUX_IRQ, aux);
	}
}

/* Queue a byte for the guest; a full queue drops it (never happens with
 * one command outstanding at a time). */
static void i8042__push(struct kvm_i8042_state *st, uint8_t c, uint8_t str)
{
	unsigned int tail;

	if (st->q_count >= KVM_I8042_QUEUE)
		return;
	tail = (st->q_head + st->q_count) % KVM_I8042_QUEUE;
	st->q[tail] = c;
	st->q_str[tail] = str;
	st->q_count++;
}

static void i8042__pulse_reset(struct kvm_i8042 *k)
{
	if (k->reset)
		k->reset(k->reset_ctx);
}

static void i8042__command(struct kvm_i8042 *k, uint8_t cmd)
{
	struct kvm_i8042_state *st = &k->st;
	uint8_t *ctr = i8042__ctr(st);

	st->cmd_last = 1;
	st->pending = 0;
	if (cmd >= 0x20 && cmd <= 0x3f) { /* read controller RAM */
		i8042__push(st, st->ram[cmd - 0x20], 0);
		return;
	}
	if ((cmd >= 0x60 && cmd <= 0x7f) || (cmd >= 0xd1 && cmd <= 0xd4)) {
		st->pending = cmd; /* the data byte follows on 0x60 */
		return;
	}
	if (cmd >= 0xf0) {
		/* Pulse output port bits 0-3 low for each 0 in the command:
		 * bit 0 is the CPU reset line. */
		if (!(cmd & I8042_OUT_RESET))
			i8042__pulse_reset(k);
		return;
	}
	switch (cmd) {
	case 0xa7: /* disable mouse port */
		*ctr |= KVM_I8042_CTR_AUXDIS;
		break;
	case 0xa8: /* enable mouse port */
		*ctr &= (uint8_t)~KVM_I8042_CTR_AUXDIS;
		break;
	case 0xa9: /* mouse interface test: no error */
	case 0xab: /* keyboard interface test: no error */
		i8042__push(st, 0x00, 0);
		break;
	case 0xaa: /* controller self test */
		*ctr |= KVM_I8042_CTR_SYS;
		i8042__push(st, I8042_RET_TEST_OK, 0);
		break;
	case 0xad: /* disable keyboard port */
		*ctr |= KVM_I8042_CTR_KBDDIS;
		break;
	case 0xae: /* enable keyboard port */
		*ctr &= (uint8_t)~KVM_I8042_CTR_KBDDIS;
		break;
	case 0xc0: /* read input port: keyboard not inhibited */
		i8042__push(st, 0x80, 0);
		break;
	case 0xd0: /* read output port */
		i8042__push(st, st->outport, 0);
		break;
	case 0xe0: /* read test inputs */
		i8042__push(st, 0x00, 0);
		break;
	default: /* unknown or vendor commands: ignored, no answer */
		break;
	}
}

static void i8042__data(struct kvm_i8042 *k, uint8_t val)
{
	struct kvm_i8042_state *st = &k->st;
	uint8_t cmd = st->pending;

	st->cmd_last = 0;
	st->pending = 0;
	if (cmd >= 0x60 && cmd <= 0x7f) {
		st->ram[cmd - 0x60] = val;
		return;
	}
	switch (cmd) {
	case 0xd1: /* write output port: bit 0 low holds the CPU in reset */
		st->outport = val;
		if (!(val & I8042_OUT_RESET))
			i8042__pulse_reset(k);
		break;
	case 0xd2: /* as if the keyboard sent val */
		i8042__push(st, val, 0);
		break;
	case 0xd3: /* as if the mouse sent val */
		i8042__push(st, val, KVM_I8042_STR_AUXDATA);
		break;
	case 0xd4: /* to the mouse: there is none */
		i8042__push(st, I8042_RET_NO_DEVICE,
			    KVM_I8042_STR_AUXDATA | KVM_I8042_STR_TIMEOUT);
		break;
	default: /* to the keyboard: there is none */
		i8042__push(st, I8042_RET_NO_DEVICE, KVM_I8042_STR_TIMEOUT);
		break;
	}
}

static uint8_t i8042__status(const struct kvm_i8042_state *st)
{
	uint8_t v = KVM_I8042_STR_KEYLOCK;

	if (st->ram[0] & KVM_I8042_CTR_SYS)
		v |= KVM_I8042_STR_SYS;
	if (st->cmd_last)
		v |= KVM_I8042_STR_CMD;
	if (st->q_count)
		v |= KVM_I8042_STR_OBF | st->q_str[st->q_head];
	return v;
}

/* An empty output buffer reads the last byte again, as the latch does. */
static uint8_t i8042__read_data(struct kvm_i8042_state *st)
{
	if (st->q_count) {
		st->last = st->q[st->q_head];
		st->q_head = (st->q_head + 1) % KVM_I8042_QUEUE;
		st->q_count--;
	}
	return st->last;
}

static int i8042__pio_in(void *dev, uint16_t port, void *data,
			 unsigned int size)
{
	struct kvm_i8042 *k = dev;
	uint8_t *p = data;

	memset(p, 0xff, size);
	if (port == KVM_I8042_DATA)
		p[0] = i8042__read_data(&k->st);
	else
		p[0] = i8042__status(&k->st);
	i8042__update_irq(k);
	return 0;
}

static int i8042__pio_out(void *dev, uint16_t port, const void *data,
			  unsigned int size)
{
	struct kvm_i8042 *k = dev;
	uint8_t val = *(const uint8_t *)data;

	(void)size; /* the controller sees the low byte only */
	if (port == KVM_I8042_DATA)
		i8042__data(k, val);
	else
		i8042__command(k, val);
	i8042__update_irq(k);
	return 0;
}

static const struct kvm_pio_ops i8042__ops = {
	.in = i8042__pio_in,
	.out = i8042__pio_out,
};

void kvm_i8042__init(struct kvm_i8042 *k, const struct kvm_irq *irq,
		     kvm_i8042_reset_fn *reset, void *reset_ctx)
{
	memset(k, 0, sizeof(*k));
	k->irq = irq;
	k->reset = reset;
	k->reset_ctx = reset_ctx;
	k->st.ram[0] = KVM_I8042_CTR_RESET;
	k->st.outport = I8042_OUT_RESET | I8042_OUT_A20;
}

int kvm_i8042__register(struct kvm_i8042 *k, struct kvm_pio_bus *bus)
{
	int err;

	err = kvm_pio__register(bus, KVM_I8042_DATA, 1, &i8042__ops, k);
	if (err)
		return err;
	err = kvm_pio__register(bus, KVM_I8042_CMD, 1, &i8042__ops, k);
	if (err)
		goto err_unregister_data;
	return 0;

err_unregister_data:
	kvm_pio__move(bus, k, KVM_I8042_DATA, 0, 0);
	return err;
}

int kvm_i8042__save(const struct kvm_i8042 *k, struct kemari_buf *out)
{
	return kemari_buf__append(out, &k->st, sizeof(k->st));
}

int kvm_i8042__load(struct kvm_i8042 *k, const void *blob, size_t len)
{
	struct kvm_i8042_state st;

	if (len != sizeof(st))
		return -EINVAL;
	memcpy(&st, blob, sizeof(st));
	if (st.q_head >= KVM_I8042_QUEUE || st.q_count > KVM_I8042_QUEUE)
		return -EINVAL;
	k->st = st;
	/* Drive both lines to what the restored state says. */
	i8042__levels(&k->st, &k->st.kbd_level, &k->st.aux_level);
	kvm_irq__set(k->irq, KVM_I8042_KBD_IRQ, k->st.kbd_level);
	kvm_irq__set(k->irq, KVM_I8042_AUX_IRQ, k->st.aux_level);
	return 0;
}
