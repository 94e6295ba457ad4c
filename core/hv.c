// SPDX-License-Identifier: MIT
/*
 * The stubs a hypervisor backend points its lacking ops at (hv.h): each of
 * the op's own signature, so that no op is NULL and core calls every op
 * through its wrapper without asking first.
 */
#include <errno.h>

#include "kemari/hv.h"
#include "kemari/kemari.h"

int kemari_hv__no_open_disk(struct kemari_hv *hv)
{
	(void)hv;
	return 0; /* its disk, if any, was opened at create */
}

int kemari_hv__no_detach(struct kemari_hv *hv)
{
	return kemari_err(
		-ENOTSUP,
		"the %s hypervisor cannot let go of its guest's service addresses: no planned switchover with it",
		hv->ops->name);
}

int kemari_hv__no_crash(struct kemari_hv *hv)
{
	return kemari_err(
		-ENOTSUP,
		"--fault=guest-crash: the %s hypervisor cannot crash its guest",
		hv->ops->name);
}

int kemari_hv__no_tsc_khz(struct kemari_hv *hv, uint32_t *khz, bool *can_scale)
{
	(void)hv;
	*khz = 0;
	*can_scale = false;
	return 0;
}

int kemari_hv__no_guest_stat(struct kemari_hv *hv, unsigned int i,
			     uint64_t *val)
{
	(void)hv;
	(void)i;
	*val = 0;
	return -ENOENT;
}
