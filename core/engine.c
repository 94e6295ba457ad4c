// SPDX-License-Identifier: MIT
/*
 * Engine: creation, role dispatch, the standalone role, and what every role
 * shares (ticks, fault injection, the handshake record).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine_priv.h"
#include "kemari/kemari.h"
#include "kemari/testcfg.h"

static const char *const fault_names[] = {
	[KEMARI_FAULT_NONE] = "none",
	[KEMARI_FAULT_SYNC] = "sync",
	[KEMARI_FAULT_BEFORE_PUSH] = "before-push",
	[KEMARI_FAULT_MID_PUSH] = "mid-push",
	[KEMARI_FAULT_AFTER_PUSH] = "after-push",
	[KEMARI_FAULT_AFTER_COMMIT] = "after-commit",
	[KEMARI_FAULT_AFTER_ACK] = "after-ack",
	[KEMARI_FAULT_GUEST_CRASH] = "guest-crash",
	[KEMARI_FAULT_FREEZE_AFTER_ACK] = "freeze-after-ack",
};

const char *kemari_fault__name(enum kemari_fault f)
{
	return (unsigned int)f < KEMARI_ARRAY_SIZE(fault_names) ? fault_names[f]
								: "?";
}

int kemari_fault__parse(const char *s, enum kemari_fault *f, uint64_t *epoch)
{
	const char *colon = strchr(s, ':');
	size_t n = colon ? (size_t)(colon - s) : strlen(s);
	char *end;

	for (unsigned int i = 1; i < KEMARI_ARRAY_SIZE(fault_names); i++) {
		if (strlen(fault_names[i]) != n ||
		    strncmp(s, fault_names[i], n))
			continue;
		*f = (enum kemari_fault)i;
		*epoch = 0;
		if (colon && !strcmp(colon + 1, "SIGUSR2")) {
			*epoch = KEMARI_FAULT_ON_SIGNAL;
		} else if (colon) {
			errno = 0;
			*epoch = strtoull(colon + 1, &end, 10);
			if (errno || *end || end == colon + 1)
				return -EINVAL;
		}
		return 0;
	}
	return -EINVAL;
}

/*
 * Whether fault f is due in this epoch. A signal-armed fault picks the
 * epoch after the one in which it first sees the signal, so that every
 * phase of that epoch still lies ahead of it.
 */
bool engine__fault_due(struct kemari_engine *e, enum kemari_fault f,
		       uint64_t epoch)
{
	if (e->cfg.fault != f)
		return false;
	if (f == KEMARI_FAULT_SYNC)
		return true;
	if (e->cfg.fault_epoch != KEMARI_FAULT_ON_SIGNAL)
		return epoch >= e->cfg.fault_epoch;
	if (!atomic_load(&e->fault_armed))
		return false;
	if (!e->fault_at)
		e->fault_at = epoch + 1;
	return epoch >= e->fault_at;
}

void engine__fault(struct kemari_engine *e, enum kemari_fault f, uint64_t epoch)
{
	if (!e->cfg.fault_hook || !engine__fault_due(e, f, epoch))
		return;
	kemari_warn("fault injection: crashing at %s of epoch %llu",
		    kemari_fault__name(f), (unsigned long long)epoch);
	e->cfg.fault_hook(f, epoch);
}

/*
 * The gap between two looks beyond which a side counts its own pause: half
 * the heartbeat timeout, and three heartbeat periods at least (both sides
 * look that often: the secondary's receive, the primary's tick and its
 * heartbeat thread).
 */
uint64_t engine__grace(const struct kemari_engine *e, unsigned int timeout_ms)
{
	return KEMARI_MAX((uint64_t)timeout_ms * 500000ULL,
			  (uint64_t)e->cfg.heartbeat_ms * 3000000ULL);
}

/* A pause of this side's own, pause_ns long in all: said and counted. */
void engine__own_pause(struct kemari_engine *e, uint64_t pause_ns)
{
	metrics__own_pause(e, pause_ns);
	kemari_warn(
		"this side did not look for its peer for %llu ms (its own pause: its process or host stalled, or it was busy): not counted as the peer's silence",
		(unsigned long long)(pause_ns / 1000000));
}

/*
 * The peer's silence at now_ns (ns) against timeout_ms, without this
 * side's own pauses (kemari/silence.h). s: the caller's own silence, or
 * NULL for e->last_rx_ns's. say: whether a pause found here is said and
 * counted (engine__own_pause); the primary says its pauses from its
 * heartbeat thread instead, whose looks never wait for the guest's loop.
 */
uint64_t engine__silence(struct kemari_engine *e, struct kemari_silence *s,
			 uint64_t now_ns, unsigned int timeout_ms, bool say)
{
	uint64_t grace = engine__grace(e, timeout_ms);
	uint64_t own, silent;

	if (!s) {
		s = &e->peer_silence;
		if (s->heard_ns != e->last_rx_ns)
			kemari_silence__heard(s, e->last_rx_ns);
	}
	silent = kemari_silence__look(s, now_ns, grace, &own);
	if (own && say)
		engine__own_pause(e, own + grace);
	return silent;
}

int engine__tick_common(struct kemari_engine *e)
{
	if (atomic_exchange(&e->summary_req, false))
		metrics__summary(&e->metrics, stderr);
	return 0;
}

/* Lost the fence: record why, stop the guest; nothing more is released. */
static int engine__fenced_out(struct kemari_engine *e, int err)
{
	snprintf(e->fence_why, sizeof(e->fence_why),
		 "%s; stopping at once, nothing more released",
		 kemari_last_error(err));
	atomic_store(&e->fenced_out, true);
	if (e->hv)
		kemari_hv__stop(e->hv);
	return kemari_err_override(err, "%s", e->fence_why);
}

int engine__fence_win(struct kemari_engine *e, const char *who)
{
	int err;

	if (e->fence.fd < 0)
		return 0;
	if (atomic_load(&e->fenced_out))
		return kemari_err_override(-ESTALE, "%s", e->fence_why);
	err = kemari_fence__win(&e->fence, who);
	if (err)
		return engine__fenced_out(e, err);
	e->fence_need_win = false;
	kemari_info("won the fence %s at generation %llu: serving alone",
		    e->fence.path, (unsigned long long)e->fence.gen);
	return 0;
}

int engine__release(struct kemari_engine *e, struct kemari_event *ev)
{
	int err;

	if (e->fence.fd < 0)
		return kemari_event__release(ev);
	if (atomic_load(&e->fenced_out))
		return kemari_err_override(-ESTALE, "%s", e->fence_why);
	if (e->fence_need_win) {
		err = engine__fence_win(e, e->cfg.role == KEMARI_ROLE_PRIMARY
						   ? "primary"
						   : "secondary");
		if (err)
			return err;
	}
	err = kemari_fence__hold(&e->fence);
	if (err)
		return engine__fenced_out(e, err);
	err = kemari_event__release(ev);
	kemari_fence__release(&e->fence);
	return err;
}

static int standalone__event(void *ctx, struct kemari_event *ev)
{
	return engine__release(ctx, ev);
}

static int standalone__tick(void *ctx)
{
	return engine__tick_common(ctx);
}

/* Run the guest on this host with nothing to protect it (any role's end). */
int engine__run_guest(struct kemari_engine *e)
{
	int status, err;

	/* A stop asked before (re-)entering run: hv.h's run clears its own. */
	if (atomic_load(&e->stop))
		return 0;
	status = kemari_hv__run(e->hv);
	if (atomic_load(&e->fenced_out))
		return kemari_err_override(-ESTALE, "%s", e->fence_why);
	err = kemari_hv__flush(e->hv);
	if (err && status >= 0)
		status = kemari_err(err, "flushing the disk failed: %s",
				    strerror(-err));
	return status;
}

int engine__handshake_hello(struct kemari_engine *e, struct kemari_hello *h)
{
	memset(h, 0, sizeof(*h));
	h->proto_version = KEMARI_PROTO_VERSION;
	/* Tests of the version refusal pose as another version. */
	if (kemari_testcfg__get()->proto_version)
		h->proto_version = kemari_testcfg__get()->proto_version;
	h->page_size = (uint32_t)KEMARI_PAGE_SIZE;
	h->ram_size = e->ram_size;
	h->image_hash = e->image_hash;
	h->ncpus = e->cfg.hv_cfg.ncpus;
	snprintf(h->hv, sizeof(h->hv), "%s", e->cfg.hv->name);
	if (e->fence.fd >= 0) {
		memcpy(h->disk_id, e->fence.disk_id, sizeof(h->disk_id));
		h->fence_gen = e->fence.gen;
	}
	if (e->hv) {
		bool scale = false;
		int err = kemari_hv__tsc_khz(e->hv, &h->tsc_khz, &scale);

		if (err)
			return err;
		if (scale)
			h->flags |= KEMARI_HELLO_TSC_SCALING;
	}
	/* Tests of the TSC refusal pose as a host at another frequency. */
	if (kemari_testcfg__get()->tsc_khz)
		h->tsc_khz = kemari_testcfg__get()->tsc_khz;
	return 0;
}

/*
 * What both sides must run identically, as one 64-bit value for the
 * handshake: the guest image, or a Linux kernel with its initrd and
 * command line.
 */
/*
 * --tls: the transport must encrypt (KEMARI_XPORT_CAP_TLS) and both sides
 * hold the key; the TLS pre-shared key is derived from it.
 */
static int engine__tls_setup(struct kemari_engine *e)
{
	int err;

	if (!(e->cfg.xport->caps & KEMARI_XPORT_CAP_TLS))
		return kemari_err(
			-ENOTSUP,
			"--tls: the %s transport does not encrypt; use --transport=tcp (rdma and ofi links stay inside the cluster fabric)",
			e->cfg.xport->name);
	if (!e->have_key)
		return kemari_err(
			-EINVAL,
			"--tls needs --auth-key=FILE on both sides (the TLS key is derived from it; make one with --gen-key=FILE)");
	err = kemari_auth__derive(&e->key, "kemari tls 1.3 psk", e->tls_psk);
	if (err)
		return err;
	e->cfg.xport_opts.tls_psk = e->tls_psk;
	e->cfg.xport_opts.tls_psk_len = sizeof(e->tls_psk);
	return 0;
}

static int engine__hash_guest(struct kemari_engine *e)
{
	const struct kemari_hv_cfg *h = &e->cfg.hv_cfg;
	const char *files[2] = { e->cfg.guest_path, NULL };
	const char *what[2] = { "guest image", "initrd" };

	if (h->kernel) {
		files[0] = h->kernel;
		files[1] = h->initrd;
		what[0] = "kernel";
	}
	e->image_hash = 0;
	for (unsigned int i = 0; i < 2; i++) {
		uint64_t v;
		int err;

		if (!files[i])
			continue;
		err = kemari_hash_file(files[i], &v);
		if (err)
			return kemari_err(err, "%s %s: %s", what[i], files[i],
					  strerror(-err));
		e->image_hash = (e->image_hash << 7 | e->image_hash >> 57) ^ v;
	}
	if (h->kernel && h->cmdline)
		e->image_hash ^=
			kemari_crc32c(0, h->cmdline, strlen(h->cmdline));
	return 0;
}

int kemari_engine__create(struct kemari_engine **out,
			  const struct kemari_engine_cfg *cfg)
{
	struct kemari_engine *e = calloc(1, sizeof(*e));
	void *ram;
	int err;

	if (!e)
		return -ENOMEM;
	e->cfg = *cfg;
	pthread_mutex_init(&e->xlock, NULL);
	e->start_ns = kemari_now_ns();
	atomic_init(&e->state, cfg->role == KEMARI_ROLE_STANDALONE
				       ? KEMARI_STATE_UNPROTECTED
				       : KEMARI_STATE_SYNCING);
	e->cfg.hv_cfg.hooks.ctx = e;
	e->cfg.hv_cfg.hooks.tick_ms =
		cfg->heartbeat_ms ? cfg->heartbeat_ms : 20;
	e->cfg.hv_cfg.hooks.event = standalone__event;
	e->cfg.hv_cfg.hooks.tick = standalone__tick;
	/* The secondary binds the service address only at takeover. */
	e->cfg.hv_cfg.defer_net = cfg->role == KEMARI_ROLE_SECONDARY;
	e->cfg.hv_cfg.defer_disk = cfg->role == KEMARI_ROLE_SECONDARY;
	e->fence.fd = -1;

	/* Before anything is set up: a refused address or key costs nothing. */
	if (cfg->role != KEMARI_ROLE_STANDALONE && cfg->auth_key_path) {
		err = kemari_auth__load_key(&e->key, cfg->auth_key_path);
		if (err)
			goto err_free;
		e->have_key = true;
	}
	if (cfg->role != KEMARI_ROLE_STANDALONE && cfg->tls) {
		err = engine__tls_setup(e);
		if (err)
			goto err_free;
	}
	/* A primary's --listen: where it waits after a switchover. */
	if (cfg->role != KEMARI_ROLE_STANDALONE && cfg->listen) {
		err = kemari_auth__check_listen(cfg->listen, e->have_key,
						cfg->insecure);
		if (err)
			goto err_free;
	}
	err = metrics__open(&e->metrics, cfg->stats_path);
	if (err)
		goto err_free;
	err = engine__hash_guest(e);
	if (err)
		goto err_metrics;
	/* A secondary serves as a primary once it took over. */
	if (cfg->role != KEMARI_ROLE_STANDALONE) {
		e->cfg.hv_cfg.hooks.event = primary__event;
		e->cfg.hv_cfg.hooks.tick = primary__tick;
	}
	err = cfg->hv->create(&e->hv, &e->cfg.hv_cfg);
	if (err)
		goto err_metrics;
	err = kemari_hv__map_ram(e->hv, &ram, &e->ram_size);
	if (err)
		goto err_hv;
	e->ram = ram;
	e->npages = e->ram_size / KEMARI_PAGE_SIZE;
	if (cfg->role != KEMARI_ROLE_SECONDARY) {
		err = kemari_hv__load_guest(e->hv, cfg->guest_path);
		if (err)
			goto err_hv;
	}
	/*
	 * The primary creates the disk (above) and its fence record, and
	 * claims the disk: a side that served from it before (a secondary
	 * that took over) is fenced out from now on. The secondary opens the
	 * record at the handshake (secondary.c).
	 */
	if (cfg->role == KEMARI_ROLE_PRIMARY && cfg->fence_path) {
		err = kemari_fence__open(&e->fence, cfg->fence_path, true);
		err = err ?: kemari_fence__win(&e->fence, "primary");
		if (err)
			goto err_fence;
	}
	*out = e;
	return 0;

err_fence:
	kemari_fence__close(&e->fence);
err_hv:
	kemari_hv__destroy(e->hv);
err_metrics:
	metrics__close(&e->metrics);
err_free:
	kemari_auth__forget(&e->key);
	explicit_bzero(e->tls_psk, sizeof(e->tls_psk));
	free(e);
	return err;
}

int kemari_engine__run(struct kemari_engine *e)
{
	int status;

	switch (e->cfg.role) {
	case KEMARI_ROLE_PRIMARY:
		status = primary__run(e);
		break;
	case KEMARI_ROLE_SECONDARY:
		status = secondary__run(e);
		break;
	case KEMARI_ROLE_STANDALONE:
	default:
		return engine__run_guest(e);
	}
	/* Switched over: the new primary's secondary, on --listen (which
	 * may see the guest handed back: a switchover the other way). */
	while (status == 0 && e->switched && e->cfg.listen &&
	       !atomic_load(&e->stop)) {
		e->switched = false;
		status = secondary__run(e);
	}
	return status;
}

int kemari_engine__switchover(struct kemari_engine *e)
{
	if (!e->protected || e->switched)
		return -ENOTCONN;
	if (atomic_exchange(&e->switch_req, true))
		return -EALREADY;
	return 0;
}

void kemari_engine__stop(struct kemari_engine *e)
{
	atomic_store(&e->stop, true);
	if (e->hv)
		kemari_hv__stop(e->hv);
}

void kemari_engine__arm_fault(struct kemari_engine *e)
{
	atomic_store(&e->fault_armed, true);
}

void kemari_engine__request_summary(struct kemari_engine *e)
{
	atomic_store(&e->summary_req, true);
}

void kemari_engine__summary(struct kemari_engine *e, FILE *f)
{
	metrics__summary(&e->metrics, f);
}

void kemari_engine__destroy(struct kemari_engine *e)
{
	if (!e)
		return;
	if (e->conn)
		kemari_xport__close(e->conn);
	if (e->listener)
		kemari_xport__close(e->listener);
	if (e->hv)
		kemari_hv__destroy(e->hv);
	kemari_fence__close(&e->fence);
	if (e->shadow)
		munmap(e->shadow, e->shadow_len);
	kemari_dirty__fini(&e->dirty);
	kemari_dirty__fini(&e->epoch_set);
	pthread_mutex_destroy(&e->xlock);
	free(e->runs);
	kemari_buf__fini(&e->cpu_state);
	kemari_buf__fini(&e->dev_state);
	kemari_buf__fini(&e->pend_runs);
	kemari_buf__fini(&e->pend_cpu);
	kemari_buf__fini(&e->pend_dev);
	kemari_buf__fini(&e->cpu_committed);
	kemari_buf__fini(&e->dev_committed);
	verify__fini(e);
	metrics__close(&e->metrics);
	kemari_auth__forget(&e->key);
	explicit_bzero(e->tls_psk, sizeof(e->tls_psk));
	free(e);
}
