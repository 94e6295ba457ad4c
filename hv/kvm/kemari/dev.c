// SPDX-License-Identifier: MIT
/*
 * Device plumbing: the boot info page, request/response rings in guest
 * memory, the kick (port I/O) dispatch that is the event tap's one entry
 * point, input polling while the guest idles, and device state.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "../kvm.h"
#include "kemari/buf.h"
#include "kemari/kemari.h"

int kvm_dev__register(struct kvm_vm *vm, struct kvm_dev *dev, uint32_t type,
		      unsigned int nqueues, uint64_t capacity)
{
	if (vm->ndevs >= KEMARI_MAX_DEVS)
		return kemari_err(-ENOSPC, "too many devices");
	dev->vm = vm;
	dev->index = vm->ndevs;
	dev->type = type;
	dev->nqueues = nqueues;
	dev->capacity = capacity;
	dev->ring_gpa = KEMARI_RING_AREA_GPA + dev->index * KEMARI_DEV_STRIDE;
	vm->devs[vm->ndevs++] = dev;
	return 0;
}

struct kemari_ring *kvm_dev__ring(struct kvm_dev *dev, unsigned int q)
{
	return (struct kemari_ring *)(dev->vm->ram + dev->ring_gpa +
				      q * KEMARI_RING_STRIDE);
}

static void kvm_ring__init(struct kvm_dev *dev, unsigned int q)
{
	struct kemari_ring *r = kvm_dev__ring(dev, q);

	memset(r, 0, sizeof(*r));
	r->nslots = KEMARI_RING_SLOTS;
}

int kvm_dev__write_bootinfo(struct kvm_vm *vm, uint64_t image_end)
{
	struct kemari_bootinfo *bi =
		(struct kemari_bootinfo *)(vm->ram + KEMARI_BOOTINFO_GPA);

	memset(bi, 0, sizeof(*bi));
	bi->magic = KEMARI_BOOTINFO_MAGIC;
	bi->version = KEMARI_ABI_VERSION;
	bi->ram_size = vm->ram_size;
	bi->image_end = image_end;
	bi->ndevs = vm->ndevs;
	for (unsigned int i = 0; i < vm->ndevs; i++) {
		struct kvm_dev *d = vm->devs[i];

		bi->dev[i].type = d->type;
		bi->dev[i].kick_port = KEMARI_PORT_KICK_BASE + i;
		bi->dev[i].ring_gpa = d->ring_gpa;
		bi->dev[i].nqueues = d->nqueues;
		bi->dev[i].capacity = d->capacity;
		for (unsigned int q = 0; q < d->nqueues; q++)
			kvm_ring__init(d, q);
	}
	for (unsigned int i = 0; i < vm->cfg.nguest_args; i++) {
		const char *kv = vm->cfg.guest_args[i];
		const char *eq = strchr(kv, '=');
		size_t klen = eq ? (size_t)(eq - kv) : 0;

		if (!eq || !klen || klen >= KEMARI_ARG_KEY_MAX ||
		    strlen(eq + 1) >= KEMARI_ARG_VAL_MAX)
			return kemari_err(
				-EINVAL,
				"--guest-arg '%s': use KEY=VALUE with a key under %d and a value under %d characters",
				kv, KEMARI_ARG_KEY_MAX, KEMARI_ARG_VAL_MAX);
		memcpy(bi->arg[i].key, kv, klen);
		strcpy(bi->arg[i].val, eq + 1);
	}
	bi->nargs = vm->cfg.nguest_args;
	return 0;
}

const struct kemari_req *kvm_ring__peek(struct kvm_dev *dev,
					struct kemari_ring *r)
{
	uint32_t cons = r->req_cons, prod = r->req_prod;

	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	/* A guest that claims more than a ring's worth is ignored. */
	if (cons == prod || prod - cons > KEMARI_RING_SLOTS)
		return NULL;
	if (r->rsp_prod - r->rsp_cons >= KEMARI_RING_SLOTS)
		return NULL; /* no room to answer: wait for the guest */
	(void)dev;
	return &r->req[cons & (KEMARI_RING_SLOTS - 1)];
}

int kvm_ring__respond(struct kvm_dev *dev, struct kemari_ring *r,
		      const struct kemari_rsp *rsp)
{
	uint32_t slot = r->rsp_prod & (KEMARI_RING_SLOTS - 1);
	uint64_t ring_gpa = (uint64_t)((uint8_t *)r - dev->vm->ram);

	r->rsp[slot] = *rsp;
	__atomic_thread_fence(__ATOMIC_RELEASE);
	r->rsp_prod++;
	r->req_cons++;
	kvm_vm__mark_dirty(dev->vm, ring_gpa, sizeof(*r));
	return 0;
}

static void kvm_dev__deliver_input(struct kvm_vm *vm)
{
	for (unsigned int i = 0; i < vm->ndevs; i++)
		if (vm->devs[i]->ops->input)
			vm->devs[i]->ops->input(vm->devs[i]);
}

struct kvm_event_wrap {
	struct kemari_event ev;
	struct kvm_dev *dev;
	bool released;
	int err;
};

static int kvm_dev__release(struct kemari_event *ev)
{
	struct kvm_event_wrap *w =
		kemari_container_of(ev, struct kvm_event_wrap, ev);

	if (w->released)
		return -EALREADY;
	w->released = true;
	w->err = w->dev->ops->process(w->dev, ev->queue);
	return w->err;
}

/* Every kick of every device comes through here: the event tap's one door. */
int kvm_dev__kick(struct kvm_vm *vm, uint16_t port, uint32_t value)
{
	const struct kemari_hv_hooks *h = &vm->cfg.hooks;
	unsigned int idx = port - KEMARI_PORT_KICK_BASE;
	struct kvm_event_wrap w;
	struct kvm_dev *dev;
	int err;

	if (port < KEMARI_PORT_KICK_BASE || idx >= vm->ndevs ||
	    value >= vm->devs[idx]->nqueues)
		return 0; /* a stray write to an unused port, as on hardware */
	dev = vm->devs[idx];
	if (!dev->tapped[value] || !h->event) {
		err = dev->ops->process(dev, value);
	} else {
		memset(&w, 0, sizeof(w));
		w.ev.kind = dev->kind[value];
		w.ev.dev = idx;
		w.ev.queue = value;
		w.ev.release = kvm_dev__release;
		w.dev = dev;
		err = h->event(h->ctx, &w.ev);
		/* Unreleased is fine only when the VM is being stopped. */
		if (!err && !w.released && !atomic_load(&vm->stop))
			err = kemari_err(
				-EPROTO,
				"internal: event on device %u was never released",
				idx);
		if (!err)
			err = w.err;
	}
	if (!err)
		kvm_dev__deliver_input(vm);
	return err;
}

int kvm_dev__idle(struct kvm_vm *vm, int timeout_ms)
{
	struct pollfd pfd[KEMARI_MAX_DEVS];
	unsigned int n = 0;
	int ret;

	for (unsigned int i = 0; i < vm->ndevs; i++) {
		struct kvm_dev *d = vm->devs[i];
		int fd = d->ops->pollfd ? d->ops->pollfd(d) : -1;

		if (fd >= 0) {
			pfd[n].fd = fd;
			pfd[n].events = POLLIN;
			pfd[n].revents = 0;
			n++;
		}
	}
	ret = poll(pfd, n, timeout_ms);
	if (ret < 0 && errno != EINTR)
		return kemari_err(-errno, "poll: %s", strerror(errno));
	kvm_dev__deliver_input(vm);
	return 0;
}

/* --- device state ----------------------------------------------------- */

struct kvm_dev_state {
	uint32_t index;
	uint32_t type;
	uint32_t nqueues;
	uint32_t reserved;
	uint64_t capacity;
	struct {
		uint32_t req_cons;
		uint32_t rsp_prod;
	} q[2];
};

#define DEV_TAG_STATE 0x44455600 /* "DEV" */

int kvm_dev__save(struct kvm_vm *vm, struct kemari_buf *out)
{
	for (unsigned int i = 0; i < vm->ndevs; i++) {
		struct kvm_dev *d = vm->devs[i];
		struct kvm_dev_state s;
		int err;

		memset(&s, 0, sizeof(s));
		s.index = i;
		s.type = d->type;
		s.nqueues = d->nqueues;
		s.capacity = d->capacity;
		for (unsigned int q = 0; q < d->nqueues && q < 2; q++) {
			struct kemari_ring *r = kvm_dev__ring(d, q);

			s.q[q].req_cons = r->req_cons;
			s.q[q].rsp_prod = r->rsp_prod;
		}
		err = kemari_tlv__put(out, DEV_TAG_STATE, &s, sizeof(s));
		if (err)
			return err;
	}
	return 0;
}

int kvm_dev__load(struct kvm_vm *vm, const void *blob, size_t len)
{
	struct kemari_tlv_iter it = { blob, len };
	unsigned int seen = 0;
	const void *val;
	uint32_t tag, n;
	int r;

	while ((r = kemari_tlv__next(&it, &tag, &val, &n)) > 0) {
		struct kvm_dev_state s;
		struct kvm_dev *d;

		if (tag != DEV_TAG_STATE || n != sizeof(s))
			return kemari_err(-EBADMSG,
					  "device state: unknown record 0x%x",
					  tag);
		memcpy(&s, val, sizeof(s));
		if (s.index >= vm->ndevs || vm->devs[s.index]->type != s.type ||
		    vm->devs[s.index]->nqueues != s.nqueues)
			return kemari_err(
				-EINVAL,
				"device state: device %u (type %u) does not match this VM's devices: start both sides with the same --disk/--net",
				s.index, s.type);
		d = vm->devs[s.index];
		if (d->type == KEMARI_DEV_BLOCK && d->capacity != s.capacity)
			return kemari_err(
				-EINVAL,
				"device state: disk has %llu sectors here but %llu on the primary: use the same --disk",
				(unsigned long long)d->capacity,
				(unsigned long long)s.capacity);
		/* The rings in the restored RAM must agree with the record. */
		for (unsigned int q = 0; q < s.nqueues && q < 2; q++) {
			struct kemari_ring *rg = kvm_dev__ring(d, q);

			if (rg->req_cons != s.q[q].req_cons ||
			    rg->rsp_prod != s.q[q].rsp_prod)
				return kemari_err(
					-EBADMSG,
					"device state: ring %u/%u indices disagree with guest memory (torn checkpoint)",
					s.index, q);
		}
		seen++;
	}
	if (r < 0)
		return kemari_err(r, "device state blob is malformed");
	if (seen != vm->ndevs)
		return kemari_err(
			-EINVAL,
			"device state names %u devices, this VM has %u: start both sides with the same --disk/--net",
			seen, vm->ndevs);
	return 0;
}

int kvm_dev__reattach(struct kvm_vm *vm)
{
	for (unsigned int i = 0; i < vm->ndevs; i++) {
		struct kvm_dev *d = vm->devs[i];
		int err = d->ops->reattach ? d->ops->reattach(d) : 0;

		if (err)
			return err;
		/* Requests that were in flight at the tap are re-issued. */
		for (unsigned int q = 0; q < d->nqueues; q++) {
			if (!d->tapped[q] && d->type != KEMARI_DEV_CONSOLE)
				continue;
			err = d->ops->process(d, q);
			if (err)
				return err;
		}
	}
	return 0;
}

void kvm_dev__detach(struct kvm_vm *vm)
{
	for (unsigned int i = 0; i < vm->ndevs; i++)
		if (vm->devs[i]->ops->detach)
			vm->devs[i]->ops->detach(vm->devs[i]);
}

int kvm_dev__flush(struct kvm_vm *vm)
{
	int ret = 0;

	for (unsigned int i = 0; i < vm->ndevs; i++) {
		struct kvm_dev *d = vm->devs[i];
		int err = d->ops->flush ? d->ops->flush(d) : 0;

		if (err && !ret)
			ret = err;
	}
	return ret;
}

void kvm_dev__destroy_all(struct kvm_vm *vm)
{
	for (unsigned int i = 0; i < vm->ndevs; i++)
		vm->devs[i]->ops->destroy(vm->devs[i]);
	vm->ndevs = 0;
}
