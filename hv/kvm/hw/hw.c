// SPDX-License-Identifier: MIT
/* Guest memory lookups and the port I/O bus shared by the device models. */
#include <errno.h>
#include <string.h>

#include "hw.h"

#define HW_HOLE_START (3ULL << 30)
#define HW_HOLE_END (4ULL << 30)

void *kvm_gmem__ptr(const struct kvm_gmem *m, uint64_t gpa, uint64_t len)
{
	uint64_t off;

	if (gpa + len < gpa)
		return NULL;
	if (gpa < HW_HOLE_START) {
		if (gpa + len > HW_HOLE_START)
			return NULL;
		off = gpa;
	} else if (gpa >= HW_HOLE_END && m->ram_size > HW_HOLE_START) {
		off = gpa - (HW_HOLE_END - HW_HOLE_START);
	} else {
		return NULL;
	}
	if (off > m->ram_size || len > m->ram_size - off)
		return NULL;
	return m->ram + off;
}

static bool pio__overlap(const struct kvm_pio *r, uint16_t base, uint16_t len)
{
	return (uint32_t)base < (uint32_t)r->base + r->len &&
	       (uint32_t)r->base < (uint32_t)base + len;
}

int kvm_pio__register(struct kvm_pio_bus *bus, uint16_t base, uint16_t len,
		      const struct kvm_pio_ops *ops, void *dev)
{
	if (!len || (uint32_t)base + len > 0x10000)
		return -EINVAL;
	for (unsigned int i = 0; i < bus->n; i++)
		if (pio__overlap(&bus->range[i], base, len))
			return -EEXIST;
	if (bus->n >= KVM_PIO_MAX)
		return -ENOSPC;
	bus->range[bus->n++] = (struct kvm_pio){
		.base = base, .len = len, .ops = ops, .dev = dev
	};
	return 0;
}

int kvm_pio__move(struct kvm_pio_bus *bus, void *dev, uint16_t old_base,
		  uint16_t new_base, uint16_t len)
{
	for (unsigned int i = 0; i < bus->n; i++) {
		struct kvm_pio r = bus->range[i];

		if (r.dev != dev || r.base != old_base)
			continue;
		bus->range[i] = bus->range[--bus->n];
		return len ? kvm_pio__register(bus, new_base, len, r.ops, dev)
			   : 0;
	}
	return -ENOENT;
}

int kvm_pio__io(struct kvm_pio_bus *bus, uint16_t port, bool in, void *data,
		unsigned int size, bool *claimed)
{
	for (unsigned int i = 0; i < bus->n; i++) {
		const struct kvm_pio *r = &bus->range[i];

		if (port < r->base || port - r->base >= r->len || !r->ops)
			continue;
		*claimed = true;
		if (in)
			return r->ops->in ? r->ops->in(r->dev, port, data, size)
					  : (memset(data, 0xff, size), 0);
		return r->ops->out ? r->ops->out(r->dev, port, data, size) : 0;
	}
	*claimed = false;
	if (in)
		memset(data, 0xff, size);
	return 0;
}
