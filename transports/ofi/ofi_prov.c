// SPDX-License-Identifier: MIT
/*
 * The libfabric transport's choice of provider: which fi_info entries can
 * serve a connection at an address, best first, and the rules behind it
 * (the default order; how a domain's mr_mode decides descriptors, addresses
 * and keys), the last checked without a provider by tests/unit/test_ofi.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

#include "kemari/kemari.h"
#include "ofi.h"

/* --- the rules (pure: tests/unit/test_ofi.c) ------------------------------ */

struct ofi_mr_use ofi_mr__use(uint64_t mr_mode)
{
	/* FI_MR_BASIC (API < 1.5 style) means all three of these. */
	bool basic = mr_mode & FI_MR_BASIC;
	struct ofi_mr_use u = {
		.local = basic || (mr_mode & FI_MR_LOCAL),
		.virt_addr = basic || (mr_mode & FI_MR_VIRT_ADDR),
		.prov_key = basic || (mr_mode & FI_MR_PROV_KEY),
		.endpoint = mr_mode & FI_MR_ENDPOINT,
	};

	return u;
}

uint64_t ofi_mr__base(const struct ofi_mr_use *u, const void *va)
{
	return u->virt_addr ? (uint64_t)(uintptr_t)va : 0;
}

uint64_t ofi_mr__requested_key(const struct ofi_mr_use *u, uint64_t ours)
{
	return u->prov_key ? 0 : ours;
}

bool ofi_prov__rdm(const char *name)
{
	return name && (!strcmp(name, "shm") || !strcmp(name, "efa") ||
			strchr(name, ';'));
}

int ofi_prov__rank(const char *name, bool loopback)
{
	static const char *const order[] = { "verbs", "tcp", "sockets" };

	/* RDM providers only on request (--provider): host-local or not
	 * connected, so never a default. */
	if (!name || ofi_prov__rdm(name) || !strncmp(name, "ofi_", 4) ||
	    !strcmp(name, "udp") || (loopback && !strcmp(name, "verbs")))
		return -1;
	for (size_t i = 0; i < KEMARI_ARRAY_SIZE(order); i++)
		if (!strcmp(name, order[i]))
			return (int)i;
	return (int)KEMARI_ARRAY_SIZE(order);
}

bool ofi_addr__loopback(uint32_t ip)
{
	return (ip >> 24) == 127;
}

/* --- errors ------------------------------------------------------------- */

const char *ofi__strerror(ssize_t ret)
{
	return fi_strerror((int)(ret < 0 ? -ret : ret));
}

/* libfabric returns -FI_E*; those below 256 are errnos, the rest are not. */
int ofi__errno(ssize_t ret)
{
	int e = (int)(ret < 0 ? -ret : ret);

	if (e == FI_ETRUNC)
		return -EMSGSIZE;
	return e > 0 && e < 256 ? -e : -EIO;
}

/* --- provider choice ---------------------------------------------------- */

/*
 * libfabric sizes a layered provider's queues for FI_UNIVERSE_SIZE peers,
 * 256 by default: rxm opens its verbs completion queue with (rx + tx) x 256
 * entries, more than soft-RoCE's rxe allows, and the primary's endpoint
 * then failed at fi_enable ("Unable to create verbs CQ", check-rdma). A
 * Kemari endpoint has one peer, so ask for a universe of 4 unless the user
 * chose one. libfabric reads it once, when it initialises: before the
 * first fi_getinfo, which every path reaches through ofi__hints.
 */
static void ofi__universe(void)
{
	setenv("FI_UNIVERSE_SIZE", "4", 0);
}

struct fi_info *ofi__hints(const char *prov, bool rdm)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct fi_info *h;

	pthread_once(&once, ofi__universe);
	h = fi_allocinfo();

	if (!h)
		return NULL;
	h->caps = FI_MSG | FI_RMA;
	/*
	 * Modes we cope with: every operation gets its own fi_context2, and
	 * we never send remote CQ data, so FI_RX_CQ_DATA (verbs) costs
	 * nothing.
	 */
	h->mode = FI_CONTEXT | FI_CONTEXT2 | FI_RX_CQ_DATA;
	/*
	 * MSG: IPv4, where fi_listen and fi_connect take --listen/--peer.
	 * RDM: whatever the provider names its endpoints with (shm: a
	 * string, efa: its own): the names travel in the hello.
	 */
	h->addr_format = rdm ? FI_FORMAT_UNSPEC : FI_SOCKADDR_IN;
	h->ep_attr->type = rdm ? FI_EP_RDM : FI_EP_MSG;
	if (rdm) {
		h->domain_attr->av_type = FI_AV_TABLE;
		/*
		 * Who sent each message: an RDM endpoint takes messages from
		 * anyone who knows its name, and only the peer's count
		 * (ofi__rx_done drops the rest). shm, rxm and efa have it.
		 */
		h->caps |= FI_SOURCE;
		/*
		 * Messages in order (MSG endpoints are ordered streams): an
		 * RDM layer keeps it only when asked (rxm delivered a 64 KiB
		 * rendezvous message after the small ones sent behind it).
		 */
		h->tx_attr->msg_order = FI_ORDER_SAS;
		h->rx_attr->msg_order = FI_ORDER_SAS;
	}
	h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR |
				  FI_MR_ALLOCATED | FI_MR_PROV_KEY |
				  FI_MR_ENDPOINT;
	if (prov) {
		h->fabric_attr->prov_name = strdup(prov);
		if (!h->fabric_attr->prov_name) {
			fi_freeinfo(h);
			return NULL;
		}
	}
	return h;
}

/* Comma-separated names of the providers in list (each once). */
static void ofi__names(const struct fi_info *list, char *out, size_t len)
{
	size_t n = 0;

	out[0] = 0;
	for (const struct fi_info *i = list; i; i = i->next) {
		const char *nm = i->fabric_attr->prov_name;
		bool seen = false;

		for (const struct fi_info *j = list; j != i; j = j->next)
			seen |= !strcmp(j->fabric_attr->prov_name, nm);
		if (!seen && n < len)
			n += (size_t)snprintf(out + n, len - n, "%s%s",
					      n ? ", " : "", nm);
	}
}

static int ofi__no_provider(const char *prov, const char *host,
			    const char *port, uint64_t flags, bool rdm)
{
	struct fi_info *h = ofi__hints(NULL, rdm), *all = NULL;
	char have[256] = "none";
	int ret;

	if (!h)
		return -ENOMEM;
	ret = rdm ? fi_getinfo(OFI_API, NULL, NULL, 0, h, &all)
		  : fi_getinfo(OFI_API, host, port, flags, h, &all);
	fi_freeinfo(h);
	if (!ret && all)
		ofi__names(all, have, sizeof(have));
	fi_freeinfo(all);
	if (rdm)
		return kemari_err(
			-ENOENT,
			"libfabric provider '%s' not available for FI_EP_RDM with "
			"RMA (have: %s): use --provider=NAME",
			prov, have);
	if (prov)
		return kemari_err(
			-ENOENT,
			"libfabric provider '%s' not available for FI_EP_MSG with "
			"RMA at %s (have: %s): use --provider=NAME",
			prov, host, have);
	return kemari_err(
		-ENOENT,
		"no libfabric provider can do FI_EP_MSG with RMA at %s (have: %s): "
		"check the address, or use --transport=tcp",
		host, have);
}

/*
 * Usable fi_info entries for host:port, best first, one per provider:
 * the named provider only, or by ofi_prov__rank (verbs unless loopback,
 * tcp, sockets, others; never shm, udp or RDM layers). *list owns the
 * entries. A provider ofi_prov__rdm names is looked up for FI_EP_RDM,
 * without an address: its endpoints get theirs per connection (ofi_rdm.c).
 */
int ofi__candidates(struct fi_info **list, struct fi_info **cand, size_t max,
		    size_t *n, const char *prov, const char *host,
		    const char *port, bool source)
{
	uint64_t flags = source ? FI_SOURCE : 0;
	bool rdm = ofi_prov__rdm(prov);
	uint32_t type = rdm ? FI_EP_RDM : FI_EP_MSG;
	struct fi_info *h = ofi__hints(prov, rdm);
	struct in_addr a = { 0 };
	bool loopback;
	int ret;

	inet_pton(AF_INET, host, &a);
	loopback = ofi_addr__loopback(ntohl(a.s_addr));
	*n = 0;
	*list = NULL;
	if (prov && !*prov) {
		/* An empty --provider= means the default choice. */
		fi_freeinfo(h);
		prov = NULL;
		h = ofi__hints(NULL, false);
	}
	if (!h)
		return -ENOMEM;
	ret = rdm ? fi_getinfo(OFI_API, NULL, NULL, 0, h, list)
		  : fi_getinfo(OFI_API, host, port, flags, h, list);
	fi_freeinfo(h);
	if (ret == -FI_ENODATA || (!ret && !*list))
		return ofi__no_provider(prov, host, port, flags, rdm);
	if (ret)
		return kemari_err(ofi__errno(ret), "fi_getinfo(%s:%s): %s",
				  host, port, ofi__strerror(ret));
	for (int rank = 0; rank <= 3 && *n < max; rank++) {
		for (struct fi_info *i = *list; i && *n < max; i = i->next) {
			const char *nm = i->fabric_attr->prov_name;
			bool dup = false;

			if (!prov && ofi_prov__rank(nm, loopback) != rank)
				continue;
			if (prov && rank > 0)
				break;
			if (i->ep_attr->type != type ||
			    (i->caps & (FI_MSG | FI_RMA)) != (FI_MSG | FI_RMA))
				continue;
			for (size_t k = 0; k < *n; k++)
				dup |= !strcmp(cand[k]->fabric_attr->prov_name,
					       nm);
			if (!dup)
				cand[(*n)++] = i;
		}
	}
	if (*n == 0) {
		fi_freeinfo(*list);
		*list = NULL;
		return ofi__no_provider(prov, host, port, flags, rdm);
	}
	return 0;
}

int ofi__split_addr(const char *addr, char *host, size_t hlen, char *port,
		    size_t plen)
{
	struct sockaddr_in sa;
	int err = kemari_parse_sockaddr(addr, &sa);

	if (err)
		return err;
	snprintf(host, hlen, "%s", inet_ntoa(sa.sin_addr));
	snprintf(port, plen, "%u", ntohs(sa.sin_port));
	return 0;
}
