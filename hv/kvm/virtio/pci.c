// SPDX-License-Identifier: MIT
/*
 * Legacy virtio-pci register block. The sequence Linux's legacy driver
 * (virtio_pci_legacy.c) performs: STATUS 0 (reset, read back to flush),
 * ACKNOWLEDGE, DRIVER, HOST_FEATURES read, GUEST_FEATURES write, per queue
 * QUEUE_SEL, QUEUE_NUM read, QUEUE_PFN read (must be 0) and write,
 * DRIVER_OK; its interrupt handler reads ISR, which clears it and drops
 * the level-triggered line.
 */
#include <errno.h>
#include <string.h>

#include "pci.h"

#define PCI_CFG_VENDOR 0x00
#define PCI_CFG_DEVICE 0x02
#define PCI_CFG_REVISION 0x08
#define PCI_CFG_PROG_IF 0x09
#define PCI_CFG_SUBCLASS 0x0a
#define PCI_CFG_CLASS 0x0b
#define PCI_CFG_HEADER_TYPE 0x0e
#define PCI_CFG_BAR0 0x10
#define PCI_CFG_SUBSYS_VENDOR 0x2c
#define PCI_CFG_SUBSYS_ID 0x2e
#define PCI_CFG_IRQ_LINE 0x3c
#define PCI_CFG_IRQ_PIN 0x3d
#define PCI_BAR_IO 0x1

/* Transitional PCI device IDs (virtio 1.x spec 4.1.2.1) and class codes. */
/* The checkpointed state is copied as bytes: keep it free of padding. */
_Static_assert(sizeof(struct kvm_vq) == 16, "kvm_vq layout");
_Static_assert(sizeof(struct kvm_virtio_pci_state) ==
		       12 + KVM_VIRTIO_MAX_QUEUES * sizeof(struct kvm_vq),
	       "kvm_virtio_pci_state layout");

static const struct {
	uint16_t type, pci_id;
	uint8_t class, subclass;
} vp__ids[] = {
	{ VIRTIO_ID_NET, 0x1000, 0x02, 0x00 },	   /* ethernet */
	{ VIRTIO_ID_BLOCK, 0x1001, 0x01, 0x00 },   /* mass storage (SCSI) */
	{ 5, 0x1002, 0xff, 0x00 },		   /* balloon */
	{ VIRTIO_ID_CONSOLE, 0x1003, 0x07, 0x80 }, /* other communication */
	{ 8, 0x1004, 0x01, 0x00 },		   /* scsi */
	{ VIRTIO_ID_RNG, 0x1005, 0xff, 0x00 },
	{ 9, 0x1009, 0xff, 0x00 }, /* 9p */
};

static void vp__put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void vp__put32(uint8_t *p, uint32_t v)
{
	vp__put16(p, (uint16_t)v);
	vp__put16(p + 2, (uint16_t)(v >> 16));
}

static uint32_t vp__get(const void *data, unsigned int size)
{
	const uint8_t *p = data;
	uint32_t v = 0;

	for (unsigned int i = 0; i < size && i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static void vp__set_line(struct kvm_virtio_pci *vp)
{
	kvm_irq__set(vp->irq, vp->gsi, vp->st.isr ? 1 : 0);
}

static void vp__reset(struct kvm_virtio_pci *vp)
{
	struct kvm_virtio_pci_state *st = &vp->st;

	if (vp->model.ops->reset)
		vp->model.ops->reset(vp);
	memset(st, 0, sizeof(*st));
	st->device_type = vp->model.device_type;
	st->nqueues = vp->model.nqueues;
	for (unsigned int q = 0; q < vp->model.nqueues; q++)
		kvm_vq__init(&st->vq[q], vp->model.queue_size);
	vp__set_line(vp);
}

int kvm_virtio_pci__init(struct kvm_virtio_pci *vp,
			 const struct kvm_virtio_model *model,
			 const struct kvm_gmem *mem)
{
	struct kvm_vq probe;

	if (!model->ops || !model->ops->queue || !model->nqueues ||
	    model->nqueues > KVM_VIRTIO_MAX_QUEUES ||
	    kvm_vq__init(&probe, model->queue_size) ||
	    (model->config_len && !model->config) ||
	    model->config_len > 0x100 - VIRTIO_PCI_CONFIG_OFF)
		return -EINVAL;
	memset(vp, 0, sizeof(*vp));
	vp->model = *model;
	vp->mem = mem;
	vp__reset(vp);
	return 0;
}

void kvm_virtio_pci__set_irq(struct kvm_virtio_pci *vp,
			     const struct kvm_irq *irq, unsigned int gsi)
{
	vp->irq = irq;
	vp->gsi = gsi;
	vp__set_line(vp);
}

void kvm_virtio_pci__set_notify(struct kvm_virtio_pci *vp,
				kvm_virtio_notify_fn *fn, void *ctx)
{
	vp->notify = fn;
	vp->notify_ctx = ctx;
}

void kvm_virtio_pci__set_base(struct kvm_virtio_pci *vp, uint16_t io_base)
{
	vp->io_base = io_base;
}

uint16_t kvm_virtio_pci__bar_size(const struct kvm_virtio_pci *vp)
{
	uint16_t need = VIRTIO_PCI_CONFIG_OFF + vp->model.config_len;
	uint16_t size = 32;

	while (size < need)
		size <<= 1;
	return size;
}

int kvm_virtio_pci__fill_config(const struct kvm_virtio_pci *vp,
				uint8_t cfg[256], uint8_t irq_line)
{
	unsigned int i;

	for (i = 0; i < sizeof(vp__ids) / sizeof(vp__ids[0]); i++)
		if (vp__ids[i].type == vp->model.device_type)
			break;
	if (i == sizeof(vp__ids) / sizeof(vp__ids[0]))
		return -EINVAL;
	memset(cfg, 0, 256);
	vp__put16(cfg + PCI_CFG_VENDOR, KVM_VIRTIO_PCI_VENDOR);
	vp__put16(cfg + PCI_CFG_DEVICE, vp__ids[i].pci_id);
	/* Revision 0 is the legacy ABI version Linux insists on; command
	 * and status stay 0: decoding is the driver's to enable, and no
	 * capability list means no modern virtio interface to prefer. */
	cfg[PCI_CFG_REVISION] = 0;
	cfg[PCI_CFG_PROG_IF] = 0;
	cfg[PCI_CFG_SUBCLASS] = vp__ids[i].subclass;
	cfg[PCI_CFG_CLASS] = vp__ids[i].class;
	cfg[PCI_CFG_HEADER_TYPE] = 0;
	vp__put32(cfg + PCI_CFG_BAR0, (uint32_t)vp->io_base | PCI_BAR_IO);
	vp__put16(cfg + PCI_CFG_SUBSYS_VENDOR, KVM_VIRTIO_PCI_VENDOR);
	vp__put16(cfg + PCI_CFG_SUBSYS_ID, vp->model.device_type);
	cfg[PCI_CFG_IRQ_LINE] = irq_line;
	cfg[PCI_CFG_IRQ_PIN] = 1; /* INTA# */
	return 0;
}

static uint8_t vp__reg_byte(const struct kvm_virtio_pci *vp, unsigned int off)
{
	const struct kvm_virtio_pci_state *st = &vp->st;
	bool qok = st->queue_sel < vp->model.nqueues;
	uint8_t regs[VIRTIO_PCI_CONFIG_OFF] = { 0 };

	if (off >= VIRTIO_PCI_CONFIG_OFF) {
		off -= VIRTIO_PCI_CONFIG_OFF;
		return off < vp->model.config_len ? vp->model.config[off] : 0;
	}
	vp__put32(regs + VIRTIO_PCI_HOST_FEATURES, vp->model.host_features);
	vp__put32(regs + VIRTIO_PCI_GUEST_FEATURES, st->guest_features);
	vp__put32(regs + VIRTIO_PCI_QUEUE_PFN,
		  qok ? st->vq[st->queue_sel].pfn : 0);
	vp__put16(regs + VIRTIO_PCI_QUEUE_NUM,
		  qok ? st->vq[st->queue_sel].size : 0);
	vp__put16(regs + VIRTIO_PCI_QUEUE_SEL, st->queue_sel);
	regs[VIRTIO_PCI_STATUS] = st->status;
	regs[VIRTIO_PCI_ISR] = st->isr;
	return regs[off];
}

int kvm_virtio_pci__read(struct kvm_virtio_pci *vp, uint16_t off, void *data,
			 unsigned int size)
{
	uint8_t *out = data;

	for (unsigned int i = 0; i < size; i++)
		out[i] = vp__reg_byte(vp, (unsigned int)off + i);
	/* Reading ISR acknowledges the interrupt (legacy INTx). */
	if (off <= VIRTIO_PCI_ISR &&
	    (unsigned int)off + size > VIRTIO_PCI_ISR && vp->st.isr) {
		vp->st.isr = 0;
		vp__set_line(vp);
	}
	return 0;
}

static void vp__write_status(struct kvm_virtio_pci *vp, uint8_t val)
{
	if (!val) {
		vp__reset(vp);
		return;
	}
	/* NEEDS_RESET is the device's: only a reset clears it. */
	vp->st.status = val | (vp->st.status & VIRTIO_CONFIG_S_NEEDS_RESET);
}

static void vp__write_features(struct kvm_virtio_pci *vp, uint32_t val)
{
	vp->st.guest_features = val & vp->model.host_features;
	for (unsigned int q = 0; q < vp->model.nqueues; q++)
		kvm_vq__set_features(&vp->st.vq[q], vp->st.guest_features);
}

static void vp__write_pfn(struct kvm_virtio_pci *vp, uint32_t pfn)
{
	struct kvm_vq *vq;

	if (vp->st.queue_sel >= vp->model.nqueues)
		return;
	vq = &vp->st.vq[vp->st.queue_sel];
	kvm_vq__set_features(vq, vp->st.guest_features);
	if (kvm_vq__set_pfn(vq, vp->mem, pfn))
		kvm_virtio_pci__fail(vp);
}

int kvm_virtio_pci__write(struct kvm_virtio_pci *vp, uint16_t off,
			  const void *data, unsigned int size)
{
	uint32_t val = vp__get(data, size);

	/* Registers take their own width (NOTIFY also a 32-bit OUT); other
	 * widths and read-only registers ignore the write, as does the
	 * device config (nothing in it is driver-writable here). */
	switch (off) {
	case VIRTIO_PCI_GUEST_FEATURES:
		if (size == 4)
			vp__write_features(vp, val);
		return 0;
	case VIRTIO_PCI_QUEUE_PFN:
		if (size == 4)
			vp__write_pfn(vp, val);
		return 0;
	case VIRTIO_PCI_QUEUE_SEL:
		if (size == 2)
			vp->st.queue_sel = (uint16_t)val;
		return 0;
	case VIRTIO_PCI_QUEUE_NOTIFY:
		if (size == 2 || size == 4)
			return kvm_virtio_pci__kick(vp, (uint16_t)val);
		return 0;
	case VIRTIO_PCI_STATUS:
		if (size == 1)
			vp__write_status(vp, (uint8_t)val);
		return 0;
	default:
		return 0;
	}
}

static int vp__pio_in(void *dev, uint16_t port, void *data, unsigned int size)
{
	struct kvm_virtio_pci *vp = dev;

	return kvm_virtio_pci__read(vp, (uint16_t)(port - vp->io_base), data,
				    size);
}

static int vp__pio_out(void *dev, uint16_t port, const void *data,
		       unsigned int size)
{
	struct kvm_virtio_pci *vp = dev;

	return kvm_virtio_pci__write(vp, (uint16_t)(port - vp->io_base), data,
				     size);
}

const struct kvm_pio_ops kvm_virtio_pci__pio_ops = {
	.in = vp__pio_in,
	.out = vp__pio_out,
};

int kvm_virtio_pci__kick(struct kvm_virtio_pci *vp, unsigned int q)
{
	if (q >= vp->model.nqueues)
		return 0;
	if (vp->notify)
		return vp->notify(vp, q, vp->notify_ctx);
	return kvm_virtio_pci__process(vp, q);
}

int kvm_virtio_pci__process(struct kvm_virtio_pci *vp, unsigned int q)
{
	int ret;

	if (q >= vp->model.nqueues ||
	    (vp->st.status & VIRTIO_CONFIG_S_NEEDS_RESET) ||
	    !kvm_vq__ready(&vp->st.vq[q]))
		return 0;
	ret = vp->model.ops->queue(vp, q);
	if (vp->st.vq[q].broken)
		kvm_virtio_pci__fail(vp);
	return ret;
}

void kvm_virtio_pci__interrupt(struct kvm_virtio_pci *vp, uint8_t isr_bits)
{
	if (!isr_bits)
		return;
	vp->st.isr |= isr_bits;
	vp__set_line(vp);
}

void kvm_virtio_pci__signal(struct kvm_virtio_pci *vp, unsigned int q)
{
	if (kvm_vq__should_notify(&vp->st.vq[q], vp->mem))
		kvm_virtio_pci__interrupt(vp, VIRTIO_PCI_ISR_QUEUE);
}

void kvm_virtio_pci__config_changed(struct kvm_virtio_pci *vp)
{
	kvm_virtio_pci__interrupt(vp, VIRTIO_PCI_ISR_CONFIG);
}

void kvm_virtio_pci__fail(struct kvm_virtio_pci *vp)
{
	if (vp->st.status & VIRTIO_CONFIG_S_NEEDS_RESET)
		return;
	vp->st.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
	/* The spec pairs NEEDS_RESET with a config change notification. */
	kvm_virtio_pci__config_changed(vp);
}

void kvm_virtio_pci__save(const struct kvm_virtio_pci *vp,
			  struct kvm_virtio_pci_state *st)
{
	*st = vp->st;
}

int kvm_virtio_pci__load(struct kvm_virtio_pci *vp,
			 const struct kvm_virtio_pci_state *st)
{
	if (st->device_type != vp->model.device_type ||
	    st->nqueues != vp->model.nqueues)
		return -EINVAL;
	for (unsigned int q = 0; q < KVM_VIRTIO_MAX_QUEUES; q++)
		if (q < st->nqueues && st->vq[q].size != vp->model.queue_size)
			return -EINVAL;
	vp->st = *st;
	vp__set_line(vp);
	return 0;
}

int kvm_virtio_pci__reattach(struct kvm_virtio_pci *vp, uint32_t *pending)
{
	*pending = 0;
	for (unsigned int q = 0; q < vp->model.nqueues; q++) {
		int n = kvm_vq__reattach(&vp->st.vq[q], vp->mem);

		if (n < 0)
			kvm_virtio_pci__fail(vp);
		else if (n > 0)
			*pending |= 1U << q;
	}
	vp__set_line(vp);
	return 0;
}
