// SPDX-License-Identifier: MIT
/*
 * PCI configuration mechanism #1 on bus 0. Linux's pci_check_type1()
 * writes a byte to 0xcfb, then 0x80000000 to 0xcf8 and reads it back, and
 * pci_sanity_check() looks for a host bridge class at some devfn: only
 * 32-bit accesses reach CONFIG_ADDRESS, and 00:00.0 is an i440FX.
 *
 * Config writes go through each device's write mask, so read-only fields
 * stay read-only and unimplemented BAR bits read 0: writing all ones to an
 * I/O BAR reads back ~(size - 1) | 1, the size probe Linux's
 * __pci_read_base() does. Any write to the command register or a BAR
 * re-derives where each BAR is registered on the port I/O bus.
 */
#include <errno.h>
#include <string.h>

#include "kemari/buf.h"
#include "pci.h"

#define PCI_ADDR_ENABLE 0x80000000U
#define PCI_ADDR_KEEP 0x8ffffffcU /* reserved bits 30:28 and 1:0 read 0 */
#define PCI_ADDR_EXT_REG 0x0f000000U
#define PCI_HOST_REVISION 0x02
/* GSIs 0-15 are the ISA IRQs (edge, on the PIC too, each with its own MP
 * table entry); INTx is level-triggered and goes to IOAPIC pins 16-23. */
#define PCI_MIN_GSI 16
#define PCI_MAX_GSI 23
#define PCI_MAX_PIN 4

static uint16_t pci__get16(const struct kvm_pci_dev *d, unsigned int off)
{
	return (uint16_t)(d->cfg[off] | d->cfg[off + 1] << 8);
}

static uint32_t pci__get32(const struct kvm_pci_dev *d, unsigned int off)
{
	uint32_t hi = pci__get16(d, off + 2);

	return hi << 16 | pci__get16(d, off);
}

static void pci__put16(uint8_t *p, unsigned int off, uint16_t v)
{
	p[off] = (uint8_t)v;
	p[off + 1] = (uint8_t)(v >> 8);
}

static void pci__put32(uint8_t *p, unsigned int off, uint32_t v)
{
	pci__put16(p, off, (uint16_t)v);
	pci__put16(p, off + 2, (uint16_t)(v >> 16));
}

static bool pci__is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

/* Whether the device drives its INTx line now. */
static int pci__line(const struct kvm_pci_dev *d)
{
	return d->pin &&
	       (pci__get16(d, KVM_PCI_STATUS) & KVM_PCI_STATUS_INTERRUPT) &&
	       !(pci__get16(d, KVM_PCI_COMMAND) & KVM_PCI_CMD_INTX_DISABLE);
}

static uint32_t pci__bar_value(const struct kvm_pci_dev *d, unsigned int i)
{
	return pci__get32(d, KVM_PCI_BAR0 + 4 * i) & ~0x3U;
}

uint32_t kvm_pci__bar_addr(const struct kvm_pci_dev *dev, unsigned int i)
{
	if (i >= KVM_PCI_BARS || !dev->bar[i].size)
		return 0;
	return pci__bar_value(dev, i);
}

/*
 * Make BAR i's registration match its config: present while I/O decode is
 * on and the BAR sits at a non-zero address that fits under 64 KiB. Returns
 * 0, or the bus's error (-EEXIST: the range overlaps another; the BAR is
 * then left unregistered).
 */
static int pci__map_bar(struct kvm_pci *pci, struct kvm_pci_dev *d,
			unsigned int i)
{
	struct kvm_pci_bar *b = &d->bar[i];
	uint32_t a = pci__bar_value(d, i);
	bool want = b->size &&
		    (pci__get16(d, KVM_PCI_COMMAND) & KVM_PCI_CMD_IO) && a &&
		    a + b->size <= KVM_PCI_IO_LIMIT;
	int err;

	if (b->mapped && want && b->mapped_base == a)
		return 0;
	if (b->mapped && want)
		err = kvm_pio__move(pci->bus, b->opaque, b->mapped_base,
				    (uint16_t)a, (uint16_t)b->size);
	else if (b->mapped)
		err = kvm_pio__move(pci->bus, b->opaque, b->mapped_base, 0, 0);
	else if (want)
		err = kvm_pio__register(pci->bus, (uint16_t)a,
					(uint16_t)b->size, b->ops, b->opaque);
	else
		return 0;
	b->mapped = false;
	if (err)
		return err;
	if (want) {
		b->mapped = true;
		b->mapped_base = (uint16_t)a;
	}
	return 0;
}

static void pci__unmap_all(struct kvm_pci *pci, struct kvm_pci_dev *d)
{
	for (unsigned int i = 0; i < KVM_PCI_BARS; i++) {
		struct kvm_pci_bar *b = &d->bar[i];

		if (!b->mapped)
			continue;
		kvm_pio__move(pci->bus, b->opaque, b->mapped_base, 0, 0);
		b->mapped = false;
	}
}

/*
 * A guest that moves a BAR onto ports another device owns loses that BAR
 * (as two devices decoding one address would garble it); the VM goes on.
 */
static int pci__remap(struct kvm_pci *pci, struct kvm_pci_dev *d)
{
	for (unsigned int i = 0; i < KVM_PCI_BARS; i++) {
		int err = pci__map_bar(pci, d, i);

		if (err && err != -EEXIST)
			return err;
	}
	return 0;
}

static int pci__cfg_write(struct kvm_pci *pci, struct kvm_pci_dev *d,
			  unsigned int off, const uint8_t *p, unsigned int n)
{
	int old_line = pci__line(d), err = 0;
	bool remap = false;

	for (unsigned int i = 0; i < n; i++) {
		unsigned int o = off + i;
		uint8_t m = d->wmask[o];

		d->cfg[o] = (uint8_t)((d->cfg[o] & ~m) | (p[i] & m));
		if (o == KVM_PCI_COMMAND ||
		    (o >= KVM_PCI_BAR0 && o < KVM_PCI_BAR0 + 4 * KVM_PCI_BARS))
			remap = true;
	}
	if (remap)
		err = pci__remap(pci, d);
	if (pci__line(d) != old_line)
		kvm_irq__set(pci->irq, d->gsi, pci__line(d));
	if (d->cfg_written)
		d->cfg_written(d, off, n);
	return err;
}

/* The device CONFIG_ADDRESS selects, and the dword-aligned register. */
static struct kvm_pci_dev *pci__target(struct kvm_pci *pci, unsigned int *reg)
{
	uint32_t a = pci->addr;

	if (!(a & PCI_ADDR_ENABLE) || (a & PCI_ADDR_EXT_REG))
		return NULL;
	if ((a >> 16) & 0xff) /* bus */
		return NULL;
	if ((a >> 8) & 0x7) /* function */
		return NULL;
	*reg = a & 0xfc;
	return pci->dev[(a >> 11) & 0x1f];
}

static int pci__addr_in(void *opaque, uint16_t port, void *data,
			unsigned int size)
{
	struct kvm_pci *pci = opaque;

	(void)port;
	if (size == 4)
		pci__put32(data, 0, pci->addr);
	else
		memset(data, 0xff, size);
	return 0;
}

static int pci__addr_out(void *opaque, uint16_t port, const void *data,
			 unsigned int size)
{
	struct kvm_pci *pci = opaque;
	const uint8_t *p = data;

	(void)port;
	/* Byte writes (0xcfb in pci_check_type1()) are not CONFIG_ADDRESS. */
	if (size == 4)
		pci->addr = ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
			     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24) &
			    PCI_ADDR_KEEP;
	return 0;
}

/*
 * CONFIG_DATA: an access at 0xcfc + k touches config bytes reg + k on; the
 * bytes of an access that would run past 0xcff read all ones and are not
 * written. No device there: all ones, writes dropped.
 */
static int pci__data_in(void *opaque, uint16_t port, void *data,
			unsigned int size)
{
	struct kvm_pci *pci = opaque;
	unsigned int at = (unsigned int)(port - KVM_PCI_CONFIG_DATA), reg = 0;
	struct kvm_pci_dev *d = pci__target(pci, &reg);
	uint8_t *p = data;

	for (unsigned int i = 0; i < size; i++)
		p[i] = (d && at + i < 4) ? d->cfg[reg + at + i] : 0xff;
	return 0;
}

static int pci__data_out(void *opaque, uint16_t port, const void *data,
			 unsigned int size)
{
	struct kvm_pci *pci = opaque;
	unsigned int at = (unsigned int)(port - KVM_PCI_CONFIG_DATA), reg = 0;
	struct kvm_pci_dev *d = pci__target(pci, &reg);
	unsigned int n = size;

	if (!d || at >= 4)
		return 0;
	if (at + n > 4)
		n = 4 - at;
	return pci__cfg_write(pci, d, reg + at, data, n);
}

static const struct kvm_pio_ops pci__addr_ops = {
	.in = pci__addr_in,
	.out = pci__addr_out,
};

static const struct kvm_pio_ops pci__data_ops = {
	.in = pci__data_in,
	.out = pci__data_out,
};

/* What the guest may write in the standard header. */
static void pci__header_masks(struct kvm_pci_dev *d)
{
	memset(d->wmask, 0, 0x40);
	pci__put16(d->wmask, KVM_PCI_COMMAND,
		   KVM_PCI_CMD_IO | KVM_PCI_CMD_MEM | KVM_PCI_CMD_MASTER |
			   0x0040 /* parity error response */ |
			   0x0100 /* SERR# enable */ |
			   KVM_PCI_CMD_INTX_DISABLE);
	d->wmask[0x0c] = 0xff; /* cache line size */
	d->wmask[0x0d] = 0xff; /* latency timer */
	for (unsigned int i = 0; i < KVM_PCI_BARS; i++)
		if (d->bar[i].size)
			pci__put32(d->wmask, KVM_PCI_BAR0 + 4 * i,
				   ~(d->bar[i].size - 1) & ~0x3U);
	d->wmask[KVM_PCI_INTERRUPT_LINE] = 0xff;
}

static void pci__host_init(struct kvm_pci_dev *h)
{
	memset(h, 0, sizeof(*h));
	pci__put16(h->cfg, KVM_PCI_VENDOR_ID, KVM_PCI_HOST_VENDOR);
	pci__put16(h->cfg, KVM_PCI_DEVICE_ID, KVM_PCI_HOST_DEVICE);
	h->cfg[KVM_PCI_REVISION] = PCI_HOST_REVISION;
	h->cfg[KVM_PCI_CLASS_PROG] = KVM_PCI_HOST_CLASS & 0xff;
	pci__put16(h->cfg, KVM_PCI_CLASS_DEVICE, KVM_PCI_HOST_CLASS >> 8);
	pci__header_masks(h);
}

int kvm_pci__init(struct kvm_pci *pci, struct kvm_pio_bus *bus,
		  const struct kvm_irq *irq)
{
	int err;

	memset(pci, 0, sizeof(*pci));
	pci->bus = bus;
	pci->irq = irq;
	pci__host_init(&pci->host);
	pci->dev[0] = &pci->host;
	err = kvm_pio__register(bus, KVM_PCI_CONFIG_ADDRESS, 4, &pci__addr_ops,
				pci);
	if (err)
		return err;
	err = kvm_pio__register(bus, KVM_PCI_CONFIG_DATA, 4, &pci__data_ops,
				pci);
	if (err)
		goto err_unregister_addr;
	return 0;

err_unregister_addr:
	kvm_pio__move(bus, pci, KVM_PCI_CONFIG_ADDRESS, 0, 0);
	return err;
}

static int pci__check(const struct kvm_pci_dev *d)
{
	uint16_t vendor = pci__get16(d, KVM_PCI_VENDOR_ID);

	if (!d->slot || d->slot >= KVM_PCI_SLOTS || vendor == 0xffff ||
	    !vendor || d->pin > PCI_MAX_PIN ||
	    (d->pin && (d->gsi < PCI_MIN_GSI || d->gsi > PCI_MAX_GSI)))
		return -EINVAL;
	for (unsigned int i = 0; i < KVM_PCI_BARS; i++) {
		const struct kvm_pci_bar *b = &d->bar[i];

		if (!b->size)
			continue;
		if (!pci__is_pow2(b->size) || b->size < 4 ||
		    b->size > KVM_PCI_IO_LIMIT || !b->ops ||
		    b->addr % b->size ||
		    (uint32_t)b->addr + b->size > KVM_PCI_IO_LIMIT)
			return -EINVAL;
	}
	return 0;
}

static void pci__intx_set(void *ctx, unsigned int gsi, int level)
{
	struct kvm_pci_dev *d = ctx;

	(void)gsi; /* the device's own GSI, whatever the caller thinks */
	kvm_pci__set_irq(d->pci, d, level);
}

int kvm_pci__add(struct kvm_pci *pci, struct kvm_pci_dev *d)
{
	uint16_t cmd = 0;
	int err;

	err = pci__check(d);
	if (err)
		return err;
	if (pci->dev[d->slot])
		return -EEXIST;

	pci__header_masks(d);
	for (unsigned int i = 0; i < KVM_PCI_BARS; i++) {
		struct kvm_pci_bar *b = &d->bar[i];

		b->mapped = false;
		pci__put32(d->cfg, KVM_PCI_BAR0 + 4 * i,
			   b->size ? (uint32_t)b->addr | KVM_PCI_BAR_IO : 0);
		if (b->size && b->addr)
			cmd = KVM_PCI_CMD_IO;
	}
	pci__put16(d->cfg, KVM_PCI_COMMAND, cmd);
	pci__put16(d->cfg, KVM_PCI_STATUS,
		   pci__get16(d, KVM_PCI_STATUS) &
			   (uint16_t)~KVM_PCI_STATUS_INTERRUPT);
	d->cfg[KVM_PCI_INTERRUPT_PIN] = d->pin;
	d->cfg[KVM_PCI_INTERRUPT_LINE] = d->pin ? d->gsi : 0;

	for (unsigned int i = 0; i < KVM_PCI_BARS; i++) {
		err = pci__map_bar(pci, d, i);
		if (err)
			goto err_unmap;
	}
	d->pci = pci;
	d->intx = (struct kvm_irq){ .set = pci__intx_set, .ctx = d };
	pci->dev[d->slot] = d;
	return 0;

err_unmap:
	pci__unmap_all(pci, d);
	return err;
}

void kvm_pci__set_irq(struct kvm_pci *pci, struct kvm_pci_dev *dev, int level)
{
	int old = pci__line(dev);
	uint16_t status = pci__get16(dev, KVM_PCI_STATUS);

	if (level)
		status |= KVM_PCI_STATUS_INTERRUPT;
	else
		status &= (uint16_t)~KVM_PCI_STATUS_INTERRUPT;
	pci__put16(dev->cfg, KVM_PCI_STATUS, status);
	if (pci__line(dev) != old)
		kvm_irq__set(pci->irq, dev->gsi, pci__line(dev));
}

int kvm_pci__routes(const struct kvm_pci *pci, struct kvm_mp_pci_irq *out,
		    unsigned int max)
{
	unsigned int n = 0;

	for (unsigned int s = 1; s < KVM_PCI_SLOTS; s++) {
		const struct kvm_pci_dev *d = pci->dev[s];

		if (!d || !d->pin)
			continue;
		if (n >= max)
			return -ENOSPC;
		out[n++] = (struct kvm_mp_pci_irq){
			.dev = d->slot,
			.pin = d->pin,
			.ioapic_pin = d->gsi,
		};
	}
	return (int)n;
}

/* Blob: u32 CONFIG_ADDRESS, u32 count, then count x (u8 slot, cfg). */
#define PCI_BLOB_HDR 8
#define PCI_BLOB_DEV (1 + KVM_PCI_CFG_SIZE)

int kvm_pci__save(const struct kvm_pci *pci, struct kemari_buf *out)
{
	uint8_t hdr[PCI_BLOB_HDR];
	uint32_t count = 0;
	int err;

	for (unsigned int s = 0; s < KVM_PCI_SLOTS; s++)
		count += pci->dev[s] != NULL;
	pci__put32(hdr, 0, pci->addr);
	pci__put32(hdr, 4, count);
	err = kemari_buf__append(out, hdr, sizeof(hdr));
	for (unsigned int s = 0; s < KVM_PCI_SLOTS && !err; s++) {
		uint8_t slot = (uint8_t)s;

		if (!pci->dev[s])
			continue;
		err = kemari_buf__append(out, &slot, 1);
		if (!err)
			err = kemari_buf__append(out, pci->dev[s]->cfg,
						 KVM_PCI_CFG_SIZE);
	}
	return err;
}

/* Does the blob describe this bus: same slots, same vendor and device? */
static int pci__check_blob(const struct kvm_pci *pci, const uint8_t *p,
			   size_t len)
{
	uint32_t count, s = 0;

	if (len < PCI_BLOB_HDR)
		return -EINVAL;
	count = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
		(uint32_t)p[7] << 24;
	if (count > KVM_PCI_SLOTS ||
	    len != PCI_BLOB_HDR + (size_t)count * PCI_BLOB_DEV)
		return -EINVAL;
	p += PCI_BLOB_HDR;
	for (uint32_t i = 0; i < count; i++, p += PCI_BLOB_DEV, s++) {
		const struct kvm_pci_dev *d;

		while (s < KVM_PCI_SLOTS && !pci->dev[s])
			s++;
		if (s >= KVM_PCI_SLOTS || p[0] != s)
			return -EINVAL;
		d = pci->dev[s];
		if (memcmp(p + 1, d->cfg, 4)) /* vendor and device ID */
			return -EINVAL;
	}
	while (s < KVM_PCI_SLOTS && !pci->dev[s])
		s++;
	return s < KVM_PCI_SLOTS ? -EINVAL : 0;
}

int kvm_pci__load(struct kvm_pci *pci, const void *blob, size_t len)
{
	const uint8_t *p = blob;
	int err;

	err = pci__check_blob(pci, p, len);
	if (err)
		return err;
	pci->addr = ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
		     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24) &
		    PCI_ADDR_KEEP;
	/* Unmap everything first so that BARs swapping places never collide
	 * with their own old ranges. */
	for (unsigned int s = 0; s < KVM_PCI_SLOTS; s++)
		if (pci->dev[s])
			pci__unmap_all(pci, pci->dev[s]);
	for (p += PCI_BLOB_HDR; p < (const uint8_t *)blob + len;
	     p += PCI_BLOB_DEV)
		memcpy(pci->dev[p[0]]->cfg, p + 1, KVM_PCI_CFG_SIZE);
	for (unsigned int s = 0; s < KVM_PCI_SLOTS; s++) {
		struct kvm_pci_dev *d = pci->dev[s];

		if (!d)
			continue;
		for (unsigned int i = 0; i < KVM_PCI_BARS; i++) {
			err = pci__map_bar(pci, d, i);
			if (err)
				return err;
		}
		if (d->pin)
			kvm_irq__set(pci->irq, d->gsi, pci__line(d));
		if (d->cfg_written)
			d->cfg_written(d, 0, KVM_PCI_CFG_SIZE);
	}
	return 0;
}
