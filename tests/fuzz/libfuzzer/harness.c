// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct fuzz_xport *to_fuzz(struct kemari_xport *x)
{
	return kemari_container_of(x, struct fuzz_xport, x);
}

/* A connection exists already: nothing listens, accepts or connects. */
static int fuzz_xport__listen(struct kemari_xport **out, const char *addr,
			      const struct kemari_xport_opts *opts)
{
	(void)out;
	(void)addr;
	(void)opts;
	return -ENOSYS;
}

static int fuzz_xport__accept(struct kemari_xport *listener,
			      struct kemari_xport **conn, int timeout_ms)
{
	(void)listener;
	(void)conn;
	(void)timeout_ms;
	return -ENOSYS;
}

static int fuzz_xport__reg_src(struct kemari_xport *x, void *base, uint64_t len)
{
	(void)x;
	(void)base;
	(void)len;
	return 0;
}

static int fuzz_xport__reg_dst(struct kemari_xport *x, void *base, uint64_t len)
{
	struct fuzz_xport *f = to_fuzz(x);

	f->dst = base;
	f->dst_len = len;
	return 0;
}

static int fuzz_xport__push(struct kemari_xport *x,
			    const struct kemari_run *runs, size_t n,
			    uint64_t dst_off)
{
	(void)x;
	(void)runs;
	(void)n;
	(void)dst_off;
	return 0;
}

static int fuzz_xport__flush(struct kemari_xport *x)
{
	(void)x;
	return 0;
}

static int fuzz_xport__send(struct kemari_xport *x, uint16_t type,
			    uint64_t epoch, const void *payload, uint32_t len)
{
	(void)type;
	(void)epoch;
	/* Read what is sent, as a transport would. */
	if (len) {
		volatile uint8_t sink = ((const uint8_t *)payload)[len - 1];

		(void)sink;
	}
	to_fuzz(x)->sent++;
	return 0;
}

/* Copy a PAGES record's bytes into the receive buffers. */
static void fuzz_xport__land(struct fuzz_xport *f, const uint8_t *p,
			     uint32_t len)
{
	uint32_t off;

	if (!f->dst || len < sizeof(off))
		return;
	memcpy(&off, p, sizeof(off));
	p += sizeof(off);
	len -= sizeof(off);
	if (off >= f->dst_len)
		return;
	memcpy(f->dst + off, p, KEMARI_MIN((uint64_t)len, f->dst_len - off));
}

static int fuzz_xport__recv(struct kemari_xport *x, struct kemari_msg *m,
			    int timeout_ms)
{
	struct fuzz_xport *f = to_fuzz(x);

	(void)timeout_ms;
	for (;;) {
		uint16_t len;
		uint8_t type, epoch;

		free(f->payload);
		f->payload = NULL;
		if (f->left < 4)
			return kemari_err(-ECONNRESET,
					  "fuzz: end of input (peer gone)");
		type = f->in[0];
		epoch = f->in[1];
		memcpy(&len, f->in + 2, sizeof(len));
		f->in += 4;
		f->left -= 4;
		len = (uint16_t)KEMARI_MIN((size_t)len, f->left);
		f->payload = malloc(len ? len : 1);
		if (!f->payload)
			return -ENOMEM;
		memcpy(f->payload, f->in, len);
		f->in += len;
		f->left -= len;
		if (type == KEMARI_MSG_PAGES) {
			fuzz_xport__land(f, f->payload, len);
			continue;
		}
		m->type = type;
		m->epoch = epoch;
		m->len = len;
		m->payload = f->payload;
		return 0;
	}
}

static uint32_t fuzz_xport__max_msg(struct kemari_xport *x)
{
	(void)x;
	return KEMARI_MSG_MAX;
}

static void fuzz_xport__close(struct kemari_xport *x)
{
	(void)x;
}

static const struct kemari_xport_ops fuzz_xport_ops[2] = {
	{
		.name = "fuzz",
		.listen = fuzz_xport__listen,
		.accept = fuzz_xport__accept,
		.connect = fuzz_xport__listen,
		.reg_src = fuzz_xport__reg_src,
		.reg_dst = fuzz_xport__reg_dst,
		.push = fuzz_xport__push,
		.flush = fuzz_xport__flush,
		.send = fuzz_xport__send,
		.recv = fuzz_xport__recv,
		.max_msg = fuzz_xport__max_msg,
		.close = fuzz_xport__close,
	},
	{
		.name = "fuzz-onesided",
		.caps = KEMARI_XPORT_CAP_ONESIDED,
		.listen = fuzz_xport__listen,
		.accept = fuzz_xport__accept,
		.connect = fuzz_xport__listen,
		.reg_src = fuzz_xport__reg_src,
		.reg_dst = fuzz_xport__reg_dst,
		.push = fuzz_xport__push,
		.flush = fuzz_xport__flush,
		.send = fuzz_xport__send,
		.recv = fuzz_xport__recv,
		.max_msg = fuzz_xport__max_msg,
		.close = fuzz_xport__close,
	},
};

void fuzz_xport__init(struct fuzz_xport *f, const uint8_t *in, size_t len,
		      unsigned int caps)
{
	memset(f, 0, sizeof(*f));
	f->x.ops = &fuzz_xport_ops[caps & KEMARI_XPORT_CAP_ONESIDED ? 1 : 0];
	f->in = in;
	f->left = len;
}

void fuzz_xport__fini(struct fuzz_xport *f)
{
	free(f->payload);
	f->payload = NULL;
}

void fuzz__quiet(void)
{
	/* FUZZ_VERBOSE=1: every line, to see where an input goes. */
	kemari_log_set_level(getenv("FUZZ_VERBOSE") ? KEMARI_LOG_DEBUG
						    : KEMARI_LOG_ERROR);
	kemari_log_set_prefix("fuzz");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (getenv("FUZZ_WRITE_SEEDS")) {
		fuzz_seeds();
		exit(0);
	}
	return 0;
}

void fuzz__seed(const char *name, const void *p, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/seed-%s", getenv("FUZZ_WRITE_SEEDS"),
		 name);
	f = fopen(path, "wb");
	if (!f || fwrite(p, 1, len, f) != len || fclose(f)) {
		fprintf(stderr, "fuzz: cannot write %s\n", path);
		exit(1);
	}
}

void fuzz__rec(struct kemari_buf *b, uint8_t type, uint8_t epoch, const void *p,
	       uint16_t len)
{
	uint8_t h[4] = { type, epoch, (uint8_t)len, (uint8_t)(len >> 8) };

	if (kemari_buf__append(b, h, sizeof(h)) ||
	    (len && kemari_buf__append(b, p, len)))
		abort();
}
