// SPDX-License-Identifier: MIT
/* Receive credits of the one-sided transports (see credit.h). */
#include <errno.h>

#include "credit.h"

void xp_credit__init(struct xp_credit *c, uint32_t window, uint32_t batch)
{
	*c = (struct xp_credit){ .granted = window,
				 .batch = batch ? batch : 1 };
}

uint32_t xp_credit__avail(const struct xp_credit *c)
{
	return c->granted - c->sent;
}

void xp_credit__take(struct xp_credit *c)
{
	c->sent++;
}

uint32_t xp_credit__later(uint32_t cur, uint32_t seen)
{
	return (int32_t)(seen - cur) > 0 ? seen : cur;
}

void xp_credit__granted(struct xp_credit *c, uint32_t total)
{
	c->granted = xp_credit__later(c->granted, total);
}

int xp_credit__grant(struct xp_credit *c, uint32_t n, uint32_t max)
{
	uint32_t have = xp_credit__avail(c);

	if (have > max || n > max - have)
		return -EBADMSG;
	c->granted += n;
	return 0;
}

void xp_credit__lend(struct xp_credit *c)
{
	c->lent++;
}

uint32_t xp_credit__owed(const struct xp_credit *c)
{
	return c->lent - c->told;
}

bool xp_credit__due(const struct xp_credit *c, bool force)
{
	uint32_t owed = xp_credit__owed(c);

	return owed > 0 && (force || owed >= c->batch);
}

void xp_credit__told(struct xp_credit *c)
{
	c->told = c->lent;
}
