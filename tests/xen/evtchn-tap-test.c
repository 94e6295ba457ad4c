/*
 * Event-channel tap, exercised for real: run in dom0 of the patched Xen
 * (xen-patches/) against a running PV domU, linked with the patched
 * libxenctrl.
 *
 *   evtchn-tap-test DOMID PORT CONSOLE_LOG
 *
 * PORT is one of the domU's interdomain ports that it sends on by itself
 * (its console port: every line it prints is a send), CONSOLE_LOG the file
 * xenconsoled writes that console to. Prints one "PASS: ..." or "FAIL: ..."
 * line per check; exits 1 if any failed, 2 if it could not start. Also
 * checks XEN_DOMCTL_evtchn_restore on the same domU.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenevtchn.h>

struct tap_test {
	xc_interface *xch;
	xenevtchn_handle *xce;
	uint32_t dom;
	evtchn_port_t port;
	const char *log;
	evtchn_port_t virq_port;
	int failed;
};

static void check(struct tap_test *t, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void check(struct tap_test *t, bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s: ", ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	if (!ok)
		t->failed++;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Nanoseconds the domain's vCPUs have run; 0 if it cannot be read. */
static uint64_t tap_test__cpu_ns(const struct tap_test *t)
{
	xc_domaininfo_t info;

	if (xc_domain_getinfolist(t->xch, t->dom, 1, &info) != 1 ||
	    info.domain != t->dom)
		return 0;
	return info.cpu_time;
}

static long tap_test__log_size(const struct tap_test *t)
{
	struct stat st;

	return stat(t->log, &st) ? -1 : (long)st.st_size;
}

/* Drop VIRQ_EVTCHN_TAP notifications that have already arrived. */
static void tap_test__drain_virq(struct tap_test *t)
{
	struct pollfd pfd = { .fd = xenevtchn_fd(t->xce), .events = POLLIN };
	xenevtchn_port_or_error_t p;

	while (poll(&pfd, 1, 0) == 1) {
		p = xenevtchn_pending(t->xce);
		if (p < 0)
			break;
		xenevtchn_unmask(t->xce, p);
	}
}

/* Wait for VIRQ_EVTCHN_TAP: 0 when it came, -ETIMEDOUT otherwise. */
static int tap_test__wait_virq(struct tap_test *t, int timeout_ms)
{
	struct pollfd pfd = { .fd = xenevtchn_fd(t->xce), .events = POLLIN };
	xenevtchn_port_or_error_t p;

	for (;;) {
		int n = poll(&pfd, 1, timeout_ms);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -ETIMEDOUT;
		p = xenevtchn_pending(t->xce);
		if (p < 0)
			return -EIO;
		xenevtchn_unmask(t->xce, p);
		if ((evtchn_port_t)p == t->virq_port)
			return 0;
	}
}

/* Wait until the console log grows past size; the new size, or -1. */
static long tap_test__wait_log_growth(const struct tap_test *t, long size,
				      int timeout_ms)
{
	long now;

	for (int waited = 0; waited <= timeout_ms; waited += 100) {
		now = tap_test__log_size(t);
		if (now > size)
			return now;
		sleep_ms(100);
	}
	return -1;
}

/* A tap operation that must fail with errno want. */
static void tap_test__refused(struct tap_test *t, const char *what,
			      int (*op)(xc_interface *, uint32_t, evtchn_port_t,
					xc_evtchn_tap_info_t *),
			      uint32_t dom, evtchn_port_t port, int want)
{
	int rc = op(t->xch, dom, port, NULL);
	int err = errno;

	check(t, rc == -1 && err == want, "%s refused with %s (rc=%d, %s)",
	      what, strerror(want), rc, rc ? strerror(err) : "no error");
}

static void tap_test__run(struct tap_test *t)
{
	xc_evtchn_tap_info_t info, before;
	uint64_t c0, c1, c2;
	long s0, s1, s2;
	int rc;

	/* Preconditions: the domU is printing, nothing is tapped yet. */
	s0 = tap_test__log_size(t);
	s1 = tap_test__wait_log_growth(t, s0, 10000);
	check(t, s1 > 0, "domU %u is running and printing (log %ld -> %ld)",
	      t->dom, s0, s1);
	rc = xc_evtchn_tap_query(t->xch, t->dom, t->port, &before);
	check(t, rc == 0 && before.flags == 0 && before.nr_held == 0,
	      "query before tap: rc=%d flags=%#x held=%u", rc, before.flags,
	      before.nr_held);

	/* Requests the hypervisor must refuse, from a privileged caller. */
	tap_test__refused(t, "tap of the caller's own domain (dom0)",
			  xc_evtchn_tap, 0, 1, EINVAL);
	tap_test__refused(t, "tap of reserved port 0", xc_evtchn_tap, t->dom, 0,
			  EINVAL);
	tap_test__refused(t, "tap of an unallocated port", xc_evtchn_tap,
			  t->dom, 100000, EINVAL);
	tap_test__refused(t, "release on a domain that does not exist",
			  xc_evtchn_tap_release, 0x7ff0, 1, ESRCH);

	/* Tap: the domU's next send on the port is held and it pauses. */
	tap_test__drain_virq(t);
	rc = xc_evtchn_tap(t->xch, t->dom, t->port, &info);
	check(t, rc == 0 && (info.flags & XEN_DOMCTL_EVTCHN_TAP_F_TAPPED),
	      "tap dom %u port %u: rc=%d flags=%#x", t->dom, t->port, rc,
	      info.flags);
	rc = tap_test__wait_virq(t, 60000);
	check(t, rc == 0, "domU's next send held: VIRQ_EVTCHN_TAP raised");
	rc = xc_evtchn_tap_query(t->xch, t->dom, t->port, &info);
	check(t,
	      rc == 0 && (info.flags & XEN_DOMCTL_EVTCHN_TAP_F_HELD) &&
		      info.nr_held == 1 &&
		      info.nr_intercepted > before.nr_intercepted,
	      "query while held: flags=%#x held=%u intercepted=%" PRIu64,
	      info.flags, info.nr_held, info.nr_intercepted);

	sleep_ms(500); /* let xenconsoled finish what it was told before */
	c0 = tap_test__cpu_ns(t);
	s0 = tap_test__log_size(t);
	sleep_ms(3000);
	c1 = tap_test__cpu_ns(t);
	s1 = tap_test__log_size(t);
	check(t, c0 != 0 && c1 == c0,
	      "domU paused while held: vCPU time %" PRIu64 " -> %" PRIu64
	      " ns over 3 s",
	      c0, c1);
	check(t, s1 == s0, "console silent while held: log %ld -> %ld bytes",
	      s0, s1);

	/*
	 * Release with the tap kept: the held send reaches xenconsoled (the
	 * line the domU wrote before pausing appears), the domU runs, and
	 * its next send on the port is held again.
	 */
	before = info;
	tap_test__drain_virq(t);
	rc = xc_evtchn_tap_release(t->xch, t->dom, t->port, &info);
	check(t, rc == 0 && info.nr_released == before.nr_released + 1,
	      "release: rc=%d released %" PRIu64 " -> %" PRIu64, rc,
	      before.nr_released, info.nr_released);
	s2 = tap_test__wait_log_growth(t, s1, 10000);
	check(t, s2 > s1,
	      "held notification delivered: console log %ld -> %ld bytes", s1,
	      s2);
	rc = tap_test__wait_virq(t, 60000);
	c2 = tap_test__cpu_ns(t);
	check(t, rc == 0 && c2 > c1,
	      "domU ran after release (vCPU time %" PRIu64 " -> %" PRIu64
	      ") and its next send was held again",
	      c1, c2);

	/* Untap releases what is held, and the domU runs freely. */
	rc = xc_evtchn_untap(t->xch, t->dom, t->port, &info);
	check(t, rc == 0 && info.flags == 0 && info.nr_held == 0,
	      "untap: rc=%d flags=%#x held=%u", rc, info.flags, info.nr_held);
	c0 = tap_test__cpu_ns(t);
	s0 = tap_test__log_size(t);
	sleep_ms(3000);
	c1 = tap_test__cpu_ns(t);
	s1 = tap_test__log_size(t);
	check(t, c1 > c0 && s1 > s0,
	      "domU runs after untap: vCPU time %" PRIu64 " -> %" PRIu64
	      ", log %ld -> %ld",
	      c0, c1, s0, s1);
	tap_test__drain_virq(t);
	rc = tap_test__wait_virq(t, 2000);
	check(t, rc == -ETIMEDOUT, "no send held after untap");
	rc = xc_evtchn_tap_release(t->xch, t->dom, XC_EVTCHN_TAP_ALL_PORTS,
				   &info);
	check(t, rc == 0 && info.nr_held == 0,
	      "release of all ports with none held is a no-op: rc=%d", rc);
}

/*
 * XEN_DOMCTL_evtchn_restore (xen-patches/0003): a port made at a chosen
 * number in the domU is unbound to dom0 there, cannot be made twice, and a
 * backend in dom0 can bind it. The domU never uses the port.
 */
static void tap_test__restore(struct tap_test *t)
{
	const evtchn_port_t port = 1000; /* below xl's default limit, 1023 */
	xc_evtchn_status_t st = { .dom = t->dom, .port = port };
	xenevtchn_port_or_error_t lp;
	int rc, err;

	rc = xc_evtchn_restore_unbound(t->xch, t->dom, port, 0);
	check(t, rc == 0, "restore: port %u made in dom %u: rc=%d", port,
	      t->dom, rc);
	rc = xc_evtchn_status(t->xch, &st);
	check(t,
	      rc == 0 && st.status == EVTCHNSTAT_unbound &&
		      st.u.unbound.dom == 0,
	      "restore: port %u is unbound to dom0 (status %u)", port,
	      st.status);
	rc = xc_evtchn_restore_unbound(t->xch, t->dom, port, 0);
	err = errno;
	check(t, rc == -1 && err == EBUSY,
	      "restore: the same port again refused (%s)",
	      rc ? strerror(err) : "no error");
	lp = xenevtchn_bind_interdomain(t->xce, t->dom, port);
	st = (xc_evtchn_status_t){ .dom = t->dom, .port = port };
	rc = xc_evtchn_status(t->xch, &st);
	check(t,
	      lp > 0 && rc == 0 && st.status == EVTCHNSTAT_interdomain &&
		      st.u.interdomain.dom == 0 &&
		      st.u.interdomain.port == (evtchn_port_t)lp,
	      "restore: a dom0 backend binds it (dom0 port %d)", (int)lp);
	if (lp > 0)
		xenevtchn_unbind(t->xce, (evtchn_port_t)lp);
	rc = xc_evtchn_restore_unbound(t->xch, t->dom, 0, 0);
	err = errno;
	check(t, rc == -1 && err == EINVAL, "restore: port 0 refused (%s)",
	      rc ? strerror(err) : "no error");
}

int main(int argc, char **argv)
{
	struct tap_test t = { 0 };
	xenevtchn_port_or_error_t vp;

	if (argc != 4) {
		fprintf(stderr, "usage: %s DOMID PORT CONSOLE_LOG\n", argv[0]);
		return 2;
	}
	t.dom = (uint32_t)strtoul(argv[1], NULL, 0);
	t.port = (evtchn_port_t)strtoul(argv[2], NULL, 0);
	t.log = argv[3];

	t.xch = xc_interface_open(NULL, NULL, 0);
	if (!t.xch) {
		fprintf(stderr, "evtchn-tap-test: xc_interface_open: %s\n",
			strerror(errno));
		return 2;
	}
	t.xce = xenevtchn_open(NULL, 0);
	if (!t.xce) {
		fprintf(stderr, "evtchn-tap-test: xenevtchn_open: %s\n",
			strerror(errno));
		xc_interface_close(t.xch);
		return 2;
	}
	vp = xenevtchn_bind_virq(t.xce, VIRQ_EVTCHN_TAP);
	check(&t, vp > 0, "bind VIRQ_EVTCHN_TAP in dom0: port %d", (int)vp);
	if (vp > 0) {
		t.virq_port = (evtchn_port_t)vp;
		tap_test__run(&t);
	}
	tap_test__restore(&t);

	xenevtchn_close(t.xce);
	xc_interface_close(t.xch);
	return t.failed ? 1 : 0;
}
