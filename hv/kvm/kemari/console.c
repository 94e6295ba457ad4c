// SPDX-License-Identifier: MIT
/*
 * Console: guest text to the VMM's stderr, one prefixed line at a time, at
 * most CONSOLE_RATE lines a second; the last lines over it are held and
 * printed at the guest's end, so a panic after a flood is never lost
 * (hw/conlog.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../hw/conlog.h"
#include "../kvm.h"
#include "kemari/kemari.h"

#define CONSOLE_RATE 200 /* lines per second, with a burst of as many */

struct kvm_console {
	struct kvm_dev dev;
	struct kvm_conlog log;
	bool out_failed;
};

/* Straight to stderr, like the VMM's own lines (unbuffered, in order). */
static void kvm_console__out(void *ctx, const char *text, size_t len)
{
	struct kvm_console *c = ctx;
	int err;

	if (c->out_failed)
		return;
	err = kvm_conlog__write_all(STDERR_FILENO, text, len);
	if (err) {
		c->out_failed = true;
		kemari_warn("the guest's console: %s; its output is dropped",
			    strerror(-err));
	}
}

static int kvm_console__process(struct kvm_dev *dev, unsigned int q)
{
	struct kvm_console *c =
		kemari_container_of(dev, struct kvm_console, dev);
	struct kemari_ring *r = kvm_dev__ring(dev, q);
	const struct kemari_req *slot;

	while ((slot = kvm_ring__peek(dev, r))) {
		struct kemari_req req = *slot;
		struct kemari_rsp rsp = { .id = req.id };
		uint32_t len = KEMARI_MIN(req.len, 4096u);
		const char *text = kvm_vm__gpa(dev->vm, req.gpa, len);

		if (!text) {
			rsp.status = -EFAULT;
		} else {
			kvm_conlog__put(&c->log, text, len, kemari_now_ns());
			rsp.len = len;
		}
		kvm_ring__respond(dev, r, &rsp);
	}
	return 0;
}

static void kvm_console__destroy(struct kvm_dev *dev)
{
	struct kvm_console *c =
		kemari_container_of(dev, struct kvm_console, dev);

	kvm_conlog__end(&c->log);
	free(c);
}

static const struct kvm_dev_ops kvm_console_ops = {
	.process = kvm_console__process,
	.destroy = kvm_console__destroy,
};

static struct kvm_console *kvm_console__of(struct kvm_vm *vm)
{
	for (unsigned int i = 0; i < vm->ndevs; i++)
		if (vm->devs[i] && vm->devs[i]->ops == &kvm_console_ops)
			return kemari_container_of(vm->devs[i],
						   struct kvm_console, dev);
	return NULL;
}

void kvm_console__end(struct kvm_vm *vm)
{
	struct kvm_console *c = kvm_console__of(vm);

	if (c)
		kvm_conlog__end(&c->log);
}

int kvm_console__create(struct kvm_vm *vm)
{
	struct kvm_console *c = calloc(1, sizeof(*c));
	const char *prefix = vm->cfg.console_prefix;
	int err;

	if (!c)
		return -ENOMEM;
	kvm_conlog__init(&c->log, prefix ? prefix : "guest: ", CONSOLE_RATE,
			 kvm_console__out, c);
	c->dev.ops = &kvm_console_ops;
	c->dev.kind[0] = KEMARI_EV_CONSOLE;
	c->dev.tapped[0] = vm->cfg.tap_console;
	err = kvm_dev__register(vm, &c->dev, KEMARI_DEV_CONSOLE, 1, 0);
	if (err)
		free(c);
	return err;
}
