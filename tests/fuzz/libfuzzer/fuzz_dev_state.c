// SPDX-License-Identifier: MIT
/*
 * Device state blobs a secondary loads at takeover: the freestanding
 * guests' devices (hv/kvm/kemari/dev.c, kvm_dev__load: records against
 * this VM's devices and the rings in guest RAM) and the PC models' records
 * (hv/kvm/hw/: UART, i8042, RTC, PCI configuration). Input: one byte
 * choosing the target, then the blob. A blob a model accepts is then
 * driven the way a resumed guest would: every port read and written, so
 * state that passes the check but breaks the model is caught too.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "hw/hw.h"
#include "hw/i8042.h"
#include "hw/pci.h"
#include "hw/rtc.h"
#include "hw/serial.h"
#include "kemari/abi.h"
#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kvm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { T_KEMARI, T_SERIAL, T_I8042, T_RTC, T_PCI, T_N };

static struct {
	struct kvm_pio_bus bus;
	struct kvm_irq irq;
	struct kvm_serial serial;
	struct kvm_i8042 i8042;
	struct kvm_rtc rtc;
	struct kvm_pci pci;
	struct kvm_pci_dev dev;
	uint8_t bar_regs[256];
} * m;

static struct kvm_vm *vm;
static struct kvm_dev devs[2];

static void irq_set(void *ctx, unsigned int gsi, int level)
{
	(void)ctx;
	(void)gsi;
	(void)level;
}

static void serial_tx(void *ctx, const uint8_t *buf, size_t len)
{
	(void)ctx;
	if (len)
		(void)*(volatile const uint8_t *)&buf[len - 1];
}

static void i8042_reset(void *ctx)
{
	(void)ctx;
}

static uint64_t rtc_clock(void *ctx)
{
	(void)ctx;
	return 1700000000ULL;
}

static int bar_in(void *dev, uint16_t port, void *data, unsigned int size)
{
	(void)dev;
	(void)port;
	memset(data, 0x5a, size);
	return 0;
}

static int bar_out(void *dev, uint16_t port, const void *data,
		   unsigned int size)
{
	(void)dev;
	(void)port;
	(void)data;
	(void)size;
	return 0;
}

static const struct kvm_pio_ops bar_ops = { .in = bar_in, .out = bar_out };

/* The freestanding VM: a disk and a NIC, their rings in RAM. */
static void setup_vm(void)
{
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		abort();
	vm->ram_size = KEMARI_RING_AREA_GPA + 2 * KEMARI_DEV_STRIDE;
	vm->ram = calloc(1, vm->ram_size);
	if (!vm->ram)
		abort();
	for (unsigned int i = 0; i < 2; i++) {
		devs[i] = (struct kvm_dev){
			.vm = vm,
			.index = i,
			.type = i ? KEMARI_DEV_NET : KEMARI_DEV_BLOCK,
			.ring_gpa =
				KEMARI_RING_AREA_GPA + i * KEMARI_DEV_STRIDE,
			.nqueues = i ? 2 : 1,
			.capacity = i ? 0 : 2048,
		};
		vm->devs[vm->ndevs++] = &devs[i];
	}
}

/* The PC models, fresh: as a secondary has them before the load. */
static void setup_models(void)
{
	struct kvm_pci_dev *d = &m->dev;

	memset(m, 0, sizeof(*m));
	m->irq = (struct kvm_irq){ .set = irq_set };
	kvm_serial__init(&m->serial, KVM_SERIAL_COM1_BASE, KVM_SERIAL_COM1_IRQ,
			 &m->irq, serial_tx, NULL);
	kvm_i8042__init(&m->i8042, &m->irq, i8042_reset, NULL);
	kvm_rtc__init(&m->rtc, rtc_clock, NULL);
	if (kvm_serial__register(&m->serial, &m->bus) ||
	    kvm_i8042__register(&m->i8042, &m->bus) ||
	    kvm_rtc__register(&m->rtc, &m->bus) ||
	    kvm_pci__init(&m->pci, &m->bus, &m->irq))
		abort();
	/* A virtio-style device: I/O BAR0 at 0xc000, BAR1 unassigned. */
	d->cfg[0] = 0xf4;
	d->cfg[1] = 0x1a;
	d->cfg[3] = 0x10;
	d->cfg[KVM_PCI_CLASS_DEVICE + 1] = 0x02;
	d->slot = 3;
	d->pin = 1;
	d->gsi = 19;
	d->bar[0] = (struct kvm_pci_bar){ .size = 32,
					  .addr = 0xc000,
					  .ops = &bar_ops };
	d->bar[1] = (struct kvm_pci_bar){ .size = 256, .ops = &bar_ops };
	if (kvm_pci__add(&m->pci, d))
		abort();
}

static void io(uint16_t port, bool in, unsigned int size, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			 (uint8_t)(v >> 24) };
	bool claimed;

	kvm_pio__io(&m->bus, port, in, b, size, &claimed);
}

/* A resumed guest: reads every register, then writes and reads again. */
static void drive(uint16_t base, unsigned int n, const uint8_t *v, size_t vlen)
{
	for (unsigned int i = 0; i < n; i++)
		io((uint16_t)(base + i), true, 1, 0);
	for (unsigned int i = 0; i < n; i++) {
		io((uint16_t)(base + i), false, 1, vlen ? v[i % vlen] : 0);
		io((uint16_t)(base + i), true, 1, 0);
	}
}

static void drive_pci(void)
{
	for (unsigned int slot = 0; slot < 4; slot++)
		for (unsigned int off = 0; off < KVM_PCI_CFG_SIZE; off += 4) {
			io(KVM_PCI_CONFIG_ADDRESS, false, 4,
			   0x80000000u | slot << 11 | off);
			io(KVM_PCI_CONFIG_DATA, true, 4, 0);
		}
	for (unsigned int p = 0xc000; p < 0xc020; p++)
		io((uint16_t)p, true, 1, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *blob = data + 1;
	size_t len = size - 1;

	if (size < 1)
		return 0;
	if (!vm) {
		setup_vm();
		m = malloc(sizeof(*m));
		if (!m)
			abort();
		fuzz__quiet();
	}
	switch (data[0] % T_N) {
	case T_KEMARI:
		kvm_dev__load(vm, blob, len);
		break;
	case T_SERIAL:
		setup_models();
		if (!kvm_serial__load(&m->serial, blob, len))
			drive(KVM_SERIAL_COM1_BASE, 8, blob, len);
		break;
	case T_I8042:
		setup_models();
		if (!kvm_i8042__load(&m->i8042, blob, len)) {
			drive(KVM_I8042_DATA, 1, blob, len);
			drive(KVM_I8042_CMD, 1, blob, len);
			drive(KVM_I8042_DATA, 1, blob, len);
		}
		break;
	case T_RTC:
		setup_models();
		if (!kvm_rtc__load(&m->rtc, blob, len))
			drive(0x70, KVM_RTC_PORTS, blob, len);
		break;
	case T_PCI:
		setup_models();
		if (!kvm_pci__load(&m->pci, blob, len))
			drive_pci();
		break;
	}
	kemari_err_clear();
	return 0;
}

static void seed_model(const char *name, uint8_t target,
		       int (*save)(const void *dev, struct kemari_buf *b),
		       const void *dev)
{
	struct kemari_buf b = { 0 };

	if (kemari_buf__append(&b, &target, 1) || save(dev, &b))
		abort();
	fuzz__seed(name, b.data, b.len);
	kemari_buf__fini(&b);
}

static int save_serial(const void *d, struct kemari_buf *b)
{
	return kvm_serial__save(d, b);
}

static int save_i8042(const void *d, struct kemari_buf *b)
{
	return kvm_i8042__save(d, b);
}

static int save_rtc(const void *d, struct kemari_buf *b)
{
	return kvm_rtc__save(d, b);
}

static int save_pci(const void *d, struct kemari_buf *b)
{
	return kvm_pci__save(d, b);
}

static int save_kemari(const void *d, struct kemari_buf *b)
{
	return kvm_dev__save((struct kvm_vm *)d, b);
}

void fuzz_seeds(void)
{
	setup_vm();
	m = malloc(sizeof(*m));
	if (!m)
		abort();
	setup_models();
	seed_model("kemari", T_KEMARI, save_kemari, vm);
	seed_model("serial", T_SERIAL, save_serial, &m->serial);
	seed_model("i8042", T_I8042, save_i8042, &m->i8042);
	seed_model("rtc", T_RTC, save_rtc, &m->rtc);
	seed_model("pci", T_PCI, save_pci, &m->pci);
}
