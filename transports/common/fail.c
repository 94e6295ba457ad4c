// SPDX-License-Identifier: MIT
/* Sticky failure of a one-sided connection (see fail.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "fail.h"

void xp_fail__die(struct xp_fail *f, int err, const char *fmt, ...)
{
	va_list ap;

	if (f->dead)
		return;
	f->dead = err;
	va_start(ap, fmt);
	vsnprintf(f->why, sizeof(f->why), fmt, ap);
	va_end(ap);
}

void xp_fail__lost(struct xp_fail *f, const char *addr, const char *why)
{
	xp_fail__die(f, -ECONNRESET, "connection to %s lost: %s", addr, why);
}

void xp_fail__malformed(struct xp_fail *f, int err)
{
	if (f->bad)
		return;
	f->bad = err;
	snprintf(f->bad_why, sizeof(f->bad_why), "%s", kemari_last_error(err));
}

bool xp_fail__failed(const struct xp_fail *f)
{
	return f->dead || f->bad;
}

int xp_fail__dead(const struct xp_fail *f)
{
	return f->dead ? kemari_err(f->dead, "%s", f->why) : 0;
}

int xp_fail__report(const struct xp_fail *f)
{
	if (f->bad)
		return kemari_err(f->bad, "%s", f->bad_why);
	return xp_fail__dead(f);
}
