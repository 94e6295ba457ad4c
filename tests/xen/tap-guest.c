/*
 * Runs inside the unprivileged PV domU (static, from its initramfs): issues
 * XEN_DOMCTL_evtchn_tap through /dev/xen/privcmd as the guest itself, for
 * its own domain and for dom0, and prints what Xen answered, one line each:
 *
 *   GUEST-HYPERCALL xen_version rc=0x40011 errno=0   (the path reaches Xen)
 *   GUEST-DOMCTL dom=D op=OP rc=RC errno=E
 *
 * dom0's test (dom0-tap.sh) requires EPERM for every line naming an
 * existing domain: the guest can neither see nor change a tap.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define __XEN_TOOLS__ 1
#include <xen/domctl.h>
#include <xen/sys/privcmd.h>
#include <xen/version.h>
#include <xen/xen.h>

static int guest__domctl(int fd, struct xen_domctl *op)
{
	privcmd_hypercall_t call = {
		.op = __HYPERVISOR_domctl,
		.arg = { (unsigned long)op },
	};

	return ioctl(fd, IOCTL_PRIVCMD_HYPERCALL, &call);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		uint32_t op;
	} ops[] = {
		{ "query", XEN_DOMCTL_EVTCHN_TAP_query },
		{ "untap", XEN_DOMCTL_EVTCHN_TAP_untap },
		{ "release", XEN_DOMCTL_EVTCHN_TAP_release },
		{ "tap", XEN_DOMCTL_EVTCHN_TAP_tap },
	};
	/* Hypercall arguments must stay mapped while Xen copies them. */
	static struct xen_domctl op __attribute__((aligned(4096)));
	uint32_t doms[] = { 0, 0 };
	int fd;

	doms[1] = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 1;
	fd = open("/dev/xen/privcmd", O_RDWR);
	if (fd < 0) {
		printf("GUEST-DOMCTL open /dev/xen/privcmd: %s\n",
		       strerror(errno));
		return 1;
	}
	mlock(&op, sizeof(op));

	/* A hypercall any guest may make: proves the path reaches Xen. */
	{
		privcmd_hypercall_t call = {
			.op = __HYPERVISOR_xen_version,
			.arg = { XENVER_version, 0 },
		};
		int rc = ioctl(fd, IOCTL_PRIVCMD_HYPERCALL, &call);

		printf("GUEST-HYPERCALL xen_version rc=%#x errno=%d\n",
		       (unsigned int)rc, rc < 0 ? errno : 0);
	}

	for (unsigned int d = 0; d < 2; d++) {
		for (unsigned int i = 0; i < sizeof(ops) / sizeof(ops[0]);
		     i++) {
			int rc, err;

			memset(&op, 0, sizeof(op));
			op.cmd = XEN_DOMCTL_evtchn_tap;
			op.interface_version = XEN_DOMCTL_INTERFACE_VERSION;
			op.domain = (domid_t)doms[d];
			op.u.evtchn_tap.op = ops[i].op;
			op.u.evtchn_tap.port = XEN_DOMCTL_EVTCHN_TAP_ALL_PORTS;
			rc = guest__domctl(fd, &op);
			err = rc < 0 ? errno : 0;
			printf("GUEST-DOMCTL dom=%u op=%s rc=%d errno=%d\n",
			       doms[d], ops[i].name, rc, err);
		}
	}
	close(fd);
	return 0;
}
