// SPDX-License-Identifier: MIT
/* Console: guest text to the VMM's stderr, one prefixed line at a time. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kvm.h"
#include "kemari/kemari.h"

#define CONSOLE_LINE_MAX 256
#define CONSOLE_RATE 200 /* lines per second, with a burst of as many */

struct kvm_console {
	struct kvm_dev dev;
	char line[CONSOLE_LINE_MAX];
	size_t len;
	uint64_t window_start_ns;
	unsigned int lines_in_window;
	unsigned long suppressed;
};

static void kvm_console__emit(struct kvm_console *c)
{
	const char *prefix = c->dev.vm->cfg.console_prefix;
	uint64_t now = kemari_now_ns();

	/* A guest printing in a loop must not drown the VMM's own messages. */
	if (now - c->window_start_ns > 1000000000ULL) {
		if (c->suppressed)
			fprintf(stderr, "%s... %lu lines suppressed\n",
				prefix ? prefix : "guest: ", c->suppressed);
		c->window_start_ns = now;
		c->lines_in_window = 0;
		c->suppressed = 0;
	}
	if (c->lines_in_window++ < CONSOLE_RATE)
		fprintf(stderr, "%s%.*s\n",
			prefix ? prefix : "guest: ", (int)c->len, c->line);
	else
		c->suppressed++;
	c->len = 0;
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
			for (uint32_t i = 0; i < len; i++) {
				char ch = text[i];

				if (ch == '\n' || c->len == CONSOLE_LINE_MAX) {
					kvm_console__emit(c);
					if (ch == '\n')
						continue;
				}
				c->line[c->len++] =
					(ch >= 0x20 && ch < 0x7f) || ch == '\t'
						? ch
						: '?';
			}
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

	if (c->len)
		kvm_console__emit(c);
	free(c);
}

static const struct kvm_dev_ops kvm_console_ops = {
	.process = kvm_console__process,
	.destroy = kvm_console__destroy,
};

int kvm_console__create(struct kvm_vm *vm)
{
	struct kvm_console *c = calloc(1, sizeof(*c));
	int err;

	if (!c)
		return -ENOMEM;
	c->dev.ops = &kvm_console_ops;
	c->dev.kind[0] = KEMARI_EV_CONSOLE;
	c->dev.tapped[0] = vm->cfg.tap_console;
	err = kvm_dev__register(vm, &c->dev, KEMARI_DEV_CONSOLE, 1, 0);
	if (err)
		free(c);
	return err;
}
