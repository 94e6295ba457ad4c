// SPDX-License-Identifier: MIT
/*
 * The one explicit list of hypervisor and transport backends. Optional
 * backends compile in only when their libraries were found (HAVE_*), and
 * this is the only file that tests those macros.
 */
#include <string.h>

#include "kemari/hv.h"
#include "kemari/xport.h"

extern const struct kemari_hv_ops kemari_hv_kvm;
extern const struct kemari_hv_ops kemari_hv_synth;
extern const struct kemari_xport_ops kemari_xport_tcp;
#ifdef HAVE_RDMA
extern const struct kemari_xport_ops kemari_xport_rdma;
#endif
#ifdef HAVE_OFI
extern const struct kemari_xport_ops kemari_xport_ofi;
#endif

const struct kemari_hv_ops *const kemari_hv_backends[] = {
	&kemari_hv_kvm,
	&kemari_hv_synth,
	NULL,
};

const struct kemari_xport_ops *const kemari_xport_backends[] = {
	&kemari_xport_tcp,
#ifdef HAVE_RDMA
	&kemari_xport_rdma,
#endif
#ifdef HAVE_OFI
	&kemari_xport_ofi,
#endif
	NULL,
};

const struct kemari_hv_ops *kemari_hv_find(const char *name)
{
	for (unsigned int i = 0; kemari_hv_backends[i]; i++)
		if (!strcmp(kemari_hv_backends[i]->name, name))
			return kemari_hv_backends[i];
	return NULL;
}

const struct kemari_xport_ops *kemari_xport_find(const char *name)
{
	for (unsigned int i = 0; kemari_xport_backends[i]; i++)
		if (!strcmp(kemari_xport_backends[i]->name, name))
			return kemari_xport_backends[i];
	return NULL;
}
