// SPDX-License-Identifier: MIT
/*
 * Secondary: keep the last committed epoch and take over when the primary
 * dies.
 *
 * Consistency rule: page runs land in the receive buffers (a RAM-sized
 * shadow), never in the replica. Only when an epoch's COMMIT arrived, and
 * its run list and state agree with it, are its runs copied into the
 * replica (the VM's own RAM, so takeover needs no copy) and the ack sent.
 * An epoch without a commit is simply never applied. Because the copy
 * finishes before the ack, epoch N+1 can never overwrite unapplied data of N.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine_priv.h"
#include "kemari/kemari.h"

#define HANDSHAKE_MS 10000
#define APPLY_CHUNK (8ULL << 20)
/*
 * Before the first commit there is nothing to take over, so silence costs
 * nothing but a restart: be patient with a primary whose heartbeats queue
 * behind gigabytes of initial-sync writes on a slow link.
 */
#define SYNC_SILENCE_MS 30000u

/*
 * What one epoch may buffer here before its COMMIT (the caps are all
 * here). A connection that sends more is dropped, and this side never
 * takes over from it: no peer can make the secondary grow without end.
 *  - RUNS: the pages of an epoch's runs together at most the guest's RAM
 *    (e->npages). A primary lists an epoch's dirty set, each page once,
 *    or at the initial sync one run of all RAM; a run has at least one
 *    page, so the list is at most npages runs (16 bytes each).
 *  - CPU_STATE, DEV_STATE: SECONDARY_STATE_MAX each. A blob is one
 *    message (a later one replaces it), so a transport's message size
 *    (KEMARI_MSG_MAX, 256 KiB; ofi 64 KiB) bounds it today and the
 *    primary refuses to capture more; the cap holds if that changes. The
 *    most hv/kvm/state.c writes is about 450 KiB (8 vCPUs, each with
 *    an 11 KiB AMX XSAVE area, 256 CPUID leaves and 1920 MSRs); a 2-vCPU
 *    Linux guest's is about 24 KiB (XSAVE 4 KiB, ~80 leaves, ~100 MSRs,
 *    LAPIC 1 KiB per vCPU; PICs, IOAPIC, PIT and clock 2 KiB), and its
 *    devices' (UART, i8042, RTC, PCI, two virtio) a few KiB.
 *  - VERIFY: one hash per page of RAM (verify__stash).
 */
#define SECONDARY_STATE_MAX (1u << 20)
_Static_assert(KEMARI_MSG_MAX <= SECONDARY_STATE_MAX,
	       "a primary's state blob (one message) must fit the cap");

static int secondary__send(struct kemari_engine *e, uint16_t type,
			   uint64_t epoch, const void *p, uint32_t len)
{
	int err = kemari_xport__send(e->conn, type, epoch, p, len);

	if (!err)
		e->last_tx_ns = kemari_now_ns();
	return err;
}

/* Tell the primary why; the one line in our log is the returned error's. */
static int secondary__refuse(struct kemari_engine *e, int err, const char *why)
{
	secondary__send(e, KEMARI_MSG_REFUSE, 0, why, (uint32_t)strlen(why));
	return kemari_err_override(err, "refusing the primary: %s", why);
}

/*
 * A guest that moves to a TSC more than 250 ppm off (NTP's limit) needs
 * this host's TSC scaling; 0 on either side means time does not depend on
 * it (a freestanding guest, a hypervisor that does not say).
 */
static bool secondary__tsc_differs(const struct kemari_hello *p,
				   const struct kemari_hello *mine)
{
	uint64_t diff = p->tsc_khz > mine->tsc_khz ? p->tsc_khz - mine->tsc_khz
						   : mine->tsc_khz - p->tsc_khz;

	if (!p->tsc_khz || !mine->tsc_khz ||
	    (mine->flags & KEMARI_HELLO_TSC_SCALING))
		return false;
	return diff * 4000 > mine->tsc_khz;
}

/*
 * With a key, the primary must prove it before its HELLO is read (m holds
 * the first message, and the HELLO on return); without one, a primary that
 * offers a proof is refused as well: a key on one side only is a
 * configuration error that both sides name.
 */
static int secondary__authenticate(struct kemari_engine *e,
				   struct kemari_msg *m)
{
	int err;

	if (!e->have_key) {
		if (m->type != KEMARI_MSG_AUTH)
			return 0;
		return secondary__refuse(
			e, -EACCES,
			"the primary authenticates with --auth-key but this secondary has none: give both sides the same --auth-key=FILE");
	}
	if (m->type != KEMARI_MSG_AUTH) {
		/* The path is for our log, not for a peer we do not know. */
		secondary__refuse(
			e, -EACCES,
			"the primary sent no key proof but this secondary requires one: start the primary with the same --auth-key=FILE");
		return kemari_err_override(
			-EACCES,
			"refusing the primary: it sent no key proof but this secondary requires one (--auth-key=%s): start the primary with the same --auth-key=FILE",
			e->key.path);
	}
	err = kemari_auth__secondary(e->conn, &e->key, m, HANDSHAKE_MS);
	if (err) {
		char why[512];

		snprintf(why, sizeof(why), "%s", kemari_last_error(err));
		return kemari_err_override(err, "refusing the primary: %s",
					   why);
	}
	err = kemari_xport__recv(e->conn, m, HANDSHAKE_MS);
	if (err)
		return kemari_err(err, "handshake: %s", kemari_last_error(err));
	return 0;
}

/*
 * The shared disk (version 5): the secondary never creates it. It opens
 * the fence record beside it only now, after the primary authenticated
 * (the primary creates both at first use), and accepts the primary only
 * if the disk is there and the record names the disk identity and the
 * generation of its HELLO. Any difference is the refusal's one line (why).
 */
static void secondary__check_disk(struct kemari_engine *e,
				  const struct kemari_hello *h, char *why,
				  size_t n)
{
	static const uint8_t none[sizeof(h->disk_id)];
	const char *disk = e->cfg.hv_cfg.disk_path;
	bool theirs = memcmp(h->disk_id, none, sizeof(none)) != 0;
	struct kemari_fence *f = &e->fence;
	char a[33], b[33];
	int err;

	kemari_fence__close(f);
	if (!e->cfg.fence_path || !theirs) {
		if (theirs || e->cfg.fence_path)
			snprintf(
				why, n,
				"the disk is fenced on %s but not on %s: give both sides the same --disk (and --fence)",
				theirs ? "the primary" : "this secondary",
				theirs ? "this secondary" : "the primary");
		return;
	}
	if (disk && access(disk, F_OK)) {
		snprintf(
			why, n,
			"disk %s does not exist here: a secondary never creates it; give it the primary's shared disk",
			disk);
		return;
	}
	err = kemari_fence__open(f, e->cfg.fence_path, false);
	if (err) {
		snprintf(
			why, n,
			"%s: a secondary never creates it; give it the primary's shared disk and fence",
			kemari_last_error(err));
		kemari_err_clear();
		return;
	}
	kemari_fence__id_str(h->disk_id, a);
	kemari_fence__id_str(f->disk_id, b);
	if (strcmp(a, b))
		snprintf(
			why, n,
			"disk identity %s on the primary but %s here (fence %s): both sides must use the same shared disk",
			a, b, f->path);
	else if (f->gen != h->fence_gen)
		snprintf(
			why, n,
			"fence %s is at generation %llu but the primary holds %llu: another side has claimed the disk since",
			f->path, (unsigned long long)f->gen,
			(unsigned long long)h->fence_gen);
	if (why[0])
		kemari_fence__close(f);
}

/*
 * Then the disk itself (the hypervisor's, defer_disk), opened only now,
 * never created, before any state of this primary is taken: a missing or
 * unusable one refuses this connection (why) and we keep listening.
 */
static void secondary__open_disk(struct kemari_engine *e, char *why, size_t n)
{
	struct kemari_hv *hv = e->hv;
	int err;

	if (!e->cfg.hv_cfg.disk_path || !hv)
		return;
	err = kemari_hv__open_disk(hv);
	if (!err)
		return;
	snprintf(why, n, "%s", kemari_last_error(err));
	kemari_err_clear();
	kemari_fence__close(&e->fence);
}

/* The protocol version that starts a HELLO or an AUTH message, or 0. */
static uint32_t secondary__peer_version(const struct kemari_msg *m)
{
	uint32_t v = 0;

	if ((m->type == KEMARI_MSG_HELLO || m->type == KEMARI_MSG_AUTH) &&
	    m->len >= sizeof(v))
		memcpy(&v, m->payload, sizeof(v));
	return v;
}

static int secondary__handshake(struct kemari_engine *e)
{
	struct kemari_hello h, mine;
	struct kemari_msg m;
	char why[768];
	int err;

	err = kemari_xport__recv(e->conn, &m, HANDSHAKE_MS);
	if (err)
		return kemari_err(err, "handshake: %s", kemari_last_error(err));
	err = engine__handshake_hello(e, &mine);
	if (err)
		return err;
	/*
	 * The version first: another version's HELLO may have another size,
	 * and its key exchange (or its lack of one) another meaning.
	 */
	if (secondary__peer_version(&m) &&
	    secondary__peer_version(&m) != mine.proto_version) {
		snprintf(
			why, sizeof(why),
			"protocol version %u on the primary but %u here: run the same kemari-run version on both sides",
			secondary__peer_version(&m), mine.proto_version);
		return secondary__refuse(e, -EPROTO, why);
	}
	err = secondary__authenticate(e, &m);
	if (err)
		return err;
	memset(&h, 0, sizeof(h));
	if (m.type == KEMARI_MSG_HELLO && m.len >= sizeof(h.proto_version))
		memcpy(&h.proto_version, m.payload, sizeof(h.proto_version));
	if (m.type != KEMARI_MSG_HELLO ||
	    (m.len != sizeof(h) && h.proto_version == mine.proto_version))
		return kemari_err(
			-EBADMSG,
			"handshake: expected HELLO, got %s of %u bytes",
			kemari_wire__type_name(m.type), m.len);
	if (m.len == sizeof(h))
		memcpy(&h, m.payload, sizeof(h));
	why[0] = 0;
	if (h.proto_version != mine.proto_version)
		snprintf(
			why, sizeof(why),
			"protocol version %u on the primary but %u here: run the same kemari-run version on both sides",
			h.proto_version, mine.proto_version);
	else if (h.page_size != mine.page_size)
		snprintf(why, sizeof(why),
			 "page size %u on the primary but %u here", h.page_size,
			 mine.page_size);
	else if (h.ram_size != mine.ram_size)
		snprintf(
			why, sizeof(why),
			"guest RAM %llu MiB on the primary but %llu MiB here: use the same --mem",
			(unsigned long long)(h.ram_size >> 20),
			(unsigned long long)(mine.ram_size >> 20));
	else if (h.image_hash != mine.image_hash)
		snprintf(
			why, sizeof(why),
			"guest image hash %016llx on the primary but %016llx here: use the same --guest",
			(unsigned long long)h.image_hash,
			(unsigned long long)mine.image_hash);
	else if (h.ncpus != mine.ncpus)
		snprintf(
			why, sizeof(why),
			"%u vCPUs on the primary but %u here: use the same --cpus",
			h.ncpus, mine.ncpus);
	else if (secondary__tsc_differs(&h, &mine))
		snprintf(
			why, sizeof(why),
			"the guest's TSC runs at %u kHz on the primary but %u kHz here (more than 250 ppm apart) and this host cannot scale it: its clock would drift after a takeover; pair hosts with the same TSC frequency",
			h.tsc_khz, mine.tsc_khz);
	if (!why[0])
		secondary__check_disk(e, &h, why, sizeof(why));
	if (!why[0])
		secondary__open_disk(e, why, sizeof(why));
	if (why[0])
		return secondary__refuse(e, -EPROTO, why);
	if (e->fence.fd >= 0) {
		memcpy(mine.disk_id, e->fence.disk_id, sizeof(mine.disk_id));
		mine.fence_gen = e->fence.gen;
	}
	e->bank = 0; /* a new connection: its first epoch lands in bank 0 */
	err = kemari_xport__reg_dst(e->conn, e->shadow, e->shadow_len);
	return err
		       ?: secondary__send(e, KEMARI_MSG_WELCOME, 0, &mine,
					  sizeof(mine));
}

static void secondary__swap(struct kemari_buf *a, struct kemari_buf *b)
{
	struct kemari_buf t = *a;

	*a = *b;
	*b = t;
}

static int secondary__commit(struct kemari_engine *e, uint64_t expect,
			     const struct kemari_msg *m)
{
	const struct kemari_run *runs =
		(const struct kemari_run *)e->pend_runs.data;
	size_t n = e->pend_runs.len / sizeof(*runs);
	struct kemari_commit c;
	struct kemari_ack ack;
	uint64_t npages = 0;
	const uint8_t *bank;
	int err;

	if (m->len != sizeof(c))
		return kemari_err(-EBADMSG, "COMMIT of %u bytes", m->len);
	memcpy(&c, m->payload, sizeof(c));
	/*
	 * The first commit of a connection is the initial sync, at any
	 * epoch: 0 from a fresh primary, the next of its own count from one
	 * that re-protects itself (core/reprotect.c). Then one at a time.
	 */
	if (!e->have_commit != !!(c.flags & KEMARI_COMMIT_INITIAL))
		return kemari_err(
			-EBADMSG, "COMMIT of epoch %llu %s",
			(unsigned long long)m->epoch,
			e->have_commit ? "claims to be a second initial sync"
				       : "before any initial sync");
	if (e->have_commit && m->epoch != expect)
		return kemari_err(-EBADMSG,
				  "COMMIT of epoch %llu, expected %llu",
				  (unsigned long long)m->epoch,
				  (unsigned long long)expect);
	if (c.nruns != n ||
	    c.runs_crc != kemari_crc32c(0, runs, n * sizeof(*runs)))
		return kemari_err(
			-EBADMSG,
			"COMMIT of epoch %llu names %llu runs, %zu arrived",
			(unsigned long long)m->epoch,
			(unsigned long long)c.nruns, n);
	for (size_t i = 0; i < n; i++)
		npages += runs[i].npages;
	if (npages != c.npages || !e->pend_cpu.len || !e->pend_dev.len)
		return kemari_err(
			-EBADMSG,
			"COMMIT of epoch %llu is incomplete (pages or state missing)",
			(unsigned long long)m->epoch);
	/*
	 * The epoch is complete here: acknowledge first, so the primary
	 * resumes while we copy it into the replica. Nothing of epoch N+1 can
	 * overwrite these receive buffers meanwhile: a stream transport queues
	 * it behind this loop, and a one-sided one writes it into the other
	 * bank (primary__push): this bank is written again only after our
	 * ACK of N+1, sent after this copy.
	 *
	 * Nothing below fails before the replica holds the whole epoch: every
	 * check is above, the state is swapped in, not copied (a failed copy
	 * once left the last good epoch without its state), and the runs were
	 * checked against RAM when they arrived. So a refused epoch leaves the
	 * previous one whole: replica, state, e->epoch.
	 */
	secondary__swap(&e->cpu_committed, &e->pend_cpu);
	secondary__swap(&e->dev_committed, &e->pend_dev);
	ack.applied_next = e->have_commit ? e->epoch + 1 : 0;
	e->epoch = m->epoch;
	e->have_commit = true;
	metrics__committed(e, e->epoch);
	err = secondary__send(e, KEMARI_MSG_ACK, e->epoch, &ack, sizeof(ack));
	/* Even if the ack was lost, the epoch is complete: apply it. */
	bank = e->shadow + (uint64_t)e->bank * e->ram_size;
	for (size_t i = 0; i < n; i++) {
		uint64_t off = runs[i].pfn * KEMARI_PAGE_SIZE;
		uint64_t len = (uint64_t)runs[i].npages * KEMARI_PAGE_SIZE;

		/* A big epoch (the initial sync of a large guest) takes
		 * longer than a heartbeat period: keep beating meanwhile. */
		for (uint64_t done = 0; done < len; done += APPLY_CHUNK) {
			uint64_t k = KEMARI_MIN(APPLY_CHUNK, len - done);

			memcpy(e->ram + off + done, bank + off + done, k);
			if (!err &&
			    kemari_now_ns() - e->last_tx_ns >=
				    (uint64_t)e->cfg.heartbeat_ms * 1000000ULL)
				err = secondary__send(e, KEMARI_MSG_HEARTBEAT,
						      e->epoch, NULL, 0);
		}
	}
	verify__secondary(e, runs, n);
	kemari_buf__reset(&e->pend_runs);
	kemari_buf__reset(&e->pend_cpu);
	kemari_buf__reset(&e->pend_dev);
	e->pend_pages = 0;
	if (c.flags & KEMARI_COMMIT_INITIAL)
		kemari_info(
			"initial sync complete: %llu MiB; protecting the guest",
			(unsigned long long)(e->ram_size >> 20));
	if (kemari_xport__has(e->conn, KEMARI_XPORT_CAP_ONESIDED))
		e->bank ^= 1;
	return err;
}

/* A message's payload into b (appended, or replacing b's). -ENOMEM is a
 * dropped connection, like a cap (secondary__serve). */
static int secondary__stash(struct kemari_buf *b, const struct kemari_msg *m,
			    bool append)
{
	int err;

	if (!append)
		kemari_buf__reset(b);
	err = kemari_buf__append(b, m->payload, m->len);
	if (err)
		return kemari_err(
			err, "cannot buffer %s of %u bytes for epoch %llu: %s",
			kemari_wire__type_name(m->type), m->len,
			(unsigned long long)m->epoch, strerror(-err));
	return 0;
}

/* A state blob, within SECONDARY_STATE_MAX; else -EMSGSIZE. */
static int secondary__stash_state(struct kemari_buf *b,
				  const struct kemari_msg *m)
{
	if (m->len > SECONDARY_STATE_MAX)
		return kemari_err(
			-EMSGSIZE,
			"epoch %llu: %s of %u bytes is over the cap of %u bytes",
			(unsigned long long)m->epoch,
			kemari_wire__type_name(m->type), m->len,
			SECONDARY_STATE_MAX);
	return secondary__stash(b, m, false);
}

/* A RUNS message: each run inside RAM, the epoch's pages within RAM. */
static int secondary__check_runs(struct kemari_engine *e,
				 const struct kemari_msg *m)
{
	const struct kemari_run *r = m->payload;
	size_t n = m->len / sizeof(*r);
	uint64_t pages = e->pend_pages;

	if (m->len % sizeof(*r))
		return kemari_err(-EBADMSG, "RUNS message of %u bytes", m->len);
	for (size_t i = 0; i < n; i++) {
		if (!r[i].npages || r[i].pfn >= e->npages ||
		    r[i].npages > e->npages - r[i].pfn)
			return kemari_err(
				-EBADMSG,
				"run of %u pages at page %llu is outside the %llu-page guest RAM",
				r[i].npages, (unsigned long long)r[i].pfn,
				(unsigned long long)e->npages);
		pages += r[i].npages; /* each below npages: no overflow */
		if (pages > e->npages)
			return kemari_err(
				-EMSGSIZE,
				"epoch %llu: its runs reach %llu pages, over the cap of %llu (the guest's RAM)",
				(unsigned long long)m->epoch,
				(unsigned long long)pages,
				(unsigned long long)e->npages);
	}
	e->pend_pages = pages;
	return 0;
}

static enum serve_end secondary__lost(struct kemari_engine *e, int err)
{
	if (!e->have_commit) {
		kemari_warn(
			"primary lost before the initial sync completed (%s): nothing to take over; waiting for a primary",
			kemari_last_error(err));
		kemari_err_clear();
		return SERVE_DROPPED;
	}
	kemari_warn("primary lost at epoch %llu: %s",
		    (unsigned long long)e->epoch, kemari_last_error(err));
	kemari_err_clear();
	return SERVE_TAKEOVER;
}

/*
 * The primary heard from at now_ns (a message, or the end of handling
 * one): also a look, so that a pause of this side's own that the message
 * ends is said (engine__silence), not hidden by it; limit: the silence
 * timeout in force (ms).
 */
static void secondary__heard(struct kemari_engine *e, uint64_t now_ns,
			     unsigned int limit)
{
	(void)engine__silence(e, NULL, now_ns, limit, true);
	e->last_rx_ns = now_ns;
}

enum serve_end secondary__serve(struct kemari_engine *e)
{
	uint64_t expect = 0;
	int err;

	e->have_commit = false;
	atomic_store(&e->state, KEMARI_STATE_SYNCING);
	kemari_buf__reset(&e->pend_runs);
	kemari_buf__reset(&e->pend_cpu);
	kemari_buf__reset(&e->pend_dev);
	kemari_buf__reset(&e->pend_verify);
	e->pend_pages = 0;
	e->last_rx_ns = e->last_tx_ns = kemari_now_ns();
	err = secondary__handshake(e);
	if (err) {
		kemari_error("%s", kemari_last_error(err));
		kemari_err_clear();
		return SERVE_DROPPED;
	}
	kemari_info("primary connected; receiving the initial sync");
	for (;;) {
		struct kemari_msg m;
		uint64_t now;
		unsigned int limit =
			e->have_commit ? e->cfg.heartbeat_timeout_ms
				       : KEMARI_MAX(e->cfg.heartbeat_timeout_ms,
						    SYNC_SILENCE_MS);

		err = kemari_xport__recv(e->conn, &m, (int)e->cfg.heartbeat_ms);
		now = kemari_now_ns();
		if (atomic_load(&e->stop))
			return SERVE_STOP;
		if (err == -ETIMEDOUT) {
			metrics__silence(e, now);
			/* This side's own pauses do not count (a stall of
			 * the host under both sides must not split them). */
			if (engine__silence(e, NULL, now, limit, true) >
			    (uint64_t)limit * 1000000ULL)
				return secondary__lost(
					e,
					kemari_err(-ETIMEDOUT,
						   "no heartbeat for %u ms",
						   e->cfg.heartbeat_timeout_ms));
		} else if (err == -EBADMSG) {
			goto malformed;
		} else if (err) {
			return secondary__lost(e, err);
		} else {
			secondary__heard(e, now, limit);
			switch (m.type) {
			case KEMARI_MSG_RUNS:
				err = secondary__check_runs(e, &m);
				err = err
					      ?: secondary__stash(&e->pend_runs,
								  &m, true);
				break;
			case KEMARI_MSG_CPU_STATE:
				err = secondary__stash_state(&e->pend_cpu, &m);
				break;
			case KEMARI_MSG_DEV_STATE:
				err = secondary__stash_state(&e->pend_dev, &m);
				break;
			case KEMARI_MSG_VERIFY:
				err = verify__stash(e, &m);
				break;
			case KEMARI_MSG_COMMIT:
				err = secondary__commit(e, expect, &m);
				if (!err)
					expect = e->epoch + 1;
				break;
			case KEMARI_MSG_HEARTBEAT:
				break;
			case KEMARI_MSG_BYE:
				kemari_info(
					"the primary shut down in order at epoch %llu; not taking over",
					(unsigned long long)e->epoch);
				return SERVE_BYE;
			case KEMARI_MSG_SWITCHOVER:
				if (!e->have_commit) {
					err = kemari_err(
						-EBADMSG,
						"SWITCHOVER before the initial sync");
					break;
				}
				kemari_info(
					"switchover: the primary hands the guest over at epoch %llu; taking over now",
					(unsigned long long)e->epoch);
				return SERVE_TAKEOVER;
			case KEMARI_MSG_FAILED:
				return secondary__lost(
					e,
					kemari_err(-ECONNRESET,
						   "its guest or VMM failed"));
			default:
				err = kemari_err(
					-EBADMSG, "unexpected %s message",
					kemari_wire__type_name(m.type));
				break;
			}
			if (err == -EBADMSG)
				goto malformed;
			/* Over a cap, or this side could not buffer it: the
			 * primary is alive; drop it, never take over. */
			if (err && m.type != KEMARI_MSG_COMMIT)
				goto dropped;
			if (err)
				return secondary__lost(e, err);
			/* The primary's silence counts from here: while this
			 * side handled the message (applying the initial
			 * sync's whole RAM is slow in the emulated VM) it
			 * did not listen; what the primary sent meanwhile is
			 * read next. A stall while this side handled it is
			 * said too. */
			secondary__heard(e, kemari_now_ns(), limit);
		}
		/* Fresh time: an ack sent above is newer than now. */
		if (kemari_now_ns() - e->last_tx_ns >=
		    (uint64_t)e->cfg.heartbeat_ms * 1000000ULL) {
			err = secondary__send(e, KEMARI_MSG_HEARTBEAT, e->epoch,
					      NULL, 0);
			if (err)
				return secondary__lost(e, err);
		}
	}
malformed:
	/* Garbage is not a failed primary: never take over on it. */
	kemari_error(
		"malformed replication stream: %s; the replica stays at %s, connection dropped",
		kemari_last_error(err),
		e->have_commit ? "its last committed epoch" : "empty");
	kemari_err_clear();
	return SERVE_DROPPED;
dropped:
	if (e->have_commit)
		kemari_error(
			"%s; connection dropped, not taking over from it: the replica stays at epoch %llu",
			kemari_last_error(err), (unsigned long long)e->epoch);
	else
		kemari_error(
			"%s; connection dropped, not taking over from it: the replica stays empty",
			kemari_last_error(err));
	kemari_err_clear();
	return SERVE_DROPPED;
}

static int secondary__takeover(struct kemari_engine *e, uint64_t t_detect)
{
	struct kemari_hv *hv = e->hv;
	int err;

	verify__report(e, false);
	/* Before anything of the guest runs or is re-issued here. */
	if (e->fence.fd >= 0) {
		err = kemari_fence__win(&e->fence, "secondary");
		if (err) {
			char why[640];

			snprintf(why, sizeof(why), "%s",
				 kemari_last_error(err));
			return kemari_err_override(
				err,
				"not taking over: %s; the guest stays stopped here, nothing released",
				why);
		}
		kemari_info("won the fence %s at generation %llu",
			    e->fence.path, (unsigned long long)e->fence.gen);
	}
	err = kemari_hv__load_cpu(hv, e->cpu_committed.data,
				e->cpu_committed.len);
	err = err
		      ?: kemari_hv__load_dev(hv, e->dev_committed.data,
					   e->dev_committed.len);
	err = err ?: kemari_hv__reattach(hv);
	if (err)
		return kemari_err(err, "takeover failed: %s",
				  kemari_last_error(err));
	metrics__takeover(e);
	kemari_info(
		"takeover: resumed from epoch %llu, %.1f ms from detection to running",
		(unsigned long long)e->epoch,
		(double)(kemari_now_ns() - t_detect) / 1e6);
	/* Serving alone now: re-protected through --peer when one listens. */
	e->protected = false;
	return primary__serve(e);
}

int secondary__run(struct kemari_engine *e)
{
	int err;

	/* Mapped once: a switched-over primary serves here again later. */
	if (!e->shadow) {
		/* One-sided: two banks (primary__push). */
		e->shadow_len = e->ram_size;
		if (e->cfg.xport->caps & KEMARI_XPORT_CAP_ONESIDED)
			e->shadow_len *= 2;
		e->shadow = mmap(NULL, e->shadow_len, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
				 -1, 0);
	}
	if (e->shadow == MAP_FAILED) {
		e->shadow = NULL;
		return kemari_err(-ENOMEM,
				  "cannot map %llu MiB of receive buffers",
				  (unsigned long long)(e->shadow_len >> 20));
	}
	err = kemari_xport__listen(e->cfg.xport, &e->listener, e->cfg.listen,
				   &e->cfg.xport_opts);
	if (err)
		return err;
	if (!e->have_key && !kemari_auth__loopback(e->cfg.listen))
		kemari_warn(
			"listening on %s without --auth-key (--insecure): any host that reaches it can connect as the primary",
			e->cfg.listen);
	kemari_info("waiting for the primary on %s (%s)", e->cfg.listen,
		    e->cfg.xport->name);
	while (!atomic_load(&e->stop)) {
		enum serve_end end;
		uint64_t t_detect;

		err = kemari_xport__accept(e->listener, &e->conn, 200);
		if (err == -ETIMEDOUT)
			continue;
		if (err == -EACCES) {
			/* A peer the transport refused (--tls: no TLS, or
			 * another key): said in one line; keep listening. */
			kemari_error("%s", kemari_last_error(err));
			continue;
		}
		if (err)
			return kemari_err(err, "accept: %s",
					  kemari_last_error(err));
		end = secondary__serve(e);
		t_detect = kemari_now_ns();
		kemari_xport__close(e->conn);
		e->conn = NULL;
		if (end == SERVE_TAKEOVER) {
			kemari_xport__close(e->listener);
			e->listener = NULL;
			return secondary__takeover(e, t_detect);
		}
		if (end == SERVE_BYE || end == SERVE_STOP) {
			verify__report(e, false);
			return 0;
		}
	}
	return 0;
}
