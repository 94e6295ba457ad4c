// SPDX-License-Identifier: MIT
/*
 * The libfabric transport's control data (see ctrl.h). No libfabric:
 * compiled into every build, with or without it.
 */
#include <errno.h>
#include <string.h>

#include "ctrl.h"

int ofi_ctrl__cm(const void *data, size_t len, struct ofi_cm *cm)
{
	if (!data || len < sizeof(*cm))
		return -EPROTO;
	memcpy(cm, data, sizeof(*cm));
	if (cm->magic != OFI_CM_MAGIC || cm->window == 0 ||
	    cm->window > OFI_WINDOW_MAX)
		return -EPROTO;
	return 0;
}

size_t ofi_ctrl__hello_len(uint16_t addrlen)
{
	return OFI_HELLO_HDR + addrlen;
}

int ofi_ctrl__hello(const void *data, size_t len, struct ofi_hello *h)
{
	if (!data || len < OFI_HELLO_HDR)
		return -EPROTO;
	memset(h, 0, sizeof(*h));
	memcpy(h, data, OFI_HELLO_HDR);
	if (h->magic != OFI_HELLO_MAGIC || h->version != OFI_HELLO_VERSION ||
	    h->window == 0 || h->window > OFI_WINDOW_MAX || h->addrlen == 0 ||
	    h->addrlen > OFI_HELLO_ADDR_MAX ||
	    len != ofi_ctrl__hello_len(h->addrlen) ||
	    !memchr(h->prov, 0, sizeof(h->prov)) || !h->prov[0])
		return -EPROTO;
	memcpy(h->addr, (const uint8_t *)data + OFI_HELLO_HDR, h->addrlen);
	return 0;
}

int ofi_ctrl__xp(const void *p, uint32_t len, struct ofi_xp *xp)
{
	if (len != sizeof(*xp))
		return -EBADMSG;
	memcpy(xp, p, sizeof(*xp));
	if (xp->op == OFI_XP_CREDIT)
		return xp->credits ? 0 : -EBADMSG;
	return xp->op == OFI_XP_REGION || xp->op == OFI_XP_LINK ? 0 : -EBADMSG;
}
