// SPDX-License-Identifier: MIT
/*
 * The one explicit list of hypervisor and transport backends. Optional
 * backends compile in only when their libraries were found (HAVE_*), and
 * this is the only file that tests those macros.
 */
#include <errno.h>
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

/*
 * The stubs an operation a transport lacks points at, one per signature
 * (include/kemari/xport.h).
 */
int kemari_xport__enosys_listen(struct kemari_xport **out, const char *addr,
				const struct kemari_xport_opts *opts)
{
	(void)out;
	(void)addr;
	(void)opts;
	return -ENOSYS;
}

int kemari_xport__enosys_accept(struct kemari_xport *listener,
				struct kemari_xport **conn, int timeout_ms)
{
	(void)listener;
	(void)conn;
	(void)timeout_ms;
	return -ENOSYS;
}

int kemari_xport__enosys_reg(struct kemari_xport *x, void *base, uint64_t len)
{
	(void)x;
	(void)base;
	(void)len;
	return -ENOSYS;
}

int kemari_xport__enosys_push(struct kemari_xport *x,
			      const struct kemari_run *runs, size_t n,
			      uint64_t dst_off)
{
	(void)x;
	(void)runs;
	(void)n;
	(void)dst_off;
	return -ENOSYS;
}

int kemari_xport__enosys_flush(struct kemari_xport *x)
{
	(void)x;
	return -ENOSYS;
}

int kemari_xport__enosys_send(struct kemari_xport *x, uint16_t type,
			      uint64_t epoch, const void *payload, uint32_t len)
{
	(void)x;
	(void)type;
	(void)epoch;
	(void)payload;
	(void)len;
	return -ENOSYS;
}

int kemari_xport__enosys_recv(struct kemari_xport *x, struct kemari_msg *m,
			      int timeout_ms)
{
	(void)x;
	(void)m;
	(void)timeout_ms;
	return -ENOSYS;
}

uint32_t kemari_xport__enosys_max_msg(struct kemari_xport *x)
{
	(void)x;
	return 0;
}

void kemari_xport__enosys_close(struct kemari_xport *x)
{
	(void)x;
}

const struct kemari_xport_ops *kemari_xport_find(const char *name)
{
	for (unsigned int i = 0; kemari_xport_backends[i]; i++)
		if (!strcmp(kemari_xport_backends[i]->name, name))
			return kemari_xport_backends[i];
	return NULL;
}
