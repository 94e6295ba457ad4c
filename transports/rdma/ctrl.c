// SPDX-License-Identifier: MIT
/*
 * The rdma transport's control data (see ctrl.h). No verbs: compiled into
 * every build, with or without rdma-core.
 */
#include <errno.h>
#include <string.h>

#include "ctrl.h"
#include "kemari/kemari.h"

int rdma_ctrl__hs(const void *pd, size_t len, struct rdma_hs *hs)
{
	if (!pd || len < sizeof(*hs))
		return -EPROTO;
	memcpy(hs, pd, sizeof(*hs));
	if (hs->magic != RDMA_HS_MAGIC || hs->version != RDMA_HS_VERSION ||
	    hs->refuse || !hs->slots || hs->slots > 4096 ||
	    hs->max_msg < 4096 || hs->commit_size < 64 ||
	    hs->commit_size > 65536)
		return -EPROTO;
	return 0;
}

int rdma_ctrl__xport(const void *p, uint32_t len, struct rdma_ctrl_xport *m)
{
	struct rdma_dst_info *di = &m->di;

	memset(m, 0, sizeof(*m));
	if (len >= sizeof(m->kind))
		memcpy(&m->kind, p, sizeof(m->kind));
	if (m->kind == RDMA_XPORT_RW) {
		if (len != sizeof(m->rw))
			return -EBADMSG;
		memcpy(&m->rw, p, sizeof(m->rw));
		return 0;
	}
	if (len < sizeof(*di))
		return -EBADMSG;
	memcpy(di, p, sizeof(*di));
	/* len bounded first: n regions of piece bytes must not overflow. */
	if (di->kind != RDMA_XPORT_DST || !di->n ||
	    di->len > RDMA_DST_LEN_MAX ||
	    len != sizeof(*di) + (uint64_t)di->n * sizeof(struct rdma_remote) ||
	    !di->piece || di->piece % KEMARI_PAGE_SIZE || !di->len ||
	    di->len / di->piece + (di->len % di->piece != 0) != di->n)
		return -EBADMSG;
	m->mr = (const uint8_t *)p + sizeof(*di);
	return 0;
}
