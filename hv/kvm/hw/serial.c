// SPDX-License-Identifier: MIT
/*
 * 16550A UART. What Linux's 8250 driver checks, and how this model answers:
 *
 * autoconfig(): IER bits 0-3 read back, 4-7 read 0 (so the Xscale UUE test
 * fails); MCR.LOOP maps RTS/DTR/OUT1/OUT2 onto CTS/DSR/RI/DCD, so the
 * loopback test reads MSR 0x90; IIR bits 7:6 are 11 once FCR.0 is set and
 * IIR is what offset 2 reads whatever LCR holds (a 16550A has no EFR), so
 * the EFR probes with LCR 0x80 and 0xbf read non-zero; IIR bits 4 and 5 stay
 * 0 (not a NatSemi, not a TI16750); size_fifo() loops bytes back into a
 * 16-byte FIFO and counts 16 (not a U6_16550A).
 *
 * serial8250_do_startup(): THRE is re-reported in IIR each time IER.THRI
 * goes from 0 to 1 while THR is empty, and cleared by the IIR read that
 * reports it, so neither UART_BUG_THRE nor UART_BUG_TXEN is set.
 */
#include <errno.h>
#include <linux/serial_reg.h>
#include <string.h>

#include "kemari/buf.h"
#include "serial.h"

_Static_assert(sizeof(struct kvm_serial_state) == 16 + KVM_SERIAL_RXBUF,
	       "kvm_serial_state must stay free of padding");

#define SER_IER_MASK 0x0f
#define SER_MCR_MASK 0x1f
#define SER_FCR_KEEP (UART_FCR_ENABLE_FIFO | UART_FCR_DMA_SELECT | 0xc0)
#define SER_IIR_FIFO 0xc0
#define SER_MSR_IDLE (UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS)

static void ser__rx_clear(struct kvm_serial_state *st)
{
	st->rx_head = 0;
	st->rx_count = 0;
}

static void ser__rx_push(struct kvm_serial_state *st, uint8_t c)
{
	st->rx[(st->rx_head + st->rx_count) % KVM_SERIAL_RXBUF] = c;
	st->rx_count++;
}

/* Modem status lines: looped back from MCR, else a connected terminal. */
static uint8_t ser__msr_lines(uint8_t mcr)
{
	if (!(mcr & UART_MCR_LOOP))
		return SER_MSR_IDLE;
	return ((mcr & UART_MCR_RTS) ? UART_MSR_CTS : 0) |
	       ((mcr & UART_MCR_DTR) ? UART_MSR_DSR : 0) |
	       ((mcr & UART_MCR_OUT1) ? UART_MSR_RI : 0) |
	       ((mcr & UART_MCR_OUT2) ? UART_MSR_DCD : 0);
}

/* The highest-priority enabled interrupt, as IIR bits 3:0. */
static uint8_t ser__iid(const struct kvm_serial_state *st)
{
	if ((st->ier & UART_IER_RLSI) &&
	    (st->lsr_err & UART_LSR_BRK_ERROR_BITS))
		return UART_IIR_RLSI;
	if ((st->ier & UART_IER_RDI) && st->rx_count)
		return UART_IIR_RDI;
	if ((st->ier & UART_IER_THRI) && st->thr_ipending)
		return UART_IIR_THRI;
	if ((st->ier & UART_IER_MSI) && (st->msr_delta & UART_MSR_ANY_DELTA))
		return UART_IIR_MSI;
	return UART_IIR_NO_INT;
}

static int ser__line(const struct kvm_serial_state *st)
{
	return ser__iid(st) != UART_IIR_NO_INT && (st->mcr & UART_MCR_OUT2) &&
	       !(st->mcr & UART_MCR_LOOP);
}

/*
 * Drive the line only when its level changes. KVM_IRQ_LINE on an ISA GSI
 * reaches both the in-kernel 8259 and IOAPIC, which take ISA IRQs as
 * edge-triggered, active high (the MP table marks them "conforming"). A
 * 16550 on a PC holds INTRPT high while any enabled condition is pending
 * and OUT2 gates it onto the bus; the 8250 handler loops reading IIR until
 * it says "no interrupt", which drops the line here, so the next condition
 * makes a fresh rising edge. Holding the level (rather than pulsing 1 then 0
 * per event) keeps KVM's line state equal to this model's, which is what
 * KVM_GET_IRQCHIP saves and a replica restores before kvm_serial__load().
 * In loopback mode a 16550 forces OUT2 inactive: no interrupts reach the
 * PIC while Linux's size_fifo() floods the FIFO.
 */
static void ser__update_irq(struct kvm_serial *s)
{
	int level = ser__line(&s->st);

	if (level == s->st.irq_level)
		return;
	s->st.irq_level = (uint8_t)level;
	kvm_irq__set(s->irq, s->gsi, level);
}

static void ser__tx(struct kvm_serial *s, uint8_t c)
{
	struct kvm_serial_state *st = &s->st;
	unsigned int depth =
		(st->fcr & UART_FCR_ENABLE_FIFO) ? KVM_SERIAL_FIFO : 1;

	if (st->mcr & UART_MCR_LOOP) {
		if (st->rx_count < depth)
			ser__rx_push(st, c);
		else
			st->lsr_err |= UART_LSR_OE;
	} else if (s->tx) {
		s->tx(s->tx_ctx, &c, 1);
	}
	/* Sent at once: THR is empty again, which is a THRE interrupt. */
	st->thr_ipending = 1;
}

static void ser__write_fcr(struct kvm_serial_state *st, uint8_t val)
{
	/* Toggling FCR.0 resets both FIFOs, as on the chip. */
	if (((val ^ st->fcr) & UART_FCR_ENABLE_FIFO) ||
	    (val & UART_FCR_CLEAR_RCVR))
		ser__rx_clear(st);
	st->fcr = val & SER_FCR_KEEP;
}

static void ser__write_mcr(struct kvm_serial_state *st, uint8_t val)
{
	uint8_t was = ser__msr_lines(st->mcr), now;

	st->mcr = val & SER_MCR_MASK;
	now = ser__msr_lines(st->mcr);
	if ((was ^ now) & UART_MSR_CTS)
		st->msr_delta |= UART_MSR_DCTS;
	if ((was ^ now) & UART_MSR_DSR)
		st->msr_delta |= UART_MSR_DDSR;
	if ((was & UART_MSR_RI) && !(now & UART_MSR_RI))
		st->msr_delta |= UART_MSR_TERI;
	if ((was ^ now) & UART_MSR_DCD)
		st->msr_delta |= UART_MSR_DDCD;
}

static void ser__out(struct kvm_serial *s, unsigned int reg, uint8_t val)
{
	struct kvm_serial_state *st = &s->st;
	bool dlab = st->lcr & UART_LCR_DLAB;
	uint8_t old;

	switch (reg) {
	case UART_TX:
		if (dlab)
			st->dll = val;
		else
			ser__tx(s, val);
		break;
	case UART_IER:
		if (dlab) {
			st->dlm = val;
			break;
		}
		old = st->ier;
		st->ier = val & SER_IER_MASK;
		/* THR is always empty: enabling THRI raises THRE at once. */
		if ((st->ier & UART_IER_THRI) && !(old & UART_IER_THRI))
			st->thr_ipending = 1;
		else if (!(st->ier & UART_IER_THRI))
			st->thr_ipending = 0;
		break;
	case UART_FCR:
		ser__write_fcr(st, val);
		break;
	case UART_LCR:
		st->lcr = val;
		break;
	case UART_MCR:
		ser__write_mcr(st, val);
		break;
	case UART_SCR:
		st->scr = val;
		break;
	default: /* LSR, MSR: factory test registers, ignored */
		break;
	}
}

static uint8_t ser__in(struct kvm_serial *s, unsigned int reg)
{
	struct kvm_serial_state *st = &s->st;
	bool dlab = st->lcr & UART_LCR_DLAB;
	uint8_t v, iid;

	switch (reg) {
	case UART_RX:
		if (dlab)
			return st->dll;
		if (st->rx_count) {
			st->rbr = st->rx[st->rx_head];
			st->rx_head = (st->rx_head + 1) % KVM_SERIAL_RXBUF;
			st->rx_count--;
		}
		return st->rbr;
	case UART_IER:
		return dlab ? st->dlm : st->ier;
	case UART_IIR:
		iid = ser__iid(st);
		if (iid == UART_IIR_THRI)
			st->thr_ipending = 0;
		return iid |
		       ((st->fcr & UART_FCR_ENABLE_FIFO) ? SER_IIR_FIFO : 0);
	case UART_LCR:
		return st->lcr;
	case UART_MCR:
		return st->mcr;
	case UART_LSR:
		v = UART_LSR_THRE | UART_LSR_TEMT | st->lsr_err |
		    (st->rx_count ? UART_LSR_DR : 0);
		st->lsr_err = 0;
		return v;
	case UART_MSR:
		v = ser__msr_lines(st->mcr) | st->msr_delta;
		st->msr_delta = 0;
		return v;
	case UART_SCR:
		return st->scr;
	}
	return 0xff;
}

/*
 * A wider access is split into byte accesses to consecutive registers, as
 * the ISA bus does for an 8-bit device; bytes past the 8 ports read 0xff.
 */
static int ser__pio_in(void *dev, uint16_t port, void *data, unsigned int size)
{
	struct kvm_serial *s = dev;
	uint8_t *p = data;

	for (unsigned int i = 0; i < size; i++) {
		unsigned int reg = (unsigned int)(port - s->base) + i;

		p[i] = reg < KVM_SERIAL_PORTS ? ser__in(s, reg) : 0xff;
	}
	ser__update_irq(s);
	return 0;
}

static int ser__pio_out(void *dev, uint16_t port, const void *data,
			unsigned int size)
{
	struct kvm_serial *s = dev;
	const uint8_t *p = data;

	for (unsigned int i = 0; i < size; i++) {
		unsigned int reg = (unsigned int)(port - s->base) + i;

		if (reg < KVM_SERIAL_PORTS)
			ser__out(s, reg, p[i]);
	}
	ser__update_irq(s);
	return 0;
}

static const struct kvm_pio_ops ser__ops = {
	.in = ser__pio_in,
	.out = ser__pio_out,
};

void kvm_serial__reset(struct kvm_serial *s)
{
	uint8_t was = s->st.irq_level;

	memset(&s->st, 0, sizeof(s->st));
	if (was)
		kvm_irq__set(s->irq, s->gsi, 0);
}

void kvm_serial__init(struct kvm_serial *s, uint16_t base, unsigned int gsi,
		      const struct kvm_irq *irq, kvm_serial_tx_fn *tx,
		      void *tx_ctx)
{
	memset(s, 0, sizeof(*s));
	s->base = base;
	s->gsi = gsi;
	s->irq = irq;
	s->tx = tx;
	s->tx_ctx = tx_ctx;
}

int kvm_serial__register(struct kvm_serial *s, struct kvm_pio_bus *bus)
{
	return kvm_pio__register(bus, s->base, KVM_SERIAL_PORTS, &ser__ops, s);
}

size_t kvm_serial__rx_room(const struct kvm_serial *s)
{
	if (s->st.mcr & UART_MCR_LOOP)
		return 0;
	return KVM_SERIAL_RXBUF - s->st.rx_count;
}

size_t kvm_serial__input(struct kvm_serial *s, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t n = kvm_serial__rx_room(s);

	if (n > len)
		n = len;
	for (size_t i = 0; i < n; i++)
		ser__rx_push(&s->st, p[i]);
	ser__update_irq(s);
	return n;
}

int kvm_serial__save(const struct kvm_serial *s, struct kemari_buf *out)
{
	return kemari_buf__append(out, &s->st, sizeof(s->st));
}

int kvm_serial__load(struct kvm_serial *s, const void *blob, size_t len)
{
	struct kvm_serial_state st;
	int level;

	if (len != sizeof(st))
		return -EINVAL;
	memcpy(&st, blob, sizeof(st));
	if (st.rx_head >= KVM_SERIAL_RXBUF || st.rx_count > KVM_SERIAL_RXBUF)
		return -EINVAL;
	s->st = st;
	level = ser__line(&s->st);
	s->st.irq_level = (uint8_t)level;
	kvm_irq__set(s->irq, s->gsi, level);
	return 0;
}
