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

int ofi_ctrl__xp(const void *p, uint32_t len, struct ofi_xp *xp)
{
	if (len != sizeof(*xp))
		return -EBADMSG;
	memcpy(xp, p, sizeof(*xp));
	if (xp->op == OFI_XP_CREDIT)
		return xp->credits ? 0 : -EBADMSG;
	return xp->op == OFI_XP_REGION ? 0 : -EBADMSG;
}
