// SPDX-License-Identifier: MIT
/*
 * kemari-run --metrics=HOST:PORT: GET /metrics answers with the engine's
 * counters in the Prometheus text format (core/prom.c), served by
 * libmicrohttpd's own thread. Optional: without libmicrohttpd the option
 * fails with a line saying how to get it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kemari/kemari.h"
#include "metrics-http.h"

#ifdef HAVE_MICROHTTPD
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kemari/prom.h"

struct metrics_http {
	struct MHD_Daemon *d;
	struct kemari_engine *e;
	int fd;
};

static enum MHD_Result metrics_http__answer(void *cls, struct MHD_Connection *c,
					    const char *url, const char *method,
					    const char *version,
					    const char *upload,
					    size_t *upload_len, void **req)
{
	struct metrics_http *h = cls;
	struct kemari_engine_stats s;
	struct kemari_buf b = { 0 };
	struct MHD_Response *r;
	unsigned int code = MHD_HTTP_OK;
	enum MHD_Result ret;
	static const char not_found[] = "GET /metrics\n";

	(void)version;
	(void)upload;
	(void)upload_len;
	(void)req;
	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		code = MHD_HTTP_METHOD_NOT_ALLOWED;
		r = MHD_create_response_from_buffer(sizeof(not_found) - 1,
						    (void *)not_found,
						    MHD_RESPMEM_PERSISTENT);
	} else if (strcmp(url, "/metrics") && strcmp(url, "/")) {
		code = MHD_HTTP_NOT_FOUND;
		r = MHD_create_response_from_buffer(sizeof(not_found) - 1,
						    (void *)not_found,
						    MHD_RESPMEM_PERSISTENT);
	} else if (kemari_engine__stats(h->e, &s) ||
		   kemari_prom__render(&s, &b)) {
		kemari_buf__fini(&b);
		return MHD_NO;
	} else {
		r = MHD_create_response_from_buffer(b.len, b.data,
						    MHD_RESPMEM_MUST_FREE);
		b.data = NULL;
	}
	kemari_buf__fini(&b);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
				"text/plain; version=0.0.4; charset=utf-8");
	ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

int metrics_http__start(struct metrics_http **out, const char *addr,
			struct kemari_engine *e)
{
	struct metrics_http *h;
	struct sockaddr_in sa;
	int one = 1, err;

	err = kemari_parse_sockaddr(addr, &sa);
	if (err)
		return err;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->e = e;
	/* Our own socket: a taken port is an error naming it, not NULL. */
	h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (h->fd < 0) {
		err = -errno;
		goto err_free;
	}
	setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(h->fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(h->fd, 16)) {
		err = -errno;
		goto err_close;
	}
	h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
				metrics_http__answer, h,
				MHD_OPTION_LISTEN_SOCKET, h->fd,
				MHD_OPTION_CONNECTION_TIMEOUT, 10u,
				MHD_OPTION_END);
	if (!h->d) {
		err = -EIO;
		goto err_close;
	}
	*out = h;
	return 0;

err_close:
	close(h->fd);
err_free:
	free(h);
	return kemari_err(err, "--metrics=%s: %s", addr,
			  err == -EIO ? "the HTTP server did not start"
				      : strerror(-err));
}

void metrics_http__stop(struct metrics_http *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->d);
	close(h->fd);
	free(h);
}

#else /* !HAVE_MICROHTTPD */

int metrics_http__start(struct metrics_http **out, const char *addr,
			struct kemari_engine *e)
{
	(void)out;
	(void)e;
	return kemari_err(
		-ENOSYS,
		"--metrics=%s: this kemari-run was built without libmicrohttpd: run 'make deps' and rebuild",
		addr);
}

void metrics_http__stop(struct metrics_http *h)
{
	(void)h;
}

#endif
