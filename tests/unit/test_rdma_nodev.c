// SPDX-License-Identifier: MIT
/*
 * Without an RDMA device (this project's hosts: no InfiniBand in the
 * kernel), --transport=rdma fails on its first call with one actionable
 * line. Skipped where a device exists (the soft-RoCE test VM) and where the
 * rdma transport is not built.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>

#include "kemari/kemari.h"
#include "kemari/xport.h"

#define NO_DEVICE "no RDMA device: load rdma_rxe or use --transport=tcp"

static bool have_rdma_device(void)
{
	DIR *d = opendir("/sys/class/infiniband");
	struct dirent *e;
	bool any = false;

	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			any = true;
	if (d)
		closedir(d);
	return any;
}

static const struct kemari_xport_ops *rdma_or_skip(void)
{
	const struct kemari_xport_ops *ops = kemari_xport_find("rdma");

	if (!ops)
		cr_skip_test("the rdma transport is not built here");
	if (have_rdma_device())
		cr_skip_test("an RDMA device exists here");
	return ops;
}

Test(rdma_nodev, listen_says_no_rdma_device)
{
	const struct kemari_xport_ops *ops = rdma_or_skip();
	struct kemari_xport_opts o = { .connect_timeout_ms = 100 };
	struct kemari_xport *l = NULL;
	int err;

	kemari_err_clear();
	err = ops->listen(&l, "127.0.0.1:7411", &o);
	cr_assert(eq(int, err, -ENODEV));
	cr_assert(eq(str, (char *)kemari_last_error(err), NO_DEVICE));
	cr_assert(eq(ptr, l, NULL));
}

Test(rdma_nodev, connect_says_no_rdma_device)
{
	const struct kemari_xport_ops *ops = rdma_or_skip();
	struct kemari_xport_opts o = { .connect_timeout_ms = 100 };
	struct kemari_xport *c = NULL;
	int err;

	kemari_err_clear();
	err = ops->connect(&c, "169.254.77.1:7411", &o);
	cr_assert(eq(int, err, -ENODEV));
	cr_assert(eq(str, (char *)kemari_last_error(err), NO_DEVICE));
	cr_assert(eq(ptr, c, NULL));
}
