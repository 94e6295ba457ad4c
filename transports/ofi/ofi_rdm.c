// SPDX-License-Identifier: MIT
/*
 * libfabric transport, FI_EP_RDM endpoints (shm, efa, "tcp;ofi_rxm",
 * "verbs;ofi_rxm": ofi_prov__rdm): reliable but unconnected, so there is
 * no fi_listen/fi_connect and no event queue. What replaces them:
 *
 * - A bootstrap TCP connection on the --listen/--peer address: the
 *   secondary listens with a plain socket, the primary connects (retrying
 *   until connect_timeout_ms, like the MSG connect). The primary sends its
 *   hello first (struct ofi_hello: magic, version, window, provider, the
 *   endpoint's name from fi_getname); the secondary checks it before it
 *   answers with its own, so a peer that is not a Kemari RDM peer (an
 *   FI_EP_MSG primary, anything else) learns nothing and is refused with
 *   one line while the listener keeps listening. Each side inserts the
 *   other's name into its address vector (FI_AV_TABLE) and addresses every
 *   send and write to that fi_addr_t.
 * - The bootstrap socket stays open for the connection's life: it is the
 *   liveness and shutdown signal (an RDM write into a dead peer may just
 *   "succeed", shm's does). Where MSG reads FI_SHUTDOWN from its event
 *   queue, RDM reads the socket (non-blocking, at most once a
 *   millisecond): end of file or an error is "closed by the peer". The
 *   kernel closes it when the peer process dies, even by SIGKILL. close()
 *   closes it after the usual drain of sent messages.
 * - Endpoints with IPv4 names (the rxm layers) are bound to the local
 *   address of the bootstrap connection, i.e. the interface that reaches
 *   the peer; the others (shm, efa) name themselves.
 *
 * Nothing else differs: the same queues, buffers, credits, receive region
 * advertisement (only at reg_dst, after the engine's handshake) and data
 * path (ofi_data.c). shm promises only FI_ORDER_SAS on transmit, so its
 * writes go out FI_DELIVERY_COMPLETE and flush waits for them (ofi__attrs).
 * An RDM endpoint takes messages from anyone who knows its name, and a
 * provider without FI_MR_PROV_KEY takes writes from anyone who also knows
 * the key: the receive region's key is random here (ofi_rdm__dst_key).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>

#include "ctrl.h"
#include "kemari/kemari.h"
#include "ofi.h"

#define OFI_HELLO_MS 10000	/* an accepted peer says hello within */
#define OFI_ALIVE_NS 1000000ULL /* look at the bootstrap socket this often */
#define OFI_YIELD_NS 200000	/* cq_poll: yield this long, then nap */
#define OFI_NAP_NS 50000

/* --- the bootstrap socket ------------------------------------------------ */

/*
 * Wait for fd to be ready for events until deadline (UINT64_MAX: no
 * limit; one look even when it has passed): 0, -ETIMEDOUT or -errno.
 */
static int rdm__poll(int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		uint64_t now = kemari_now_ns();
		int ms = -1, r;

		if (deadline != UINT64_MAX)
			ms = now >= deadline
				     ? 0
				     : (int)KEMARI_MIN(
					       (deadline - now) / 1000000 + 1,
					       (uint64_t)INT32_MAX);
		r = poll(&p, 1, ms);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r == 0 && ms == 0)
			return -ETIMEDOUT;
	}
}

/* All len bytes, or -ETIMEDOUT, -ECONNRESET (end of file), -errno. */
static int rdm__read(int fd, void *buf, size_t len, uint64_t deadline)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t r = recv(fd, p, len, MSG_DONTWAIT);

		if (r > 0) {
			p += r;
			len -= (size_t)r;
			continue;
		}
		if (r == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		r = rdm__poll(fd, POLLIN, deadline);
		if (r)
			return (int)r;
	}
	return 0;
}

static int rdm__write(int fd, const void *buf, size_t len, uint64_t deadline)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t r = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (r > 0) {
			p += r;
			len -= (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		r = rdm__poll(fd, POLLOUT, deadline);
		if (r)
			return (int)r;
	}
	return 0;
}

static void rdm__name(char *out, size_t len, const struct sockaddr_in *sa)
{
	char ip[INET_ADDRSTRLEN] = "?";

	inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof(ip));
	snprintf(out, len, "%s:%u", ip, ntohs(sa->sin_port));
}

/* --- endpoint and hellos ------------------------------------------------- */

/*
 * This connection's endpoint, from the provider's entry tmpl: with IPv4
 * names bound to the bootstrap socket's local address (the interface that
 * reaches the peer, any port), otherwise named by the provider.
 */
static int rdm__endpoint(struct ofi_xport *t, const struct fi_info *tmpl)
{
	struct fi_info *info = NULL, *list = NULL, *h;
	struct sockaddr_in src;
	socklen_t slen = sizeof(src);
	char ip[INET_ADDRSTRLEN];
	int ret;

	if (tmpl->addr_format != FI_SOCKADDR_IN) {
		info = fi_dupinfo(tmpl);
		goto open;
	}
	if (getsockname(t->boot_fd, (struct sockaddr *)&src, &slen) ||
	    !inet_ntop(AF_INET, &src.sin_addr, ip, sizeof(ip)))
		return kemari_err(-errno, "ofi: getsockname: %s",
				  strerror(errno));
	h = ofi__hints(tmpl->fabric_attr->prov_name, true);
	if (!h)
		return -ENOMEM;
	h->addr_format = FI_SOCKADDR_IN;
	ret = fi_getinfo(OFI_API, ip, "0", FI_SOURCE, h, &list);
	fi_freeinfo(h);
	for (struct fi_info *i = ret ? NULL : list; i && !info; i = i->next)
		if (i->ep_attr->type == FI_EP_RDM &&
		    !strcmp(i->fabric_attr->prov_name,
			    tmpl->fabric_attr->prov_name) &&
		    !(info = fi_dupinfo(i))) {
			fi_freeinfo(list);
			return -ENOMEM;
		}
	fi_freeinfo(list);
	if (!info)
		return kemari_err(ret ? ofi__errno(ret) : -ENOENT,
				  "libfabric provider %s cannot open an "
				  "FI_EP_RDM endpoint at %s: %s",
				  t->prov, ip,
				  ofi__strerror(ret ? ret : -FI_ENODATA));
open:
	if (!info)
		return -ENOMEM;
	ret = ofi__fabric_open(&t->fab, info);
	if (ret) {
		fi_freeinfo(info);
		return ret;
	}
	return ofi__conn_setup(t, info);
}

/* Our hello: the endpoint's name, our window and provider. */
static int rdm__send_hello(struct ofi_xport *t, uint64_t deadline)
{
	struct ofi_hello h = { .magic = OFI_HELLO_MAGIC,
			       .version = OFI_HELLO_VERSION,
			       .window = t->window };
	uint8_t wire[sizeof(h)];
	size_t alen = sizeof(h.addr);
	int ret = fi_getname(&t->ep->fid, h.addr, &alen);

	if (ret || alen == 0 || alen > OFI_HELLO_ADDR_MAX)
		return kemari_err(ret ? ofi__errno(ret) : -ENAMETOOLONG,
				  "libfabric provider %s: fi_getname: %s",
				  t->prov,
				  ret ? ofi__strerror(ret)
				      : "a name Kemari cannot carry");
	h.addrlen = (uint16_t)alen;
	snprintf(h.prov, sizeof(h.prov), "%s", t->prov);
	memcpy(wire, &h, OFI_HELLO_HDR);
	memcpy(wire + OFI_HELLO_HDR, h.addr, alen);
	ret = rdm__write(t->boot_fd, wire, ofi_ctrl__hello_len(h.addrlen),
			 deadline);
	return ret ? kemari_err(ret, "sending the hello to %s: %s", t->addr,
				strerror(-ret))
		   : 0;
}

/*
 * The peer's hello: -EPROTO with one line when it is not a Kemari RDM
 * peer's (or not for our provider); -ETIMEDOUT, -ECONNRESET (it closed
 * first) or -errno with one line otherwise.
 */
static int rdm__recv_hello(struct ofi_xport *t, struct ofi_hello *h,
			   uint64_t deadline)
{
	uint8_t wire[sizeof(*h)];
	struct ofi_hello hdr;
	int err;

	/* The magic first: an FI_EP_MSG peer may send less than a hello. */
	err = rdm__read(t->boot_fd, wire, sizeof(hdr.magic), deadline);
	if (!err) {
		memcpy(&hdr.magic, wire, sizeof(hdr.magic));
		if (hdr.magic != OFI_HELLO_MAGIC)
			goto not_rdm;
		err = rdm__read(t->boot_fd, wire + sizeof(hdr.magic),
				OFI_HELLO_HDR - sizeof(hdr.magic), deadline);
	}
	if (!err) {
		memcpy(&hdr, wire, OFI_HELLO_HDR);
		if (hdr.addrlen == 0 || hdr.addrlen > OFI_HELLO_ADDR_MAX)
			goto not_rdm;
		err = rdm__read(t->boot_fd, wire + OFI_HELLO_HDR, hdr.addrlen,
				deadline);
	}
	if (err == -ETIMEDOUT)
		return kemari_err(err, "no Kemari RDM hello in time");
	if (err == -ECONNRESET)
		return kemari_err(err,
				  "closed the connection before its hello");
	if (err)
		return kemari_err(err, "reading the hello: %s", strerror(-err));
	if (ofi_ctrl__hello(wire, ofi_ctrl__hello_len(hdr.addrlen), h))
		goto not_rdm;
	if (strcmp(h->prov, t->prov))
		return kemari_err(-EPROTO,
				  "the peer uses libfabric provider '%s', this "
				  "side '%s': use the same --provider on both "
				  "sides",
				  h->prov, t->prov);
	return 0;
not_rdm:
	return kemari_err(-EPROTO,
			  "not a Kemari RDM peer (an FI_EP_MSG --provider, or "
			  "not Kemari): use the same --provider on both sides");
}

/* The peer into the address vector; its window into our credits. */
static int rdm__add_peer(struct ofi_xport *t, const struct ofi_hello *h)
{
	int ret = fi_av_insert(t->av, h->addr, 1, &t->peer, 0, NULL);

	if (ret != 1)
		return kemari_err(ret < 0 ? ofi__errno(ret) : -EINVAL,
				  "libfabric provider %s cannot address %s "
				  "(fi_av_insert: %s)",
				  t->prov, t->addr,
				  ret < 0 ? ofi__strerror(ret) : "refused");
	xp_credit__granted(&t->cr, h->window);
	t->boot_check_ns = kemari_now_ns();
	return 0;
}

/*
 * shm keeps each endpoint's region in a file of /dev/shm named after the
 * endpoint ("PID:N:M", 16 MiB of tmpfs). libfabric unlinks it when the
 * endpoint closes, which a process killed by SIGKILL (the very failure
 * this project exists for) never does: every such death would leave one
 * behind. Once the peer's LINK has arrived, the peer has mapped our
 * region (shm maps a peer once, when it first sends to it, and never
 * opens it by name again), so nothing needs the name any more: unlink it
 * now, and the kernel frees the memory with the last mapping, however
 * the processes end. Only a name that is ours (our pid first) is touched.
 */
static void rdm__unlink_region(struct ofi_xport *t)
{
	char name[OFI_HELLO_ADDR_MAX + 1], own[32];
	size_t alen = OFI_HELLO_ADDR_MAX;
	const char *n = name, *p;

	if (strcmp(t->prov, "shm"))
		return;
	if (fi_getname(&t->ep->fid, name, &alen) || alen == 0)
		return;
	name[alen < sizeof(name) ? alen : sizeof(name) - 1] = '\0';
	p = strstr(n, "://");
	if (p)
		n = p + 3;
	snprintf(own, sizeof(own), "%d:", (int)getpid());
	if (strncmp(n, own, strlen(own)) || strchr(n, '/'))
		return;
	if (shm_unlink(n) && errno != ENOENT)
		kemari_debug("ofi: shm_unlink %s: %s", n, strerror(errno));
}

/* --- waiting (cq_poll) -------------------------------------------------- */

/*
 * One completion of cq within ms: fi_cq_sread, or where the provider's
 * wait cannot be trusted (cq_poll: shm 1.17's sread ignores its timeout;
 * providers without CQ wait objects) fi_cq_read polled: yielding for a
 * short while (a reply to a message just sent comes within it), then in
 * naps of OFI_NAP_NS.
 */
ssize_t ofi__cq_sread(struct ofi_xport *t, struct fid_cq *cq,
		      struct fi_cq_data_entry *c, fi_addr_t *src, int ms)
{
	uint64_t t0, deadline;

	if (!t->cq_poll)
		return src ? fi_cq_sreadfrom(cq, c, 1, src, NULL, ms)
			   : fi_cq_sread(cq, c, 1, NULL, ms);
	t0 = kemari_now_ns();
	deadline = t0 + (uint64_t)ms * 1000000ULL;
	for (;;) {
		ssize_t r = src ? fi_cq_readfrom(cq, c, 1, src)
				: fi_cq_read(cq, c, 1);
		uint64_t now;

		if (r != -FI_EAGAIN)
			return r;
		now = kemari_now_ns();
		if (now >= deadline)
			return -FI_EAGAIN;
		if (now - t0 < OFI_YIELD_NS) {
			sched_yield();
		} else {
			struct timespec nap = { 0, OFI_NAP_NS };

			nanosleep(&nap, NULL);
		}
	}
}

/* --- ops ----------------------------------------------------------------- */

int ofi_rdm__listen(struct kemari_xport **out, const char *addr,
		    const struct kemari_xport_opts *opts)
{
	struct fi_info *list, *cand[1];
	struct sockaddr_in sa;
	struct ofi_xport *t;
	char host[64], port[8];
	size_t n;
	int err, fd, one = 1;

	err = ofi__split_addr(addr, host, sizeof(host), port, sizeof(port));
	err = err ?: kemari_parse_sockaddr(addr, &sa);
	err = err
		      ?: ofi__candidates(&list, cand, 1, &n, opts->provider,
					 host, port, true);
	if (err)
		return err;
	t = ofi__alloc(addr, cand[0]);
	if (t)
		t->info = fi_dupinfo(cand[0]);
	fi_freeinfo(list);
	if (!t || !t->info) {
		if (t)
			ofi__free(t);
		return -ENOMEM;
	}
	t->listener = true;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = kemari_err(-errno, "socket: %s", strerror(errno));
		goto err_free;
	}
	t->boot_fd = fd;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 16)) {
		err = errno == EADDRINUSE
			      ? kemari_err(
					-EADDRINUSE,
					"cannot listen on %s: address "
					"already in use (another secondary?): "
					"stop it or choose another --listen "
					"port",
					addr)
			      : kemari_err(-errno, "cannot listen on %s: %s",
					   addr, strerror(errno));
		goto err_free;
	}
	kemari_info("ofi: listening on %s with libfabric provider %s "
		    "(FI_EP_RDM)",
		    addr, t->prov);
	*out = &t->x;
	return 0;
err_free:
	ofi__free(t);
	return err;
}

int ofi_rdm__accept(struct ofi_xport *l, struct kemari_xport **conn,
		    int timeout_ms)
{
	uint64_t deadline = kemari_now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	for (;;) {
		struct sockaddr_in sa;
		socklen_t slen = sizeof(sa);
		struct ofi_xport *t;
		struct ofi_hello h;
		char name[64];
		int fd, err, one = 1;

		err = rdm__poll(l->boot_fd, POLLIN,
				timeout_ms < 0 ? UINT64_MAX : deadline);
		if (err)
			return err;
		fd = accept4(l->boot_fd, (struct sockaddr *)&sa, &slen,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR ||
			    errno == ECONNABORTED)
				continue;
			return kemari_err(-errno, "accept on %s: %s", l->addr,
					  strerror(errno));
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		rdm__name(name, sizeof(name), &sa);
		t = ofi__alloc(name, l->info);
		if (!t) {
			close(fd);
			return -ENOMEM;
		}
		t->boot_fd = fd;
		/* Theirs first: nothing of ours goes to a stranger. */
		err = rdm__recv_hello(
			t, &h, kemari_now_ns() + OFI_HELLO_MS * 1000000ULL);
		err = err ?: rdm__endpoint(t, l->info);
		/* The peer known before it can send: its sends carry it. */
		err = err ?: rdm__add_peer(t, &h);
		err = err
			      ?: rdm__send_hello(t, kemari_now_ns() +
							    OFI_HELLO_MS *
								    1000000ULL);
		err = err ?: ofi__link(t, OFI_HELLO_MS);
		if (!err) {
			rdm__unlink_region(t);
			*conn = &t->x;
			return 0;
		}
		ofi__free(t);
		/* Out of memory (or memlock) will not get better. */
		if (err == -ENOMEM)
			return err;
		kemari_warn("ofi: refusing a connection from %s: %s", name,
			    kemari_last_error(err));
		kemari_err_clear();
	}
}

/* A TCP connection to sa before deadline: the fd, or -errno. */
static int rdm__dial(const struct sockaddr_in *sa, uint64_t deadline)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err = 0, one = 1;
	socklen_t elen = sizeof(err);

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) &&
	    errno != EINPROGRESS)
		err = -errno;
	if (!err)
		err = rdm__poll(fd, POLLOUT, deadline);
	if (!err && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen))
		err = errno;
	if (err) {
		close(fd);
		return err < 0 ? err : -err;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int ofi_rdm__connect(struct kemari_xport **out, const char *addr,
		     const struct kemari_xport_opts *opts)
{
	uint64_t deadline = kemari_now_ns() +
			    (uint64_t)opts->connect_timeout_ms * 1000000ULL;
	struct fi_info *list, *cand[1];
	struct sockaddr_in sa;
	char host[64], port[8], why[256];
	size_t n;
	int err;

	err = ofi__split_addr(addr, host, sizeof(host), port, sizeof(port));
	err = err ?: kemari_parse_sockaddr(addr, &sa);
	err = err
		      ?: ofi__candidates(&list, cand, 1, &n, opts->provider,
					 host, port, false);
	if (err)
		return err;
	/* The secondary may still be starting: retry until the deadline. */
	for (;;) {
		uint64_t now = kemari_now_ns();
		/* One that accepted answers at once, unless it is busy. */
		uint64_t wait = KEMARI_MAX(deadline, now + 1000000000ULL);
		struct ofi_xport *t;
		struct ofi_hello h;
		int fd = rdm__dial(&sa, KEMARI_MAX(deadline, now + 1000000ULL));

		if (fd < 0) {
			err = kemari_err(fd, "%s", strerror(-fd));
			goto retry;
		}
		t = ofi__alloc(addr, cand[0]);
		if (!t) {
			close(fd);
			err = -ENOMEM;
			break;
		}
		t->boot_fd = fd;
		err = rdm__endpoint(t, cand[0]);
		if (err) {
			/* Local resources: retrying will not help. */
			ofi__free(t);
			break;
		}
		err = rdm__send_hello(t, wait);
		err = err ?: rdm__recv_hello(t, &h, wait);
		err = err ?: rdm__add_peer(t, &h);
		err = err ?: ofi__link(t, OFI_HELLO_MS);
		if (!err) {
			rdm__unlink_region(t);
			kemari_debug("ofi: connected to %s with libfabric "
				     "provider %s (FI_EP_RDM)",
				     addr, t->prov);
			*out = &t->x;
			break;
		}
		ofi__free(t);
		/*
		 * Closed before its hello: the listener refused ours (an
		 * FI_EP_MSG secondary's provider, or a Kemari RDM secondary
		 * with another provider, which says so in its log).
		 */
		if (err == -ECONNRESET)
			err = kemari_err_override(
				-EPROTO,
				"it closed the connection without a Kemari RDM "
				"hello: not a Kemari RDM peer (an FI_EP_MSG "
				"--provider, or another RDM one): use the same "
				"--provider on both sides");
	retry:
		if (err == -EPROTO) {
			snprintf(why, sizeof(why), "%s",
				 kemari_last_error(err));
			err = kemari_err_override(
				err,
				"cannot connect to the secondary at %s with "
				"libfabric provider %s: %s",
				addr, cand[0]->fabric_attr->prov_name, why);
			break;
		}
		if (kemari_now_ns() >= deadline) {
			snprintf(why, sizeof(why), "%s",
				 kemari_last_error(err));
			err = kemari_err_override(
				err,
				"cannot reach the secondary at %s: %s (libfabric "
				"provider %s) (start it first, or check --peer)",
				addr, why, cand[0]->fabric_attr->prov_name);
			break;
		}
		kemari_err_clear();
		usleep(50000);
	}
	fi_freeinfo(list);
	return err;
}

int ofi_rdm__alive(struct ofi_xport *t)
{
	uint64_t now;
	char buf[64];

	if (t->boot_fd < 0 || t->fail.dead)
		return ofi__check(t);
	now = kemari_now_ns();
	if (now - t->boot_check_ns < OFI_ALIVE_NS)
		return 0;
	t->boot_check_ns = now;
	/* Nothing is sent after the hello: whatever comes is dropped. */
	for (int i = 0; i < 16; i++) {
		ssize_t r = recv(t->boot_fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (r > 0)
			continue;
		if (r == 0)
			return ofi__lost(t, "closed by the peer");
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return ofi__lost(t, strerror(errno));
	}
	return 0;
}

bool ofi_rdm__peer_gone(struct ofi_xport *t, int ms)
{
	uint64_t deadline = kemari_now_ns() + (uint64_t)ms * 1000000ULL;
	char buf[64];

	if (t->boot_fd < 0)
		return false;
	for (;;) {
		ssize_t r = recv(t->boot_fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN &&
				errno != EWOULDBLOCK))
			return true;
		if (r > 0 || (r < 0 && errno == EINTR))
			continue;
		if (rdm__poll(t->boot_fd, POLLIN, deadline))
			return false;
	}
}

uint64_t ofi_rdm__dst_key(const struct ofi_xport *t)
{
	size_t bytes = t->info->domain_attr->mr_key_size;
	uint64_t key = 0;

	if (getrandom(&key, sizeof(key), 0) != sizeof(key))
		key = kemari_now_ns() * 0x9e3779b97f4a7c15ULL;
	if (bytes && bytes < sizeof(key))
		key &= (1ULL << (8 * bytes)) - 1;
	return key ? key : OFI_KEY_DST;
}

uint64_t ofi_rdm__eager(const char *prov)
{
	const char *env = getenv("FI_OFI_RXM_BUFFER_SIZE");
	uint64_t size = 16384; /* rxm's default buffer size */

	if (!strstr(prov, "ofi_rxm"))
		return 0;
	if (env && *env)
		size = strtoull(env, NULL, 0);
	/* Less rxm's own header (well under 256 bytes). */
	return size > 256 ? size - 256 : 0;
}
