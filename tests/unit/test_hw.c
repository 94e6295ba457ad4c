// SPDX-License-Identifier: MIT
/*
 * Legacy PC platform models (hv/kvm/hw/): guest memory lookups, the port I/O
 * bus, the 16550A UART, the i8042, the CMOS RTC and PCI configuration
 * mechanism #1. Each is driven through the port I/O bus the way Linux's
 * drivers drive the real chips, with a recording interrupt sink.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <linux/serial_reg.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "../../hv/kvm/boot/linux_boot.h"
#include "../../hv/kvm/hw/hw.h"
#include "../../hv/kvm/hw/i8042.h"
#include "../../hv/kvm/hw/pci.h"
#include "../../hv/kvm/hw/rtc.h"
#include "../../hv/kvm/hw/serial.h"
#include "kemari/buf.h"

#define GiB (1ULL << 30)

/* ---- recording interrupt sink and port I/O helpers ---------------------- */

struct irq_ev {
	unsigned int gsi;
	int level;
};

struct irq_log {
	unsigned int n;
	struct irq_ev ev[512];
	int level[24];
};

static void irq_record(void *ctx, unsigned int gsi, int level)
{
	struct irq_log *l = ctx;

	cr_assert(lt(uint, gsi, 24));
	if (l->n < sizeof(l->ev) / sizeof(l->ev[0]))
		l->ev[l->n] = (struct irq_ev){ gsi, level };
	l->n++;
	l->level[gsi] = level;
}

static void expect_ev(const struct irq_log *l, unsigned int i, unsigned int gsi,
		      int level)
{
	cr_assert(lt(uint, i, l->n), "event %u of %u", i, l->n);
	cr_assert(eq(uint, l->ev[i].gsi, gsi), "event %u", i);
	cr_assert(eq(int, l->ev[i].level, level), "event %u", i);
}

static uint32_t io_in(struct kvm_pio_bus *bus, uint16_t port, unsigned int size)
{
	uint8_t b[4] = { 0 };
	bool claimed;

	cr_assert(eq(int, kvm_pio__io(bus, port, true, b, size, &claimed), 0));
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	       (uint32_t)b[3] << 24;
}

static void io_out(struct kvm_pio_bus *bus, uint16_t port, unsigned int size,
		   uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			 (uint8_t)(v >> 24) };
	bool claimed;

	cr_assert(eq(int, kvm_pio__io(bus, port, false, b, size, &claimed), 0));
}

static uint8_t inb(struct kvm_pio_bus *bus, uint16_t port)
{
	return (uint8_t)io_in(bus, port, 1);
}

static void outb(struct kvm_pio_bus *bus, uint16_t port, uint8_t v)
{
	io_out(bus, port, 1, v);
}

static bool claimed_by_anyone(struct kvm_pio_bus *bus, uint16_t port)
{
	uint8_t b = 0;
	bool claimed;

	cr_assert(eq(int, kvm_pio__io(bus, port, true, &b, 1, &claimed), 0));
	return claimed;
}

/* ---- hw_gmem --------------------------------------------------------------- */

/* Address space without memory behind it: the lookups are arithmetic. */
static uint8_t *reserve(uint64_t size)
{
	void *p = mmap(NULL, size, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	cr_assert(ne(ptr, p, MAP_FAILED));
	return p;
}

Test(hw_gmem, below_the_hole_maps_one_to_one)
{
	uint64_t size = 2 * GiB;
	struct kvm_gmem m = { .ram = reserve(size), .ram_size = size };

	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 0, 4096), m.ram));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 0x9fc00, 0x400), m.ram + 0x9fc00));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, size - 4096, 4096),
		     m.ram + size - 4096));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 0x1234, 0), m.ram + 0x1234));
	/* Past the end of RAM, in the hole, above 4 GiB: none is RAM. */
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, size - 4095, 4096), NULL));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, size, 1), NULL));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 3 * GiB, 1), NULL));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 4 * GiB, 1), NULL));
	munmap(m.ram, size);
}

Test(hw_gmem, above_4g_skips_the_pci_hole)
{
	uint64_t size = 5 * GiB; /* 3 GiB low, 2 GiB at [4 GiB, 6 GiB) */
	struct kvm_gmem m = { .ram = reserve(size), .ram_size = size };

	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 3 * GiB - 4096, 4096),
		     m.ram + 3 * GiB - 4096));
	/* A range may not run into the hole, nor start inside it. */
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 3 * GiB - 4096, 4097), NULL));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 3 * GiB, 1), NULL));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 0xfec00000, 4), NULL));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 4 * GiB - 1, 2), NULL));
	/* 4 GiB is host offset 3 GiB. */
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 4 * GiB, 4096), m.ram + 3 * GiB));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 6 * GiB - 1, 1), m.ram + size - 1));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 6 * GiB - 4096, 4097), NULL));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 6 * GiB, 1), NULL));
	/* Wrap-around is refused, not folded back into RAM. */
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, UINT64_MAX, 2), NULL));
	cr_assert(eq(ptr, kvm_gmem__ptr(&m, 4096, UINT64_MAX), NULL));
	munmap(m.ram, size);
}

static void dirty_rec(void *ctx, uint64_t gpa, uint64_t len)
{
	uint64_t *r = ctx;

	r[0] = gpa;
	r[1] = len;
	r[2]++;
}

Test(hw_gmem, dirty_marks_reach_the_callback)
{
	uint64_t rec[3] = { 0 };
	struct kvm_gmem m = { .mark_dirty = dirty_rec, .ctx = rec };
	struct kvm_gmem none = { 0 };

	kvm_gmem__dirty(&m, 0x5000, 0x20);
	cr_assert(eq(u64, rec[0], 0x5000));
	cr_assert(eq(u64, rec[1], 0x20));
	kvm_gmem__dirty(&m, 0x6000, 0); /* nothing written, nothing marked */
	cr_assert(eq(u64, rec[2], 1));
	kvm_gmem__dirty(&none, 0x5000, 1);
}

/* ---- hw_pio ---------------------------------------------------------------- */

struct pio_probe {
	uint16_t last_port;
	unsigned int last_size;
	uint32_t written;
	unsigned int ins, outs;
};

static int probe_in(void *dev, uint16_t port, void *data, unsigned int size)
{
	struct pio_probe *p = dev;

	p->last_port = port;
	p->last_size = size;
	p->ins++;
	memset(data, 0x5a, size);
	return 0;
}

static int probe_out(void *dev, uint16_t port, const void *data,
		     unsigned int size)
{
	struct pio_probe *p = dev;

	p->last_port = port;
	p->last_size = size;
	p->outs++;
	p->written = 0;
	memcpy(&p->written, data, size);
	return 0;
}

static const struct kvm_pio_ops probe_ops = {
	.in = probe_in,
	.out = probe_out,
};

Test(hw_pio, routes_to_the_owner_and_unclaimed_reads_all_ones)
{
	struct kvm_pio_bus bus = { 0 };
	struct pio_probe p = { 0 };
	uint8_t b[4];
	bool claimed;

	cr_assert(eq(int, kvm_pio__register(&bus, 0x500, 0x10, &probe_ops, &p),
		     0));
	cr_assert(eq(u32, io_in(&bus, 0x50f, 2), 0x5a5a));
	cr_assert(eq(u16, p.last_port, 0x50f));
	cr_assert(eq(uint, p.last_size, 2));
	io_out(&bus, 0x504, 4, 0xdeadbeef);
	cr_assert(eq(u32, p.written, 0xdeadbeef));

	memset(b, 0, sizeof(b));
	cr_assert(eq(int, kvm_pio__io(&bus, 0x510, true, b, 4, &claimed), 0));
	cr_assert(eq(int, claimed, 0));
	cr_assert(eq(u32, b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24,
		     0xffffffff));
	cr_assert(eq(int, kvm_pio__io(&bus, 0x4ff, false, b, 1, &claimed), 0));
	cr_assert(eq(int, claimed, 0));
	cr_assert(eq(uint, p.ins, 1));
	cr_assert(eq(uint, p.outs, 1));
}

Test(hw_pio, refuses_overlaps_bad_ranges_and_a_full_table)
{
	struct kvm_pio_bus bus = { 0 };
	struct pio_probe p = { 0 };

	cr_assert(eq(int, kvm_pio__register(&bus, 0x500, 0x10, &probe_ops, &p),
		     0));
	cr_assert(eq(int, kvm_pio__register(&bus, 0x50f, 1, &probe_ops, &p),
		     -EEXIST));
	cr_assert(eq(int, kvm_pio__register(&bus, 0x4f0, 0x11, &probe_ops, &p),
		     -EEXIST));
	cr_assert(eq(int, kvm_pio__register(&bus, 0x4f0, 0x10, &probe_ops, &p),
		     0));
	cr_assert(eq(int, kvm_pio__register(&bus, 0x600, 0, &probe_ops, &p),
		     -EINVAL));
	cr_assert(eq(int, kvm_pio__register(&bus, 0xfff0, 0x11, &probe_ops, &p),
		     -EINVAL));
	cr_assert(eq(int, kvm_pio__register(&bus, 0xfff0, 0x10, &probe_ops, &p),
		     0));
	while (bus.n < KVM_PIO_MAX)
		cr_assert(eq(int,
			     kvm_pio__register(&bus, (uint16_t)(0x1000 + bus.n),
					       1, &probe_ops, &p),
			     0));
	cr_assert(eq(int, kvm_pio__register(&bus, 0x3000, 1, &probe_ops, &p),
		     -ENOSPC));
}

Test(hw_pio, move_and_remove)
{
	struct kvm_pio_bus bus = { 0 };
	struct pio_probe p = { 0 }, q = { 0 };

	cr_assert(eq(int, kvm_pio__register(&bus, 0xc000, 0x20, &probe_ops, &p),
		     0));
	cr_assert(eq(int, kvm_pio__register(&bus, 0xc040, 0x20, &probe_ops, &q),
		     0));
	cr_assert(eq(int, kvm_pio__move(&bus, &p, 0xc040, 0xd000, 0x20),
		     -ENOENT));
	cr_assert(eq(int, kvm_pio__move(&bus, &p, 0xc000, 0xd000, 0x20), 0));
	cr_assert(eq(int, claimed_by_anyone(&bus, 0xc000), 0));
	cr_assert(eq(u8, inb(&bus, 0xd01f), 0x5a));
	cr_assert(eq(u16, p.last_port, 0xd01f));
	cr_assert(eq(int, kvm_pio__move(&bus, &q, 0xc040, 0, 0), 0));
	cr_assert(eq(int, claimed_by_anyone(&bus, 0xc040), 0));
	cr_assert(eq(uint, q.ins, 0));
}

/* ---- hw_serial ------------------------------------------------------------- */

#define COM1 KVM_SERIAL_COM1_BASE

struct uart_fixture {
	struct kvm_pio_bus bus;
	struct irq_log irqs;
	struct kvm_irq irq;
	struct kvm_serial s;
	uint8_t out[1024];
	size_t nout;
};

static void tx_capture(void *ctx, const uint8_t *buf, size_t len)
{
	struct uart_fixture *f = ctx;

	for (size_t i = 0; i < len && f->nout < sizeof(f->out); i++)
		f->out[f->nout++] = buf[i];
}

static void uart_setup(struct uart_fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->irq = (struct kvm_irq){ .set = irq_record, .ctx = &f->irqs };
	kvm_serial__init(&f->s, COM1, KVM_SERIAL_COM1_IRQ, &f->irq, tx_capture,
			 f);
	cr_assert(eq(int, kvm_serial__register(&f->s, &f->bus), 0));
}

static uint8_t uin(struct uart_fixture *f, unsigned int reg)
{
	return inb(&f->bus, (uint16_t)(COM1 + reg));
}

static void uout(struct uart_fixture *f, unsigned int reg, uint8_t v)
{
	outb(&f->bus, (uint16_t)(COM1 + reg), v);
}

Test(hw_serial, power_on_register_values)
{
	struct uart_fixture f;

	uart_setup(&f);
	cr_assert(eq(u8, uin(&f, UART_IER), 0x00));
	cr_assert(eq(u8, uin(&f, UART_IIR), 0x01));
	cr_assert(eq(u8, uin(&f, UART_LCR), 0x00));
	cr_assert(eq(u8, uin(&f, UART_MCR), 0x00));
	cr_assert(eq(u8, uin(&f, UART_LSR), 0x60));
	cr_assert(eq(u8, uin(&f, UART_MSR), 0xb0));
	cr_assert(eq(u8, uin(&f, UART_SCR), 0x00));
	cr_assert(eq(uint, f.irqs.n, 0));
}

Test(hw_serial, output_bytes_reach_the_callback_and_dlab_hides_thr)
{
	struct uart_fixture f;

	uart_setup(&f);
	uout(&f, UART_TX, 'o');
	uout(&f, UART_TX, 'k');
	/* Divisor latch: offsets 0 and 1 are DLL and DLM, not THR/IER. */
	uout(&f, UART_LCR, UART_LCR_DLAB | UART_LCR_WLEN8);
	uout(&f, UART_DLL, 0x01);
	uout(&f, UART_DLM, 0x02);
	cr_assert(eq(u8, uin(&f, UART_DLL), 0x01));
	cr_assert(eq(u8, uin(&f, UART_DLM), 0x02));
	uout(&f, UART_LCR, UART_LCR_WLEN8);
	cr_assert(eq(u8, uin(&f, UART_IER), 0x00));
	uout(&f, UART_TX, '\n');
	cr_assert(eq(sz, f.nout, 3));
	cr_assert(eq(int, memcmp(f.out, "ok\n", 3), 0));
	cr_assert(eq(u8, uin(&f, UART_LSR) & 0x60, 0x60));
	/* Scratch register and IER's upper nibble. */
	uout(&f, UART_SCR, 0xa5);
	cr_assert(eq(u8, uin(&f, UART_SCR), 0xa5));
	uout(&f, UART_IER, 0xff);
	cr_assert(eq(u8, uin(&f, UART_IER), 0x0f));
}

/*
 * drivers/tty/serial/8250/8250_port.c autoconfig(), autoconfig_16550a()
 * and size_fifo(), as port accesses, returning the type Linux settles on.
 */
static unsigned int linux_size_fifo(struct uart_fixture *f)
{
	uint8_t old_lcr, old_fcr, old_mcr, dll, dlm;
	unsigned int count;

	old_lcr = uin(f, UART_LCR);
	uout(f, UART_LCR, 0);
	old_fcr = uin(f, UART_FCR);
	old_mcr = uin(f, UART_MCR);
	uout(f, UART_FCR,
	     UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT);
	uout(f, UART_MCR, UART_MCR_LOOP);
	uout(f, UART_LCR, UART_LCR_CONF_MODE_A);
	dll = uin(f, UART_DLL);
	dlm = uin(f, UART_DLM);
	uout(f, UART_DLL, 1);
	uout(f, UART_DLM, 0);
	uout(f, UART_LCR, 0x03);
	for (count = 0; count < 256; count++)
		uout(f, UART_TX, (uint8_t)count);
	for (count = 0; (uin(f, UART_LSR) & UART_LSR_DR) && count < 256;
	     count++)
		uin(f, UART_RX);
	uout(f, UART_FCR, old_fcr);
	uout(f, UART_MCR, old_mcr);
	uout(f, UART_LCR, UART_LCR_CONF_MODE_A);
	uout(f, UART_DLL, dll);
	uout(f, UART_DLM, dlm);
	uout(f, UART_LCR, old_lcr);
	return count;
}

static const char *linux_autoconfig(struct uart_fixture *f)
{
	uint8_t scratch, scratch2, scratch3, save_mcr, save_lcr, st1, st2, ier;
	const char *type = "unknown";

	scratch = uin(f, UART_IER);
	uout(f, UART_IER, 0);
	scratch2 = uin(f, UART_IER) & 0x0f;
	uout(f, UART_IER, 0x0f);
	scratch3 = uin(f, UART_IER) & 0x0f;
	uout(f, UART_IER, scratch);
	if (scratch2 != 0 || scratch3 != 0x0f)
		return "IER test failed";

	save_mcr = uin(f, UART_MCR);
	save_lcr = uin(f, UART_LCR);
	uout(f, UART_MCR, UART_MCR_LOOP | 0x0a);
	st1 = uin(f, UART_MSR) & 0xf0;
	uout(f, UART_MCR, save_mcr);
	if (st1 != 0x90)
		return "LOOP test failed";

	uout(f, UART_LCR, UART_LCR_CONF_MODE_B);
	uout(f, UART_EFR, 0);
	uout(f, UART_LCR, 0);
	uout(f, UART_FCR, UART_FCR_ENABLE_FIFO);
	switch (uin(f, UART_IIR) >> 6) {
	case 0:
		return "8250/16450";
	case 1:
		return "unknown";
	case 2:
		return "16550";
	}

	/* autoconfig_16550a() */
	uout(f, UART_LCR, UART_LCR_CONF_MODE_A);
	if (uin(f, UART_EFR) == 0)
		return "ST16650";
	uout(f, UART_LCR, UART_LCR_CONF_MODE_B);
	if (uin(f, UART_EFR) == 0)
		return "ST16650V2";
	uout(f, UART_LCR, 0);
	st1 = uin(f, UART_MCR);
	uout(f, UART_LCR, 0xe0);
	st2 = uin(f, 0x02);
	if (!((st2 ^ st1) & UART_MCR_LOOP)) {
		uout(f, UART_LCR, 0);
		uout(f, UART_MCR, st1 ^ UART_MCR_LOOP);
		uout(f, UART_LCR, 0xe0);
		st2 = uin(f, 0x02);
		uout(f, UART_LCR, 0);
		uout(f, UART_MCR, st1);
		if ((st2 ^ st1) & UART_MCR_LOOP)
			return "NS16550A";
	}
	uout(f, UART_LCR, 0);
	uout(f, UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE);
	st1 = uin(f, UART_IIR) >> 5;
	uout(f, UART_FCR, UART_FCR_ENABLE_FIFO);
	uout(f, UART_LCR, UART_LCR_CONF_MODE_A);
	uout(f, UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE);
	st2 = uin(f, UART_IIR) >> 5;
	uout(f, UART_FCR, UART_FCR_ENABLE_FIFO);
	uout(f, UART_LCR, 0);
	if (st1 == 6 && st2 == 7)
		return "TI16750";
	ier = uin(f, UART_IER);
	uout(f, UART_IER, ier & (uint8_t)~UART_IER_UUE);
	if (!(uin(f, UART_IER) & UART_IER_UUE)) {
		uout(f, UART_IER, ier | UART_IER_UUE);
		if (uin(f, UART_IER) & UART_IER_UUE)
			return "XScale";
	}
	uout(f, UART_IER, ier);
	type = linux_size_fifo(f) == 64 ? "U6_16550A" : "16550A";

	uout(f, UART_LCR, save_lcr);
	/* Reset the UART, as autoconfig() ends. */
	uout(f, UART_MCR, save_mcr);
	uout(f, UART_FCR, UART_FCR_ENABLE_FIFO);
	uout(f, UART_FCR,
	     UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT);
	uout(f, UART_FCR, 0);
	uin(f, UART_RX);
	uout(f, UART_IER, 0);
	return type;
}

Test(hw_serial, linux_autoconfig_finds_a_16550a)
{
	struct uart_fixture f;

	uart_setup(&f);
	cr_assert(eq(str, (char *)linux_autoconfig(&f), "16550A"));
	/* The loopback bytes of size_fifo() never left the UART, and no
	 * interrupt was raised on the way. */
	cr_assert(eq(sz, f.nout, 0));
	cr_assert(eq(uint, f.irqs.n, 0));
	cr_assert(eq(u8, uin(&f, UART_LSR), 0x60));
	cr_assert(eq(u8, uin(&f, UART_IIR), 0x01));
}

Test(hw_serial, linux_startup_sees_thre_reasserted)
{
	struct uart_fixture f;
	uint8_t iir1, iir, lsr;

	uart_setup(&f);
	/* serial8250_do_startup(): the UART_BUG_THRE test, MCR still 0. */
	uout(&f, UART_IER, UART_IER_THRI);
	iir1 = uin(&f, UART_IIR);
	uout(&f, UART_IER, 0);
	uout(&f, UART_IER, UART_IER_THRI);
	iir = uin(&f, UART_IIR);
	uout(&f, UART_IER, 0);
	cr_assert(eq(u8, iir1, UART_IIR_THRI));
	cr_assert(eq(u8, iir, UART_IIR_THRI));
	cr_assert(eq(uint, f.irqs.n, 0)); /* OUT2 off: line gated */

	/* OUT2 on, then the UART_BUG_TXEN test. */
	uout(&f, UART_LCR, UART_LCR_WLEN8);
	uout(&f, UART_MCR, UART_MCR_OUT2 | UART_MCR_DTR | UART_MCR_RTS);
	uout(&f, UART_IER, UART_IER_THRI);
	lsr = uin(&f, UART_LSR);
	iir = uin(&f, UART_IIR);
	uout(&f, UART_IER, 0);
	cr_assert(eq(u8, lsr & UART_LSR_TEMT, UART_LSR_TEMT));
	cr_assert(eq(u8, iir & UART_IIR_NO_INT, 0));
	/* Raised by IER.THRI, lowered by the IIR read that reported it. */
	cr_assert(eq(uint, f.irqs.n, 2));
	expect_ev(&f.irqs, 0, 4, 1);
	expect_ev(&f.irqs, 1, 4, 0);
}

Test(hw_serial, thre_interrupt_follows_the_8250_tx_loop)
{
	struct uart_fixture f;

	uart_setup(&f);
	uout(&f, UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_R_TRIG_10);
	uout(&f, UART_MCR, UART_MCR_OUT2);
	/* start_tx: IER.THRI on → THRE pending, line up. */
	uout(&f, UART_IER, UART_IER_RDI | UART_IER_RLSI | UART_IER_THRI);
	cr_assert(eq(uint, f.irqs.n, 1));
	expect_ev(&f.irqs, 0, 4, 1);
	/* Handler: IIR says THRI (with the FIFO bits), reading it clears. */
	cr_assert(eq(u8, uin(&f, UART_IIR), 0xc2));
	cr_assert(eq(uint, f.irqs.n, 2));
	expect_ev(&f.irqs, 1, 4, 0);
	/* tx_chars: each byte leaves THR empty again → THRE pending again. */
	uout(&f, UART_TX, 'a');
	uout(&f, UART_TX, 'b');
	cr_assert(eq(uint, f.irqs.n, 3));
	expect_ev(&f.irqs, 2, 4, 1);
	/* Buffer drained: __stop_tx() clears THRI, the line drops. */
	uout(&f, UART_IER, UART_IER_RDI | UART_IER_RLSI);
	cr_assert(eq(uint, f.irqs.n, 4));
	expect_ev(&f.irqs, 3, 4, 0);
	cr_assert(eq(u8, uin(&f, UART_IIR), 0xc1));
	cr_assert(eq(sz, f.nout, 2));
}

Test(hw_serial, rx_interrupt_assert_deassert_sequence)
{
	struct uart_fixture f;

	uart_setup(&f);
	/* RX data with interrupts still off: no line activity, DR set. */
	cr_assert(eq(sz, kvm_serial__input(&f.s, "x", 1), 1));
	cr_assert(eq(uint, f.irqs.n, 0));
	cr_assert(eq(u8, uin(&f, UART_LSR), 0x61));
	cr_assert(eq(u8, uin(&f, UART_RX), 'x'));
	cr_assert(eq(u8, uin(&f, UART_LSR), 0x60));

	uout(&f, UART_MCR, UART_MCR_OUT2);
	uout(&f, UART_IER, UART_IER_RDI);
	cr_assert(eq(uint, f.irqs.n, 0));
	cr_assert(eq(sz, kvm_serial__input(&f.s, "hi", 2), 2));
	cr_assert(eq(uint, f.irqs.n, 1));
	expect_ev(&f.irqs, 0, 4, 1);
	cr_assert(eq(u8, uin(&f, UART_IIR), UART_IIR_RDI));
	cr_assert(eq(u8, uin(&f, UART_RX), 'h'));
	cr_assert(eq(uint, f.irqs.n, 1)); /* still data: line stays up */
	cr_assert(eq(u8, uin(&f, UART_RX), 'i'));
	cr_assert(eq(uint, f.irqs.n, 2));
	expect_ev(&f.irqs, 1, 4, 0);
	cr_assert(eq(u8, uin(&f, UART_IIR), UART_IIR_NO_INT));
	/* A new byte makes a fresh rising edge. */
	kvm_serial__input(&f.s, "!", 1);
	cr_assert(eq(uint, f.irqs.n, 3));
	expect_ev(&f.irqs, 2, 4, 1);
	/* Dropping OUT2 gates the line as on a PC. */
	uout(&f, UART_MCR, 0);
	cr_assert(eq(uint, f.irqs.n, 4));
	expect_ev(&f.irqs, 3, 4, 0);
	cr_assert(eq(u8, uin(&f, UART_IIR), UART_IIR_RDI));
}

Test(hw_serial, rx_buffer_full_pushes_back_without_loss)
{
	struct uart_fixture f;
	uint8_t in[300];

	uart_setup(&f);
	for (unsigned int i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 7);
	cr_assert(eq(sz, kvm_serial__rx_room(&f.s), KVM_SERIAL_RXBUF));
	cr_assert(eq(sz, kvm_serial__input(&f.s, in, sizeof(in)),
		     KVM_SERIAL_RXBUF));
	cr_assert(eq(sz, kvm_serial__rx_room(&f.s), 0));
	cr_assert(eq(sz, kvm_serial__input(&f.s, in + 256, 44), 0));
	/* Flow-controlled, not overrun: LSR shows data, no OE. */
	cr_assert(eq(u8, uin(&f, UART_LSR), 0x61));
	for (unsigned int i = 0; i < 10; i++)
		cr_assert(eq(u8, uin(&f, UART_RX), in[i]));
	cr_assert(eq(sz, kvm_serial__input(&f.s, in + 256, 44), 10));
	for (unsigned int i = 10; i < 266; i++)
		cr_assert(eq(u8, uin(&f, UART_RX), in[i]), "byte %u", i);
	cr_assert(eq(u8, uin(&f, UART_LSR), 0x60));
	/* Reading an empty receiver repeats the last byte. */
	cr_assert(eq(u8, uin(&f, UART_RX), in[265]));
	/* FCR's receiver reset drops what is queued. */
	kvm_serial__input(&f.s, "abc", 3);
	uout(&f, UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR);
	cr_assert(eq(u8, uin(&f, UART_LSR), 0x60));
}

Test(hw_serial, loopback_fifo_overruns_at_16)
{
	struct uart_fixture f;

	uart_setup(&f);
	uout(&f, UART_FCR, UART_FCR_ENABLE_FIFO);
	uout(&f, UART_MCR, UART_MCR_LOOP | UART_MCR_OUT2);
	uout(&f, UART_IER, 0x0f);
	cr_assert(eq(sz, kvm_serial__input(&f.s, "z", 1), 0)); /* line cut */
	for (unsigned int i = 0; i < 20; i++)
		uout(&f, UART_TX, (uint8_t)('A' + i));
	cr_assert(
		eq(u8, uin(&f, UART_LSR),
		   UART_LSR_TEMT | UART_LSR_THRE | UART_LSR_OE | UART_LSR_DR));
	cr_assert(eq(u8, uin(&f, UART_LSR) & UART_LSR_OE, 0)); /* read clears */
	for (unsigned int i = 0; i < KVM_SERIAL_FIFO; i++)
		cr_assert(eq(u8, uin(&f, UART_RX), (uint8_t)('A' + i)));
	cr_assert(eq(u8, uin(&f, UART_LSR) & UART_LSR_DR, 0));
	cr_assert(eq(sz, f.nout, 0));
	cr_assert(eq(uint, f.irqs.n, 0)); /* loopback: OUT2 is not wired */
	/* 16450 mode: a one-byte holding register. */
	uout(&f, UART_FCR, 0);
	uout(&f, UART_TX, '1');
	uout(&f, UART_TX, '2');
	cr_assert(eq(u8, uin(&f, UART_LSR) & UART_LSR_OE, UART_LSR_OE));
	cr_assert(eq(u8, uin(&f, UART_RX), '1'));
	cr_assert(eq(u8, uin(&f, UART_IIR) & 0xc0, 0));
}

Test(hw_serial, msr_loopback_lines_and_deltas)
{
	struct uart_fixture f;

	uart_setup(&f);
	uout(&f, UART_MCR, UART_MCR_LOOP);
	/* All four lines dropped: DCTS, DDSR, DDCD (RI was already 0). */
	cr_assert(eq(u8, uin(&f, UART_MSR), 0x0b));
	uout(&f, UART_MCR, UART_MCR_LOOP | UART_MCR_OUT1);
	cr_assert(eq(u8, uin(&f, UART_MSR), UART_MSR_RI));
	uout(&f, UART_MCR, UART_MCR_LOOP);
	cr_assert(eq(u8, uin(&f, UART_MSR), UART_MSR_TERI));
	uout(&f, UART_MCR, 0);
	cr_assert(eq(u8, uin(&f, UART_MSR), 0xb0 | 0x0b));
	cr_assert(eq(u8, uin(&f, UART_MSR), 0xb0));
	/* MCR keeps bits 0-4 only. */
	uout(&f, UART_MCR, 0xff);
	cr_assert(eq(u8, uin(&f, UART_MCR), 0x1f));
}

Test(hw_serial, modem_status_interrupt_and_wide_access)
{
	struct uart_fixture f;

	uart_setup(&f);
	uout(&f, UART_IER, UART_IER_MSI);
	uout(&f, UART_MCR, UART_MCR_LOOP); /* deltas, but no line in loop */
	cr_assert(eq(u8, uin(&f, UART_IIR), UART_IIR_MSI));
	uin(&f, UART_MSR);
	cr_assert(eq(u8, uin(&f, UART_IIR), UART_IIR_NO_INT));
	/* A 16-bit read is two byte reads: IIR then LCR. */
	uout(&f, UART_LCR, 0x03);
	cr_assert(eq(u32, io_in(&f.bus, COM1 + UART_IIR, 2), 0x0301));
	/* Past the last register: all ones. */
	cr_assert(eq(u32, io_in(&f.bus, COM1 + 7, 2), 0xff00));
}

Test(hw_serial, save_load_round_trip)
{
	struct uart_fixture f, g;
	struct kemari_buf b = { 0 };
	struct kvm_serial_state bad;

	uart_setup(&f);
	uout(&f, UART_LCR, 0x03);
	uout(&f, UART_SCR, 0x42);
	uout(&f, UART_MCR, UART_MCR_OUT2);
	uout(&f, UART_IER, UART_IER_RDI);
	kvm_serial__input(&f.s, "state", 5);
	uin(&f, UART_RX);
	cr_assert(eq(int, kvm_serial__save(&f.s, &b), 0));
	cr_assert(eq(sz, b.len, sizeof(struct kvm_serial_state)));

	uart_setup(&g);
	cr_assert(eq(int, kvm_serial__load(&g.s, b.data, b.len - 1), -EINVAL));
	memcpy(&bad, b.data, sizeof(bad));
	bad.rx_head = KVM_SERIAL_RXBUF;
	cr_assert(eq(int, kvm_serial__load(&g.s, &bad, sizeof(bad)), -EINVAL));
	cr_assert(eq(uint, g.irqs.n, 0));
	cr_assert(eq(int, kvm_serial__load(&g.s, b.data, b.len), 0));
	/* The restored UART drives its line to the restored level. */
	cr_assert(eq(uint, g.irqs.n, 1));
	expect_ev(&g.irqs, 0, 4, 1);
	cr_assert(eq(int, memcmp(&g.s.st, &f.s.st, sizeof(f.s.st)), 0));
	cr_assert(eq(u8, uin(&g, UART_SCR), 0x42));
	cr_assert(eq(u8, uin(&g, UART_LCR), 0x03));
	cr_assert(eq(u8, uin(&g, UART_RX), 't'));
	kemari_buf__fini(&b);
}

/* ---- hw_i8042 -------------------------------------------------------------- */

struct kbc_fixture {
	struct kvm_pio_bus bus;
	struct irq_log irqs;
	struct kvm_irq irq;
	struct kvm_i8042 k;
	unsigned int resets;
};

static void on_reset(void *ctx)
{
	struct kbc_fixture *f = ctx;

	f->resets++;
}

static void kbc_setup(struct kbc_fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->irq = (struct kvm_irq){ .set = irq_record, .ctx = &f->irqs };
	kvm_i8042__init(&f->k, &f->irq, on_reset, f);
	cr_assert(eq(int, kvm_i8042__register(&f->k, &f->bus), 0));
}

static uint8_t kbc_status(struct kbc_fixture *f)
{
	return inb(&f->bus, KVM_I8042_CMD);
}

/* __i8042_command(): command, parameters, then read the answers. */
static int kbc_command(struct kbc_fixture *f, uint8_t *param, unsigned int cmd)
{
	unsigned int nparam = (cmd >> 12) & 0xf, nret = (cmd >> 8) & 0xf;

	cr_assert(eq(u8, kbc_status(f) & KVM_I8042_STR_IBF, 0));
	outb(&f->bus, KVM_I8042_CMD, (uint8_t)cmd);
	for (unsigned int i = 0; i < nparam; i++)
		outb(&f->bus, KVM_I8042_DATA, param[i]);
	for (unsigned int i = 0; i < nret; i++) {
		uint8_t str = kbc_status(f);

		if (!(str & KVM_I8042_STR_OBF))
			return -1; /* Linux would wait 500 ms here */
		if ((cmd & 0xff) == 0xd3 && !(str & KVM_I8042_STR_AUXDATA))
			return -1;
		param[i] = inb(&f->bus, KVM_I8042_DATA);
	}
	return 0;
}

Test(hw_i8042, linux_probe_runs_without_timeouts)
{
	struct kbc_fixture f;
	uint8_t ctr[2], ctr_now, p;

	kbc_setup(&f);
	/* i8042_controller_check(): nothing to flush. */
	cr_assert(eq(u8, kbc_status(&f),
		     KVM_I8042_STR_KEYLOCK | KVM_I8042_STR_SYS));
	/* i8042_controller_selftest() (i8042.reset) */
	cr_assert(eq(int, kbc_command(&f, &p, 0x01aa), 0));
	cr_assert(eq(u8, p, 0x55));
	/* i8042_controller_init(): a stable CTR, keyboard not locked. */
	cr_assert(eq(int, kbc_command(&f, &ctr[0], 0x0120), 0));
	cr_assert(eq(int, kbc_command(&f, &ctr[1], 0x0120), 0));
	cr_assert(eq(u8, ctr[0], ctr[1]));
	cr_assert(eq(u8, ctr[0], KVM_I8042_CTR_RESET));
	cr_assert(eq(u8, kbc_status(&f) & KVM_I8042_STR_KEYLOCK,
		     KVM_I8042_STR_KEYLOCK));
	ctr_now = (ctr[0] | KVM_I8042_CTR_KBDDIS) & ~KVM_I8042_CTR_KBDINT;
	cr_assert(eq(int, kbc_command(&f, &ctr_now, 0x1060), 0));
	cr_assert(eq(u8, kbc_status(&f) & KVM_I8042_STR_OBF, 0));

	/* i8042_check_aux(): the loop echoes as mouse data. */
	p = 0x5a;
	cr_assert(eq(int, kbc_command(&f, &p, 0x11d3), 0));
	cr_assert(eq(u8, p, 0x5a));
	cr_assert(eq(int, kbc_command(&f, &p, 0x00a7), 0));
	cr_assert(eq(int, kbc_command(&f, &p, 0x0120), 0));
	cr_assert(eq(u8, p & KVM_I8042_CTR_AUXDIS, KVM_I8042_CTR_AUXDIS));
	cr_assert(eq(int, kbc_command(&f, &p, 0x00a8), 0));
	cr_assert(eq(int, kbc_command(&f, &p, 0x0120), 0));
	cr_assert(eq(u8, p & KVM_I8042_CTR_AUXDIS, 0));
	cr_assert(eq(uint, f.irqs.n, 0)); /* no port interrupt enabled yet */
	/* The AUX IRQ test: enable AUXINT, loop 0xa5 without reading it. */
	ctr_now = (ctr_now & ~KVM_I8042_CTR_AUXDIS) | KVM_I8042_CTR_AUXINT;
	cr_assert(eq(int, kbc_command(&f, &ctr_now, 0x1060), 0));
	p = 0xa5;
	cr_assert(eq(int, kbc_command(&f, &p, 0x10d3), 0));
	cr_assert(eq(uint, f.irqs.n, 1));
	expect_ev(&f.irqs, 0, KVM_I8042_AUX_IRQ, 1);
	/* i8042_aux_test_irq() */
	cr_assert(
		eq(u8,
		   kbc_status(&f) & (KVM_I8042_STR_OBF | KVM_I8042_STR_AUXDATA),
		   KVM_I8042_STR_OBF | KVM_I8042_STR_AUXDATA));
	cr_assert(eq(u8, inb(&f.bus, KVM_I8042_DATA), 0xa5));
	cr_assert(eq(uint, f.irqs.n, 2));
	expect_ev(&f.irqs, 1, KVM_I8042_AUX_IRQ, 0);
	ctr_now = (ctr_now | KVM_I8042_CTR_AUXDIS) & ~KVM_I8042_CTR_AUXINT;
	cr_assert(eq(int, kbc_command(&f, &ctr_now, 0x1060), 0));

	/* i8042_set_mux_mode(): the third loop comes back unchanged, so
	 * there is no active multiplexer. */
	p = 0xf0;
	cr_assert(eq(int, kbc_command(&f, &p, 0x11d3), 0));
	cr_assert(eq(u8, p, 0xf0));
	p = 0x56;
	cr_assert(eq(int, kbc_command(&f, &p, 0x11d3), 0));
	p = 0xa4;
	cr_assert(eq(int, kbc_command(&f, &p, 0x11d3), 0));
	cr_assert(eq(u8, p, 0xa4));

	/* Ports enabled with interrupts; psmouse's GETID through 0xd4. */
	ctr_now &= ~(KVM_I8042_CTR_AUXDIS | KVM_I8042_CTR_KBDDIS);
	ctr_now |= KVM_I8042_CTR_AUXINT | KVM_I8042_CTR_KBDINT;
	cr_assert(eq(int, kbc_command(&f, &ctr_now, 0x1060), 0));
	p = 0xf2;
	cr_assert(eq(int, kbc_command(&f, &p, 0x10d4), 0));
	cr_assert(eq(uint, f.irqs.n, 3));
	expect_ev(&f.irqs, 2, KVM_I8042_AUX_IRQ, 1);
	cr_assert(eq(u8, kbc_status(&f),
		     KVM_I8042_STR_OBF | KVM_I8042_STR_AUXDATA |
			     KVM_I8042_STR_TIMEOUT | KVM_I8042_STR_KEYLOCK |
			     KVM_I8042_STR_SYS));
	cr_assert(eq(u8, inb(&f.bus, KVM_I8042_DATA), 0xfe));
	expect_ev(&f.irqs, 3, KVM_I8042_AUX_IRQ, 0);
	/* atkbd's GETID straight to the data port: a keyboard timeout. */
	outb(&f.bus, KVM_I8042_DATA, 0xf2);
	cr_assert(eq(uint, f.irqs.n, 5));
	expect_ev(&f.irqs, 4, KVM_I8042_KBD_IRQ, 1);
	cr_assert(eq(u8, kbc_status(&f),
		     KVM_I8042_STR_OBF | KVM_I8042_STR_TIMEOUT |
			     KVM_I8042_STR_KEYLOCK | KVM_I8042_STR_SYS));
	cr_assert(eq(u8, inb(&f.bus, KVM_I8042_DATA), 0xfe));
	cr_assert(eq(uint, f.irqs.n, 6));
	expect_ev(&f.irqs, 5, KVM_I8042_KBD_IRQ, 0);
	cr_assert(eq(uint, f.resets, 0));
}

Test(hw_i8042, pulse_reset_fires_the_callback)
{
	struct kbc_fixture f;
	uint8_t p;

	kbc_setup(&f);
	/* i8042_platform_init(): A20 on through the output port, then the
	 * null command 0xff; neither resets. */
	p = 0xdf;
	cr_assert(eq(int, kbc_command(&f, &p, 0x10d1), 0));
	cr_assert(eq(int, kbc_command(&f, &p, 0x00ff), 0));
	cr_assert(eq(uint, f.resets, 0));
	cr_assert(eq(int, kbc_command(&f, &p, 0x01d0), 0));
	cr_assert(eq(u8, p, 0xdf));
	/* arch/x86/kernel/reboot.c: kb_wait() then 0xfe to 0x64. */
	cr_assert(eq(u8, kbc_status(&f) & KVM_I8042_STR_IBF, 0));
	outb(&f.bus, KVM_I8042_CMD, 0xfe);
	cr_assert(eq(uint, f.resets, 1));
	/* Output port bit 0 written low holds the CPU in reset too. */
	p = 0xde;
	cr_assert(eq(int, kbc_command(&f, &p, 0x10d1), 0));
	cr_assert(eq(uint, f.resets, 2));
	cr_assert(eq(uint, f.irqs.n, 0));
}

Test(hw_i8042, commands_answer_and_ctr_bits_follow)
{
	struct kbc_fixture f;
	uint8_t p;

	kbc_setup(&f);
	cr_assert(eq(int, kbc_command(&f, &p, 0x01ab), 0));
	cr_assert(eq(u8, p, 0x00));
	cr_assert(eq(int, kbc_command(&f, &p, 0x01a9), 0));
	cr_assert(eq(u8, p, 0x00));
	cr_assert(eq(int, kbc_command(&f, &p, 0x00ad), 0));
	cr_assert(eq(int, kbc_command(&f, &p, 0x0120), 0));
	cr_assert(eq(u8, p & KVM_I8042_CTR_KBDDIS, KVM_I8042_CTR_KBDDIS));
	cr_assert(eq(int, kbc_command(&f, &p, 0x00ae), 0));
	cr_assert(eq(int, kbc_command(&f, &p, 0x0120), 0));
	cr_assert(eq(u8, p & KVM_I8042_CTR_KBDDIS, 0));
	/* Status bit 3: last write was a command. */
	cr_assert(
		eq(u8, kbc_status(&f) & KVM_I8042_STR_CMD, KVM_I8042_STR_CMD));
	/* 0xd2 echoes as keyboard data; interrupts off, so no IRQ. */
	p = 0x1c;
	cr_assert(eq(int, kbc_command(&f, &p, 0x11d2), 0));
	cr_assert(eq(u8, p, 0x1c));
	cr_assert(eq(u8, kbc_status(&f) & KVM_I8042_STR_CMD, 0));
	/* Controller RAM beyond the CTR. */
	p = 0x77;
	cr_assert(eq(int, kbc_command(&f, &p, 0x1065), 0));
	cr_assert(eq(int, kbc_command(&f, &p, 0x0125), 0));
	cr_assert(eq(u8, p, 0x77));
	/* An empty output buffer repeats the last byte. */
	cr_assert(eq(u8, inb(&f.bus, KVM_I8042_DATA), 0x77));
	cr_assert(eq(uint, f.irqs.n, 0));
	cr_assert(eq(uint, f.resets, 0));
}

Test(hw_i8042, save_load_round_trip)
{
	struct kbc_fixture f, g;
	struct kemari_buf b = { 0 };
	uint8_t p = KVM_I8042_CTR_KBDINT | KVM_I8042_CTR_SYS;

	kbc_setup(&f);
	cr_assert(eq(int, kbc_command(&f, &p, 0x1060), 0));
	outb(&f.bus, KVM_I8042_DATA, 0xed); /* keyboard timeout queued */
	cr_assert(eq(int, f.irqs.level[1], 1));
	cr_assert(eq(int, kvm_i8042__save(&f.k, &b), 0));

	kbc_setup(&g);
	cr_assert(eq(int, kvm_i8042__load(&g.k, b.data, 3), -EINVAL));
	cr_assert(eq(int, kvm_i8042__load(&g.k, b.data, b.len), 0));
	cr_assert(eq(int, g.irqs.level[1], 1));
	cr_assert(eq(int, g.irqs.level[12], 0));
	cr_assert(eq(u8, inb(&g.bus, KVM_I8042_DATA), 0xfe));
	cr_assert(eq(int, g.irqs.level[1], 0));
	kemari_buf__fini(&b);
}

/* ---- hw_rtc ---------------------------------------------------------------- */

struct rtc_fixture {
	struct kvm_pio_bus bus;
	struct kvm_rtc rtc;
	uint64_t now_ns;
};

static uint64_t fake_clock(void *ctx)
{
	return ((struct rtc_fixture *)ctx)->now_ns;
}

/* 2024-02-29 13:45:56 UTC, a Thursday, plus ns. */
static uint64_t leap_day(uint64_t ns)
{
	struct tm tm = { .tm_year = 124,
			 .tm_mon = 1,
			 .tm_mday = 29,
			 .tm_hour = 13,
			 .tm_min = 45,
			 .tm_sec = 56 };

	return (uint64_t)timegm(&tm) * 1000000000ULL + ns;
}

static void rtc_setup(struct rtc_fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->now_ns = leap_day(500000000);
	kvm_rtc__init(&f->rtc, fake_clock, f);
	cr_assert(eq(int, kvm_rtc__register(&f->rtc, &f->bus), 0));
}

static uint8_t cmos_read(struct rtc_fixture *f, uint8_t idx)
{
	outb(&f->bus, KVM_RTC_BASE, idx);
	return inb(&f->bus, KVM_RTC_BASE + 1);
}

static void cmos_write(struct rtc_fixture *f, uint8_t idx, uint8_t v)
{
	outb(&f->bus, KVM_RTC_BASE, idx);
	outb(&f->bus, KVM_RTC_BASE + 1, v);
}

Test(hw_rtc, bcd_time_from_the_host_clock)
{
	struct rtc_fixture f;

	rtc_setup(&f);
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_A), 0x26));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_B), 0x02));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_C), 0x00));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_D), 0x80));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_SECONDS), 0x56));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_MINUTES), 0x45));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_HOURS), 0x13));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_WDAY), 0x05));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_MDAY), 0x29));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_MONTH), 0x02));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_YEAR), 0x24));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_CENTURY), 0x20));
	f.now_ns += 5ULL * 1000000000ULL;
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_SECONDS), 0x01));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_MINUTES), 0x46));
}

Test(hw_rtc, binary_and_12_hour_modes)
{
	struct rtc_fixture f;

	rtc_setup(&f);
	cmos_write(&f, KVM_RTC_REG_B, KVM_RTC_B_24H | KVM_RTC_B_DM_BINARY);
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_SECONDS), 56));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_HOURS), 13));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_MDAY), 29));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_YEAR), 24));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_CENTURY), 20));
	/* 12 hour mode: 1 PM; binary then BCD. */
	cmos_write(&f, KVM_RTC_REG_B, KVM_RTC_B_DM_BINARY);
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_HOURS), 0x81));
	cmos_write(&f, KVM_RTC_REG_B, 0);
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_HOURS), 0x81));
	f.now_ns -= 13ULL * 3600 * 1000000000ULL; /* 00:45: 12 AM */
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_HOURS), 0x12));
}

Test(hw_rtc, index_port_nmi_bit_and_cmos_ram)
{
	struct rtc_fixture f;

	rtc_setup(&f);
	cr_assert(eq(int, kvm_rtc__nmi_masked(&f.rtc), 0));
	outb(&f.bus, KVM_RTC_BASE, 0x80 | KVM_RTC_REG_D);
	cr_assert(eq(int, kvm_rtc__nmi_masked(&f.rtc), 1));
	cr_assert(eq(u8, inb(&f.bus, KVM_RTC_BASE + 1), 0x80)); /* reg D */
	cr_assert(eq(u8, inb(&f.bus, KVM_RTC_BASE), 0xff));	/* write-only */
	outb(&f.bus, KVM_RTC_BASE, KVM_RTC_REG_B);
	cr_assert(eq(int, kvm_rtc__nmi_masked(&f.rtc), 0));
	cr_assert(eq(u8, inb(&f.bus, KVM_RTC_BASE + 1), 0x02));

	for (unsigned int i = 0x0e; i < 0x80; i++)
		if (i != KVM_RTC_CENTURY)
			cmos_write(&f, (uint8_t)i, (uint8_t)(i ^ 0x5a));
	for (unsigned int i = 0x0e; i < 0x80; i++)
		if (i != KVM_RTC_CENTURY)
			cr_assert(eq(u8, cmos_read(&f, (uint8_t)(0x80 | i)),
				     (uint8_t)(i ^ 0x5a)));
	/* C and D are read-only; A's UIP bit too. */
	cmos_write(&f, KVM_RTC_REG_C, 0xff);
	cmos_write(&f, KVM_RTC_REG_D, 0x00);
	cmos_write(&f, KVM_RTC_REG_A, 0xa6);
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_C), 0x00));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_D), 0x80));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_A), 0x26));
}

Test(hw_rtc, uip_window_ends_so_avoid_uip_loops_finish)
{
	struct rtc_fixture f;
	unsigned int tries = 0;

	rtc_setup(&f);
	f.now_ns = leap_day(999800000); /* 200 us before the update */
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_A), 0x26 | KVM_RTC_A_UIP));
	/* mc146818_avoid_UIP(): poll every 100 us until UIP is clear. */
	while (cmos_read(&f, KVM_RTC_REG_A) & KVM_RTC_A_UIP) {
		f.now_ns += 100000;
		cr_assert(lt(uint, ++tries, 10));
	}
	cr_assert(eq(uint, tries, 2));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_SECONDS), 0x57));
	f.now_ns = leap_day(999755000); /* just outside the window */
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_A), 0x26));
	/* A stopped divider never shows UIP. */
	f.now_ns = leap_day(999900000);
	cmos_write(&f, KVM_RTC_REG_A, 0x76);
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_A), 0x76));
}

Test(hw_rtc, guest_sets_the_time_and_it_keeps_ticking)
{
	struct rtc_fixture f, g;
	struct kemari_buf b = { 0 };

	rtc_setup(&f);
	/* hwclock --systohc: SET, write the fields, clear SET. */
	cmos_write(&f, KVM_RTC_REG_B,
		   KVM_RTC_B_SET | KVM_RTC_B_24H | KVM_RTC_B_UIE);
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_REG_B),
		     KVM_RTC_B_SET | KVM_RTC_B_24H));
	cmos_write(&f, KVM_RTC_SECONDS, 0x00);
	cmos_write(&f, KVM_RTC_MINUTES, 0x30);
	cmos_write(&f, KVM_RTC_HOURS, 0x08);
	cmos_write(&f, KVM_RTC_MDAY, 0x01);
	cmos_write(&f, KVM_RTC_MONTH, 0x03);
	cmos_write(&f, KVM_RTC_YEAR, 0x31);
	f.now_ns += 7ULL * 1000000000ULL; /* frozen while SET */
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_SECONDS), 0x00));
	cmos_write(&f, KVM_RTC_REG_B, KVM_RTC_B_24H);
	f.now_ns += 2ULL * 1000000000ULL;
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_SECONDS), 0x02));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_MINUTES), 0x30));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_HOURS), 0x08));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_MDAY), 0x01));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_MONTH), 0x03));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_YEAR), 0x31));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_CENTURY), 0x20));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_WDAY), 0x07)); /* Saturday */
	/* A single field written outside SET moves only that field. */
	cmos_write(&f, KVM_RTC_CENTURY, 0x21);
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_YEAR), 0x31));
	cr_assert(eq(u8, cmos_read(&f, KVM_RTC_CENTURY), 0x21));

	/* The offset is state: a replica shows the guest's time. */
	cr_assert(eq(int, kvm_rtc__save(&f.rtc, &b), 0));
	rtc_setup(&g);
	g.now_ns = f.now_ns;
	cr_assert(eq(int, kvm_rtc__load(&g.rtc, b.data, b.len - 1), -EINVAL));
	cr_assert(eq(int, kvm_rtc__load(&g.rtc, b.data, b.len), 0));
	cr_assert(eq(u8, cmos_read(&g, KVM_RTC_CENTURY), 0x21));
	cr_assert(eq(u8, cmos_read(&g, KVM_RTC_MINUTES), 0x30));
	kemari_buf__fini(&b);
}

Test(hw_rtc, memory_size_bytes)
{
	struct rtc_fixture f;

	rtc_setup(&f);
	kvm_rtc__set_ram_size(&f.rtc, 5 * GiB);
	cr_assert(eq(u8, cmos_read(&f, 0x15), 0x80)); /* 640 KiB */
	cr_assert(eq(u8, cmos_read(&f, 0x16), 0x02));
	cr_assert(eq(u8, cmos_read(&f, 0x30), 0xff)); /* capped */
	cr_assert(eq(u8, cmos_read(&f, 0x31), 0xff));
	cr_assert(eq(u8, cmos_read(&f, 0x34), 0x00)); /* (3G-16M)/64K */
	cr_assert(eq(u8, cmos_read(&f, 0x35), 0xbf));
	cr_assert(eq(u8, cmos_read(&f, 0x5b), 0x00)); /* 2G/64K = 0x8000 */
	cr_assert(eq(u8, cmos_read(&f, 0x5c), 0x80));
	cr_assert(eq(u8, cmos_read(&f, 0x5d), 0x00));
	kvm_rtc__set_ram_size(&f.rtc, 32ULL << 20);
	cr_assert(eq(u8, cmos_read(&f, 0x30), 0x00)); /* 31 MiB = 0x7c00 */
	cr_assert(eq(u8, cmos_read(&f, 0x31), 0x7c));
	cr_assert(eq(u8, cmos_read(&f, 0x34), 0x00)); /* 16 MiB/64K */
	cr_assert(eq(u8, cmos_read(&f, 0x35), 0x01));
	cr_assert(eq(u8, cmos_read(&f, 0x5c), 0x00));
}

/* ---- hw_pci ---------------------------------------------------------------- */

struct pci_fixture {
	struct kvm_pio_bus bus;
	struct irq_log irqs;
	struct kvm_irq irq;
	struct kvm_pci pci;
	struct kvm_pci_dev dev, dev2;
	struct pio_probe bar0, bar1, bar_b;
};

static void pci_setup(struct pci_fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->irq = (struct kvm_irq){ .set = irq_record, .ctx = &f->irqs };
	cr_assert(eq(int, kvm_pci__init(&f->pci, &f->bus, &f->irq), 0));
}

/* A virtio-style device: BAR0 32 ports at 0xc000, BAR1 256 unassigned. */
static void pci_make_dev(struct pci_fixture *f)
{
	struct kvm_pci_dev *d = &f->dev;

	memset(d, 0, sizeof(*d));
	d->cfg[0] = 0xf4; /* 1af4:1000 */
	d->cfg[1] = 0x1a;
	d->cfg[2] = 0x00;
	d->cfg[3] = 0x10;
	d->cfg[KVM_PCI_CLASS_DEVICE] = 0x00;
	d->cfg[KVM_PCI_CLASS_DEVICE + 1] = 0x02;
	d->slot = 3;
	d->pin = 1;
	d->gsi = 19;
	d->bar[0] = (struct kvm_pci_bar){ .size = 32,
					  .addr = 0xc000,
					  .ops = &probe_ops,
					  .opaque = &f->bar0 };
	d->bar[1] = (struct kvm_pci_bar){ .size = 256,
					  .ops = &probe_ops,
					  .opaque = &f->bar1 };
}

static uint32_t conf_addr(unsigned int bus, unsigned int slot, unsigned int fn,
			  unsigned int reg)
{
	return 0x80000000U | bus << 16 | slot << 11 | fn << 8 | (reg & 0xfc);
}

static uint32_t cfg_read(struct pci_fixture *f, unsigned int slot,
			 unsigned int reg, unsigned int size)
{
	io_out(&f->bus, KVM_PCI_CONFIG_ADDRESS, 4, conf_addr(0, slot, 0, reg));
	return io_in(&f->bus, (uint16_t)(KVM_PCI_CONFIG_DATA + (reg & 3)),
		     size);
}

static void cfg_write(struct pci_fixture *f, unsigned int slot,
		      unsigned int reg, unsigned int size, uint32_t v)
{
	io_out(&f->bus, KVM_PCI_CONFIG_ADDRESS, 4, conf_addr(0, slot, 0, reg));
	io_out(&f->bus, (uint16_t)(KVM_PCI_CONFIG_DATA + (reg & 3)), size, v);
}

Test(hw_pci, linux_type1_check_and_host_bridge)
{
	struct pci_fixture f;
	uint32_t tmp;
	bool sane = false;

	pci_setup(&f);
	/* arch/x86/pci/direct.c pci_check_type1() */
	outb(&f.bus, 0xcfb, 0x01);
	tmp = io_in(&f.bus, 0xcf8, 4);
	cr_assert(eq(u32, tmp, 0));
	io_out(&f.bus, 0xcf8, 4, 0x80000000);
	cr_assert(eq(u32, io_in(&f.bus, 0xcf8, 4), 0x80000000));
	/* pci_sanity_check(): a host bridge class somewhere on bus 0. */
	for (unsigned int devfn = 0; devfn < 0x100 && !sane; devfn++) {
		io_out(&f.bus, 0xcf8, 4,
		       0x80000000U | devfn << 8 | KVM_PCI_CLASS_DEVICE);
		sane = io_in(&f.bus, 0xcfc + 2, 2) == 0x0600;
	}
	cr_assert(eq(int, sane, 1));
	io_out(&f.bus, 0xcf8, 4, tmp);
	/* Reserved bits of CONFIG_ADDRESS read 0, sub-dword sizes miss it. */
	io_out(&f.bus, 0xcf8, 4, 0xffffffff);
	cr_assert(eq(u32, io_in(&f.bus, 0xcf8, 4), 0x8ffffffc));
	cr_assert(eq(u32, io_in(&f.bus, 0xcf8, 2), 0xffff));

	cr_assert(eq(u32, cfg_read(&f, 0, 0x00, 4), 0x12378086));
	cr_assert(eq(u32, cfg_read(&f, 0, 0x08, 4), 0x06000002));
	cr_assert(eq(u32, cfg_read(&f, 0, 0x0c, 4), 0x00000000));
	cr_assert(eq(u32, cfg_read(&f, 0, 0x10, 4), 0x00000000));
	cr_assert(eq(u32, cfg_read(&f, 0, 0x3c, 4), 0x00000000));
	/* The host bridge's IDs are read-only. */
	cfg_write(&f, 0, 0x00, 4, 0);
	cfg_write(&f, 0, 0x08, 4, 0);
	cr_assert(eq(u32, cfg_read(&f, 0, 0x00, 4), 0x12378086));
	cr_assert(eq(u32, cfg_read(&f, 0, 0x08, 4), 0x06000002));
}

Test(hw_pci, absent_devices_read_all_ones)
{
	struct pci_fixture f;

	pci_setup(&f);
	cr_assert(eq(u32, cfg_read(&f, 5, 0x00, 4), 0xffffffff));
	cr_assert(eq(u32, cfg_read(&f, 31, 0x0c, 2), 0xffff));
	/* Function 1 of the host bridge, bus 1, extended register. */
	io_out(&f.bus, 0xcf8, 4, conf_addr(0, 0, 1, 0));
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 4), 0xffffffff));
	io_out(&f.bus, 0xcf8, 4, conf_addr(1, 0, 0, 0));
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 4), 0xffffffff));
	io_out(&f.bus, 0xcf8, 4, conf_addr(0, 0, 0, 0) | 0x01000000);
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 4), 0xffffffff));
	/* Enable bit clear: no configuration cycle at all. */
	io_out(&f.bus, 0xcf8, 4, 0x00000000);
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 4), 0xffffffff));
	io_out(&f.bus, 0xcfc, 4, 0);
	cr_assert(eq(u32, cfg_read(&f, 0, 0x00, 4), 0x12378086));
	/* Writes to nobody are dropped. */
	cfg_write(&f, 5, 0x04, 2, 0xffff);
	cr_assert(eq(u32, cfg_read(&f, 5, 0x04, 2), 0xffff));
}

Test(hw_pci, added_device_header)
{
	struct pci_fixture f;

	pci_setup(&f);
	pci_make_dev(&f);
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), 0));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x00, 4), 0x10001af4));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x08, 4), 0x02000000));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x04, 4), KVM_PCI_CMD_IO));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x10, 4), 0xc001));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x14, 4), 0x0001));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x18, 4), 0x0000));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x3c, 4), 0x0113)); /* pin A, 19 */
	/* BAR0 is decoded where the "firmware" put it, BAR1 nowhere. */
	cr_assert(eq(u8, inb(&f.bus, 0xc01f), 0x5a));
	cr_assert(eq(u16, f.bar0.last_port, 0xc01f));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0xc020), 0));
	cr_assert(eq(u32, kvm_pci__bar_addr(&f.dev, 0), 0xc000));
	cr_assert(eq(u32, kvm_pci__bar_addr(&f.dev, 1), 0));
}

Test(hw_pci, bar_sizing_and_relocation)
{
	struct pci_fixture f;
	uint16_t cmd;
	uint32_t l, sz;

	pci_setup(&f);
	pci_make_dev(&f);
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), 0));

	/* __pci_read_base(): decode off, all ones, read the mask, restore. */
	cmd = (uint16_t)cfg_read(&f, 3, 0x04, 2);
	cfg_write(&f, 3, 0x04, 2, cmd & ~(KVM_PCI_CMD_IO | KVM_PCI_CMD_MEM));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0xc000), 0));
	l = cfg_read(&f, 3, 0x10, 4);
	cfg_write(&f, 3, 0x10, 4, 0xffffffff);
	sz = cfg_read(&f, 3, 0x10, 4);
	cfg_write(&f, 3, 0x10, 4, l);
	cr_assert(eq(u32, sz, 0xffffffe1));
	cr_assert(eq(u32, (~(sz & 0xfffc) & 0xffff) + 1, 32));
	cfg_write(&f, 3, 0x14, 4, 0xffffffff);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x14, 4), 0xffffff01));
	cfg_write(&f, 3, 0x18, 4, 0xffffffff); /* not implemented */
	cr_assert(eq(u32, cfg_read(&f, 3, 0x18, 4), 0));
	cfg_write(&f, 3, 0x30, 4, 0xfffff800); /* no expansion ROM */
	cr_assert(eq(u32, cfg_read(&f, 3, 0x30, 4), 0));

	/* pci_assign_resource(): BAR0 to 0x1000, BAR1 to 0x1100, decode on. */
	cfg_write(&f, 3, 0x10, 4, 0x1000);
	cfg_write(&f, 3, 0x14, 4, 0x1100);
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0x1000), 0));
	cfg_write(&f, 3, 0x04, 2, cmd | KVM_PCI_CMD_IO);
	cr_assert(eq(u8, inb(&f.bus, 0x1004), 0x5a));
	cr_assert(eq(u16, f.bar0.last_port, 0x1004));
	outb(&f.bus, 0x11ff, 0x77);
	cr_assert(eq(u16, f.bar1.last_port, 0x11ff));
	cr_assert(eq(u32, f.bar1.written, 0x77));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0xc000), 0));
	cr_assert(eq(uint, f.bar0.ins, 1));

	/* Moving a live BAR re-routes its ports: the old range is free. */
	cfg_write(&f, 3, 0x10, 4, 0x2020);
	cr_assert(eq(u32, kvm_pci__bar_addr(&f.dev, 0), 0x2020));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0x1000), 0));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0x101f), 0));
	cr_assert(eq(u8, inb(&f.bus, 0x203f), 0x5a));
	cr_assert(eq(u16, f.bar0.last_port, 0x203f));
	/* Low address bits are not writable: 0x2031 aligns down. */
	cfg_write(&f, 3, 0x10, 4, 0x2031);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x10, 4), 0x2021));
	/* A BAR byte written alone moves it as well. */
	cfg_write(&f, 3, 0x11, 1, 0x30);
	cr_assert(eq(u8, inb(&f.bus, 0x3020), 0x5a));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0x2020), 0));
	/* Above 64 KiB: kept in config, not decoded. */
	cfg_write(&f, 3, 0x10, 4, 0x10000);
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0x3020), 0));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0x0000), 0));
	cfg_write(&f, 3, 0x10, 4, 0x3020);
	/* I/O decode off unregisters both BARs. */
	cfg_write(&f, 3, 0x04, 2, 0);
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0x3020), 0));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0x1100), 0));
	cr_assert(eq(uint, f.bus.n, 2)); /* only 0xcf8 and 0xcfc remain */
}

Test(hw_pci, bar_over_another_device_loses_its_ports)
{
	struct pci_fixture f;
	struct kvm_serial s;

	pci_setup(&f);
	kvm_serial__init(&s, KVM_SERIAL_COM1_BASE, 4, NULL, NULL, NULL);
	cr_assert(eq(int, kvm_serial__register(&s, &f.bus), 0));
	pci_make_dev(&f);
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), 0));
	cfg_write(&f, 3, 0x10, 4, 0x3e0); /* [0x3e0, 0x400) covers COM1 */
	cr_assert(eq(int, f.dev.bar[0].mapped, 0));
	cr_assert(eq(u8, inb(&f.bus, 0x3fd), 0x60)); /* still the UART's LSR */
	cr_assert(eq(uint, f.bar0.ins, 0));
	cfg_write(&f, 3, 0x10, 4, 0xc000);
	cr_assert(eq(int, f.dev.bar[0].mapped, 1));
	cr_assert(eq(u8, inb(&f.bus, 0xc000), 0x5a));
}

Test(hw_pci, read_only_fields_stay_read_only)
{
	struct pci_fixture f;

	pci_setup(&f);
	pci_make_dev(&f);
	f.dev.cfg[0x40] = 0x11;
	f.dev.wmask[0x41] = 0xf0; /* a device-specific writable nibble */
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), 0));
	cfg_write(&f, 3, 0x00, 4, 0x12345678);
	cfg_write(&f, 3, 0x08, 4, 0xffffffff);
	cfg_write(&f, 3, 0x0e, 1, 0x80);
	cfg_write(&f, 3, 0x06, 2, 0xffff);
	cfg_write(&f, 3, 0x3d, 1, 0x04);
	cfg_write(&f, 3, 0x40, 4, 0xffffffff);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x00, 4), 0x10001af4));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x08, 4), 0x02000000));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x0e, 1), 0x00));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x06, 2), 0x0000));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x3d, 1), 0x01));
	cr_assert(eq(u32, cfg_read(&f, 3, 0x40, 4), 0x0000f011));
	/* Writable: command bits, cache line, latency, interrupt line. */
	cfg_write(&f, 3, 0x04, 2, 0xffff);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x04, 2), 0x0547));
	cfg_write(&f, 3, 0x0c, 2, 0x4010);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x0c, 2), 0x4010));
	cfg_write(&f, 3, 0x3c, 1, 0x0b);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x3c, 2), 0x010b));
}

Test(hw_pci, unaligned_and_odd_size_accesses)
{
	struct pci_fixture f;

	pci_setup(&f);
	pci_make_dev(&f);
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), 0));
	io_out(&f.bus, 0xcf8, 4, conf_addr(0, 3, 0, 0x00));
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 1), 0xf4));
	cr_assert(eq(u32, io_in(&f.bus, 0xcfd, 1), 0x1a));
	cr_assert(eq(u32, io_in(&f.bus, 0xcfe, 2), 0x1000));
	cr_assert(eq(u32, io_in(&f.bus, 0xcfd, 2), 0x001a)); /* bytes 1-2 */
	cr_assert(eq(u32, io_in(&f.bus, 0xcff, 1), 0x10));
	/* Past 0xcff: the missing bytes float high. */
	cr_assert(eq(u32, io_in(&f.bus, 0xcff, 2), 0xff10));
	cr_assert(eq(u32, io_in(&f.bus, 0xcfd, 4), 0xff10001a));
	/* The low address bits of CONFIG_ADDRESS do not offset the access. */
	io_out(&f.bus, 0xcf8, 4, conf_addr(0, 3, 0, 0x3c) | 0x2);
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 1), 0x13));
	/* Byte and word writes land on their own bytes only. */
	io_out(&f.bus, 0xcf8, 4, conf_addr(0, 3, 0, 0x0c));
	io_out(&f.bus, 0xcfd, 1, 0x40);
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 4), 0x00004000));
	io_out(&f.bus, 0xcff, 2, 0xabcd); /* only 0x0f, read-only BIST */
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 4), 0x00004000));
	io_out(&f.bus, 0xcfc, 2, 0x2008);
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 4), 0x00002008));
	/* Command as a word at 0xcfc, status untouched at 0xcfe. */
	io_out(&f.bus, 0xcf8, 4, conf_addr(0, 3, 0, 0x04));
	io_out(&f.bus, 0xcfe, 2, 0xffff);
	io_out(&f.bus, 0xcfc, 2, 0x0000);
	cr_assert(eq(u32, io_in(&f.bus, 0xcfc, 4), 0x00000000));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0xc000), 0));
}

Test(hw_pci, intx_follows_status_and_interrupt_disable)
{
	struct pci_fixture f;

	pci_setup(&f);
	pci_make_dev(&f);
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), 0));
	cr_assert(eq(uint, f.irqs.n, 0));
	kvm_pci__set_irq(&f.pci, &f.dev, 1);
	kvm_pci__set_irq(&f.pci, &f.dev, 1); /* held, not re-raised */
	cr_assert(eq(uint, f.irqs.n, 1));
	expect_ev(&f.irqs, 0, 19, 1);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x06, 2) & KVM_PCI_STATUS_INTERRUPT,
		     KVM_PCI_STATUS_INTERRUPT));
	cfg_write(&f, 3, 0x04, 2, KVM_PCI_CMD_IO | KVM_PCI_CMD_INTX_DISABLE);
	cr_assert(eq(uint, f.irqs.n, 2));
	expect_ev(&f.irqs, 1, 19, 0);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x06, 2) & KVM_PCI_STATUS_INTERRUPT,
		     KVM_PCI_STATUS_INTERRUPT));
	cfg_write(&f, 3, 0x04, 2, KVM_PCI_CMD_IO);
	cr_assert(eq(uint, f.irqs.n, 3));
	expect_ev(&f.irqs, 2, 19, 1);
	kvm_pci__set_irq(&f.pci, &f.dev, 0);
	cr_assert(eq(uint, f.irqs.n, 4));
	expect_ev(&f.irqs, 3, 19, 0);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x06, 2), 0));
}

struct cfg_seen {
	unsigned int calls, off, len;
	uint32_t bar0;
};

static void on_cfg_written(struct kvm_pci_dev *dev, unsigned int off,
			   unsigned int len)
{
	struct cfg_seen *c = dev->priv;

	c->calls++;
	c->off = off;
	c->len = len;
	c->bar0 = kvm_pci__bar_addr(dev, 0);
}

Test(hw_pci, intx_adapter_and_config_write_hook)
{
	struct pci_fixture f, g;
	struct cfg_seen seen = { 0 }, seen_g = { 0 };
	struct kemari_buf b = { 0 };

	pci_setup(&f);
	pci_make_dev(&f);
	f.dev.cfg_written = on_cfg_written;
	f.dev.priv = &seen;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), 0));
	/* A model holding &dev->intx drives the device's INTx. */
	kvm_irq__set(&f.dev.intx, 99, 1);
	cr_assert(eq(uint, f.irqs.n, 1));
	expect_ev(&f.irqs, 0, 19, 1);
	cr_assert(eq(u32, cfg_read(&f, 3, 0x06, 2), KVM_PCI_STATUS_INTERRUPT));
	kvm_irq__set(&f.dev.intx, 99, 0);
	expect_ev(&f.irqs, 1, 19, 0);
	/* The hook sees the BAR where it now is. */
	cfg_write(&f, 3, 0x10, 4, 0x2000);
	cr_assert(eq(uint, seen.calls, 1));
	cr_assert(eq(uint, seen.off, 0x10));
	cr_assert(eq(uint, seen.len, 4));
	cr_assert(eq(u32, seen.bar0, 0x2000));
	cfg_write(&f, 3, 0x3f, 2, 0xffff); /* only 0x3f is inside the dword */
	cr_assert(eq(uint, seen.off, 0x3f));
	cr_assert(eq(uint, seen.len, 1));
	cr_assert(eq(int, kvm_pci__save(&f.pci, &b), 0));

	pci_setup(&g);
	pci_make_dev(&g);
	g.dev.cfg_written = on_cfg_written;
	g.dev.priv = &seen_g;
	cr_assert(eq(int, kvm_pci__add(&g.pci, &g.dev), 0));
	cr_assert(eq(int, kvm_pci__load(&g.pci, b.data, b.len), 0));
	cr_assert(eq(uint, seen_g.calls, 1));
	cr_assert(eq(uint, seen_g.len, 256));
	cr_assert(eq(u32, seen_g.bar0, 0x2000));
	kemari_buf__fini(&b);
}

Test(hw_pci, add_validation_and_routes_for_the_mp_table)
{
	struct pci_fixture f;
	struct kvm_mp_pci_irq routes[4];
	uint8_t mp[1024];

	pci_setup(&f);
	pci_make_dev(&f);
	f.dev2 = f.dev;
	f.dev2.bar[0].opaque = &f.bar_b;
	f.dev2.bar[1].opaque = &f.bar_b;

	f.dev.slot = 0;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), -EINVAL));
	f.dev.slot = 32;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), -EINVAL));
	f.dev.slot = 3;
	f.dev.bar[0].size = 48;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), -EINVAL));
	f.dev.bar[0].size = 32;
	f.dev.bar[0].addr = 0xc010;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), -EINVAL));
	f.dev.bar[0].addr = 0xc000;
	f.dev.pin = 5;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), -EINVAL));
	f.dev.pin = 1;
	f.dev.gsi = 11; /* an ISA IRQ */
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), -EINVAL));
	f.dev.gsi = 24;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), -EINVAL));
	f.dev.gsi = 19;
	f.dev.cfg[0] = f.dev.cfg[1] = 0xff;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), -EINVAL));
	f.dev.cfg[0] = 0xf4;
	f.dev.cfg[1] = 0x1a;
	cr_assert(eq(uint, f.bus.n, 2));
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), 0));

	/* Slot taken; then a BAR on top of another device's range. */
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev2), -EEXIST));
	f.dev2.slot = 1;
	f.dev2.bar[1].addr = 0x1000;
	f.dev2.bar[1].size = 4;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev2), -EEXIST));
	cr_assert(eq(int, claimed_by_anyone(&f.bus, 0x1000), 0));
	cr_assert(eq(u32, cfg_read(&f, 1, 0, 4), 0xffffffff));
	f.dev2.bar[0].addr = 0xc100;
	f.dev2.pin = 2;
	f.dev2.gsi = 16;
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev2), 0));
	cr_assert(eq(u8, inb(&f.bus, 0x1003), 0x5a));
	cr_assert(eq(u16, f.bar_b.last_port, 0x1003));

	cr_assert(eq(int, kvm_pci__routes(&f.pci, routes, 1), -ENOSPC));
	cr_assert(eq(int, kvm_pci__routes(&f.pci, routes, 4), 2));
	cr_assert(eq(u8, routes[0].dev, 1));
	cr_assert(eq(u8, routes[0].pin, 2));
	cr_assert(eq(u8, routes[0].ioapic_pin, 16));
	cr_assert(eq(u8, routes[1].dev, 3));
	cr_assert(eq(u8, routes[1].pin, 1));
	cr_assert(eq(u8, routes[1].ioapic_pin, 19));
	cr_assert(gt(int,
		     kvm_mptable__build(mp, sizeof(mp), 0x9fc00, 1, routes, 2),
		     0));
}

Test(hw_pci, save_load_moves_bars_on_the_replica)
{
	struct pci_fixture f, g;
	struct kemari_buf b = { 0 };

	pci_setup(&f);
	pci_make_dev(&f);
	cr_assert(eq(int, kvm_pci__add(&f.pci, &f.dev), 0));
	cfg_write(&f, 3, 0x10, 4, 0x1040);
	cfg_write(&f, 3, 0x14, 4, 0x1100);
	kvm_pci__set_irq(&f.pci, &f.dev, 1);
	io_out(&f.bus, 0xcf8, 4, conf_addr(0, 3, 0, 0x3c));
	cr_assert(eq(int, kvm_pci__save(&f.pci, &b), 0));
	cr_assert(eq(sz, b.len, 8 + 2 * 257));

	pci_setup(&g);
	pci_make_dev(&g);
	cr_assert(eq(int, kvm_pci__load(&g.pci, b.data, b.len), -EINVAL));
	cr_assert(eq(int, kvm_pci__add(&g.pci, &g.dev), 0));
	cr_assert(eq(int, kvm_pci__load(&g.pci, b.data, b.len - 1), -EINVAL));
	cr_assert(eq(int, kvm_pci__load(&g.pci, b.data, b.len), 0));
	cr_assert(eq(int, claimed_by_anyone(&g.bus, 0xc000), 0));
	cr_assert(eq(u8, inb(&g.bus, 0x1040), 0x5a));
	cr_assert(eq(u16, g.bar0.last_port, 0x1040));
	outb(&g.bus, 0x1100, 1);
	cr_assert(eq(uint, g.bar1.outs, 1));
	cr_assert(eq(int, g.irqs.level[19], 1));
	cr_assert(eq(u32, io_in(&g.bus, 0xcf8, 4), conf_addr(0, 3, 0, 0x3c)));
	cr_assert(eq(u32, io_in(&g.bus, 0xcfc, 2), 0x0113));
	kemari_buf__fini(&b);
}
