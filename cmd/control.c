// SPDX-License-Identifier: MIT
/*
 * kemari-run --control=PATH (cmd/control.h): one thread polls the listening
 * socket and up to CONTROL_CLIENTS connections; a request is one line, its
 * answer one line. Answers come from kemari_engine__stats() snapshots.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "kemari/json.h"
#include "kemari/kemari.h"

#define CONTROL_CLIENTS 8
#define CONTROL_LINE 4096

struct control_client {
	int fd;
	size_t len;
	char buf[CONTROL_LINE];
};

struct control {
	struct kemari_engine *e;
	char path[108];
	int fd;
	int wake[2]; /* a byte here ends the thread */
	pthread_t thread;
	struct control_client cl[CONTROL_CLIENTS];
};

/* An answer under construction: the reply is truncated, never overrun. */
struct reply {
	char s[CONTROL_LINE];
	size_t n;
};

static void reply__add(struct reply *r, const char *fmt, ...)
	KEMARI_PRINTF(2, 3);
static void reply__add(struct reply *r, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (r->n >= sizeof(r->s))
		return;
	va_start(ap, fmt);
	k = vsnprintf(r->s + r->n, sizeof(r->s) - r->n, fmt, ap);
	va_end(ap);
	r->n = k < 0 ? sizeof(r->s)
		     : KEMARI_MIN(r->n + (size_t)k, sizeof(r->s));
}

static void reply__str(struct reply *r, const char *s)
{
	char q[512];

	kemari_json__quote(q, sizeof(q), s);
	reply__add(r, "%s", q);
}

struct request {
	char execute[64];
	char id[128]; /* the id's JSON text, or "" */
	bool bad_execute;
};

static int request__member(void *ctx, const char *path,
			   enum kemari_json_type type, const char *value)
{
	struct request *q = ctx;

	if (!strcmp(path, "execute")) {
		if (type != KEMARI_JSON_STRING)
			q->bad_execute = true;
		else
			snprintf(q->execute, sizeof(q->execute), "%s", value);
	} else if (!strcmp(path, "id")) {
		if (type == KEMARI_JSON_STRING)
			kemari_json__quote(q->id, sizeof(q->id), value);
		else if (type == KEMARI_JSON_NUMBER)
			snprintf(q->id, sizeof(q->id), "%s", value);
	}
	return 0;
}

static const char *const role_names[] = { "standalone", "primary",
					  "secondary" };

static void control__status(struct reply *r,
			    const struct kemari_engine_stats *s)
{
	reply__add(r, "{\"role\":\"%s\",\"state\":\"%s\",\"epoch\":%llu,",
		   role_names[s->role % 3], kemari_state__name(s->state),
		   (unsigned long long)s->epoch);
	reply__add(r, "\"peer\":");
	if (s->peer) {
		reply__add(r, "{\"address\":");
		reply__str(r, s->peer);
		reply__add(r, ",\"connected\":%s},",
			   s->peer_connected ? "true" : "false");
	} else {
		reply__add(r, "null,");
	}
	reply__add(r,
		   "\"guest\":{\"ram_bytes\":%llu,\"vcpus\":%u},"
		   "\"pause_us\":{\"last\":%llu,\"p50\":%llu,\"p99\":%llu},"
		   "\"bytes_per_epoch\":%llu,\"uptime_ms\":%llu}",
		   (unsigned long long)s->ram_bytes, s->ncpus,
		   (unsigned long long)s->last_pause_us,
		   (unsigned long long)s->p50_pause_us,
		   (unsigned long long)s->p99_pause_us,
		   (unsigned long long)(s->pause_us.count
						? s->bytes / s->pause_us.count
						: 0),
		   (unsigned long long)s->uptime_ms);
}

static void control__stats(struct reply *r, const struct kemari_engine_stats *s)
{
	reply__add(r,
		   "{\"epochs\":%llu,\"epoch\":%llu,\"pushed_bytes\":%llu,"
		   "\"pushed_pages\":%llu,\"heartbeats_missed\":%llu,"
		   "\"takeovers\":%llu,\"own_pauses\":%llu,"
		   "\"own_pause_max_ms\":%llu,",
		   (unsigned long long)s->epochs, (unsigned long long)s->epoch,
		   (unsigned long long)s->bytes, (unsigned long long)s->pages,
		   (unsigned long long)s->heartbeats_missed,
		   (unsigned long long)s->takeovers,
		   (unsigned long long)s->own_pauses,
		   (unsigned long long)s->own_pause_max_ms);
	reply__add(r,
		   "\"pause_us\":{\"count\":%llu,\"sum\":%llu,\"last\":%llu,"
		   "\"p50\":%llu,\"p99\":%llu},\"phase_us_sum\":{",
		   (unsigned long long)s->pause_us.count,
		   (unsigned long long)s->pause_us.sum,
		   (unsigned long long)s->last_pause_us,
		   (unsigned long long)s->p50_pause_us,
		   (unsigned long long)s->p99_pause_us);
	for (unsigned int i = 0; i < KEMARI_NPHASES; i++)
		reply__add(r, "%s\"%s\":%llu", i ? "," : "",
			   kemari_phase__name((enum kemari_phase)i),
			   (unsigned long long)s->phase_us[i].sum);
	reply__add(r, "},\"dirty_pages\":{\"count\":%llu,\"sum\":%llu}}",
		   (unsigned long long)s->dirty_pages.count,
		   (unsigned long long)s->dirty_pages.sum);
}

void control__note_stop(const char *fmt, ...)
{
	static atomic_flag said = ATOMIC_FLAG_INIT;
	char line[512];
	va_list ap;

	if (atomic_flag_test_and_set(&said))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	kemari_info("%s", line);
}

void control__describe_pid(pid_t pid, char *out, size_t n)
{
	char path[64], comm[32] = "";
	ssize_t len = -1;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		len = read(fd, comm, sizeof(comm) - 1);
		close(fd);
	}
	while (len > 0 && (comm[len - 1] == '\n' || comm[len - 1] == 0))
		len--;
	if (len > 0) {
		comm[len] = 0;
		snprintf(out, n, "pid %d (%s)", (int)pid, comm);
	} else {
		/* Gone already, or another user's under hidepid. */
		snprintf(out, n, "pid %d", (int)pid);
	}
}

/* "stop" on the control socket: who asked, from the connection's peer. */
static void control__note_peer_stop(struct control *c, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char who[96] = "an unknown process";

	if (!getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len))
		control__describe_pid(cred.pid, who, sizeof(who));
	control__note_stop("stopping on 'stop' from the control socket %s, %s",
			   c->path, who);
}

static void control__error(struct reply *r, const char *cls, const char *desc)
{
	reply__add(r, "{\"error\":{\"class\":\"%s\",\"desc\":", cls);
	reply__str(r, desc);
	reply__add(r, "}");
}

/* One request line into its answer (without the newline). */
static void control__handle(struct control *c, int fd, const char *line,
			    struct reply *r)
{
	struct kemari_engine_stats s;
	struct request q = { 0 };
	char desc[160];

	if (line[strspn(line, " \t")] != '{' ||
	    kemari_json__walk(line, request__member, &q)) {
		control__error(
			r, "GenericError",
			"malformed request: send one JSON object per line, e.g. {\"execute\":\"status\"}");
	} else if (q.bad_execute || !q.execute[0]) {
		control__error(
			r, "GenericError",
			"a request needs \"execute\": status, stats, stop or switchover");
	} else if (!strcmp(q.execute, "stop")) {
		reply__add(r, "{\"return\":{}");
		control__note_peer_stop(c, fd);
		kemari_engine__stop(c->e);
	} else if (!strcmp(q.execute, "switchover")) {
		int err = kemari_engine__switchover(c->e);

		if (err == -ENOTCONN)
			control__error(
				r, "DeviceNotActive",
				"no switchover: no secondary holds the guest (only a protected primary hands it over)");
		else if (err == -EALREADY)
			control__error(r, "GenericError",
				       "a switchover is under way already");
		else
			reply__add(r, "{\"return\":{}");
	} else if (strcmp(q.execute, "status") && strcmp(q.execute, "stats")) {
		snprintf(desc, sizeof(desc),
			 "unknown command '%.64s': use status, stats, stop or switchover",
			 q.execute);
		control__error(r, "CommandNotFound", desc);
	} else if (kemari_engine__stats(c->e, &s)) {
		control__error(r, "GenericError", "out of memory");
	} else {
		reply__add(r, "{\"return\":");
		if (!strcmp(q.execute, "status"))
			control__status(r, &s);
		else
			control__stats(r, &s);
	}
	if (q.id[0])
		reply__add(r, ",\"id\":%s", q.id);
	reply__add(r, "}");
}

static void client__close(struct control_client *cl)
{
	close(cl->fd);
	cl->fd = -1;
	cl->len = 0;
}

/* Answer every complete line received; false when the client is done. */
static bool client__serve(struct control *c, struct control_client *cl)
{
	ssize_t n = read(cl->fd, cl->buf + cl->len, sizeof(cl->buf) - cl->len);
	char *nl;

	if (n <= 0)
		return false;
	cl->len += (size_t)n;
	while ((nl = memchr(cl->buf, '\n', cl->len))) {
		struct reply r = { .n = 0 };
		size_t used = (size_t)(nl - cl->buf) + 1;

		*nl = 0;
		if (nl > cl->buf && nl[-1] == '\r')
			nl[-1] = 0;
		control__handle(c, cl->fd, cl->buf, &r);
		if (r.n >= sizeof(r.s))
			r.n = sizeof(r.s) - 1;
		r.s[r.n++] = '\n';
		if (send(cl->fd, r.s, r.n, MSG_NOSIGNAL) != (ssize_t)r.n)
			return false;
		memmove(cl->buf, cl->buf + used, cl->len - used);
		cl->len -= used;
	}
	/* A line longer than the buffer: say so and hang up. */
	if (cl->len == sizeof(cl->buf)) {
		static const char msg[] =
			"{\"error\":{\"class\":\"GenericError\",\"desc\":\"request longer than 4096 bytes\"}}\n";

		send(cl->fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL);
		return false;
	}
	return true;
}

static void *control__thread(void *arg)
{
	struct control *c = arg;

	for (;;) {
		struct pollfd pfd[2 + CONTROL_CLIENTS];
		int n = 2;

		pfd[0] = (struct pollfd){ .fd = c->wake[0], .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
		for (int i = 0; i < CONTROL_CLIENTS; i++)
			pfd[n++] = (struct pollfd){ .fd = c->cl[i].fd,
						    .events = POLLIN };
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		for (int i = 0; i < CONTROL_CLIENTS; i++)
			if (pfd[2 + i].revents && !client__serve(c, &c->cl[i]))
				client__close(&c->cl[i]);
		if (pfd[1].revents & POLLIN) {
			int fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
			int i = 0;

			if (fd < 0)
				continue;
			while (i < CONTROL_CLIENTS && c->cl[i].fd >= 0)
				i++;
			if (i == CONTROL_CLIENTS) {
				static const char busy[] =
					"{\"error\":{\"class\":\"GenericError\",\"desc\":\"too many control connections\"}}\n";

				send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL);
				close(fd);
				continue;
			}
			c->cl[i].fd = fd;
			c->cl[i].len = 0;
		}
	}
	return NULL;
}

/*
 * A socket already at path: stale (nobody accepts: remove it) or in use
 * (refuse: two processes must not share one control path).
 */
static int control__clear(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, err;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return kemari_err(
			-EEXIST,
			"--control=%s exists and is not a socket: name a new path",
			path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	err = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) ? -errno
								    : 0;
	close(fd);
	if (!err)
		return kemari_err(
			-EADDRINUSE,
			"--control=%s: another process listens there: stop it or name another path",
			path);
	return unlink(path) ? -errno : 0;
}

int control__start(struct control **out, const char *path,
		   struct kemari_engine *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct control *c;
	mode_t old;
	int err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return kemari_err(
			-ENAMETOOLONG,
			"--control=%s: a socket path has at most %zu bytes",
			path, sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->e = e;
	snprintf(c->path, sizeof(c->path), "%s", path);
	for (int i = 0; i < CONTROL_CLIENTS; i++)
		c->cl[i].fd = -1;
	err = control__clear(path, &sa);
	if (err)
		goto err_free;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		err = -errno;
		goto err_free;
	}
	/* Mode 0600 from the start: no window where others may connect. */
	old = umask(0177);
	err = bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) ? -errno : 0;
	umask(old);
	if (err)
		goto err_close;
	if (listen(c->fd, 8)) {
		err = -errno;
		goto err_unlink;
	}
	if (pipe2(c->wake, O_CLOEXEC)) {
		err = -errno;
		goto err_unlink;
	}
	err = -pthread_create(&c->thread, NULL, control__thread, c);
	if (err)
		goto err_pipe;
	*out = c;
	return 0;

err_pipe:
	close(c->wake[0]);
	close(c->wake[1]);
err_unlink:
	unlink(path);
err_close:
	close(c->fd);
err_free:
	free(c);
	return kemari_err(err, "--control=%s: %s", path, strerror(-err));
}

void control__stop(struct control *c)
{
	if (!c)
		return;
	if (write(c->wake[1], "x", 1) == 1)
		pthread_join(c->thread, NULL);
	for (int i = 0; i < CONTROL_CLIENTS; i++)
		if (c->cl[i].fd >= 0)
			close(c->cl[i].fd);
	close(c->wake[0]);
	close(c->wake[1]);
	close(c->fd);
	unlink(c->path);
	free(c);
}
