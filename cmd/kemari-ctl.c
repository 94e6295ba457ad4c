// SPDX-License-Identifier: MIT
/*
 * kemari-ctl: ask a running kemari-run over its --control=PATH socket.
 *   kemari-ctl --control=PATH status|stats|stop|switchover [--json]
 * One request line, one answer line (cmd/control.h); readable "key value"
 * lines by default, the answer as received with --json.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kemari/json.h"
#include "kemari/kemari.h"

#define CTL_LINE 4096

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kemari-ctl --control=PATH [--json] status|stats|stop|switchover\n"
		"\n"
		"Ask a kemari-run started with --control=PATH (options may also follow\n"
		"the command):\n"
		"  status   role, state, epoch, peer, guest, recent pauses, uptime\n"
		"  stats    counters: epochs, pages and bytes pushed, pause and phase\n"
		"           totals, heartbeats missed, takeovers\n"
		"  stop     an orderly stop, as SIGTERM\n"
		"  switchover  primary: hand the guest to the secondary at the next\n"
		"           epoch (nothing lost, no heartbeat wait); this side then\n"
		"           waits as its secondary on its --listen, or ends\n"
		"\n"
		"  --control=PATH        the socket (default: $KEMARI_CONTROL)\n"
		"  --json                print the answer as received (one JSON line)\n"
		"  --timeout-ms=N        wait N ms for the answer (default 10000)\n"
		"  -h, --help            this text\n"
		"  --version\n");
}

/* Connect, send one request, read one answer line into buf. */
static int ctl__call(const char *path, const char *cmd, int timeout_ms,
		     char *buf, size_t cap)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct pollfd pfd;
	char req[128];
	size_t len = 0;
	int fd, n, err = 0;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		err = -errno;
		goto out;
	}
	n = snprintf(req, sizeof(req), "{\"execute\":\"%s\"}\n", cmd);
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		err = -errno;
		goto out;
	}
	pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
	while (!memchr(buf, '\n', len)) {
		ssize_t k;

		if (len + 1 >= cap) {
			err = -EMSGSIZE;
			goto out;
		}
		n = poll(&pfd, 1, timeout_ms);
		if (n <= 0) {
			err = n ? -errno : -ETIMEDOUT;
			goto out;
		}
		k = read(fd, buf + len, cap - 1 - len);
		if (k <= 0) {
			err = k ? -errno : -ECONNRESET;
			goto out;
		}
		len += (size_t)k;
	}
	buf[strcspn(buf, "\n")] = 0;
out:
	close(fd);
	return err;
}

struct answer {
	bool error, empty_return;
	char cls[64], desc[256];
	int width;
	bool print;
};

static int answer__scalar(void *ctx, const char *path,
			  enum kemari_json_type type, const char *value)
{
	struct answer *a = ctx;

	(void)type;
	if (!strcmp(path, "error.class"))
		snprintf(a->cls, sizeof(a->cls), "%s", value);
	else if (!strcmp(path, "error.desc"))
		snprintf(a->desc, sizeof(a->desc), "%s", value);
	if (!strncmp(path, "error", 5))
		a->error = true;
	if (!strcmp(path, "return") && type == KEMARI_JSON_EMPTY)
		a->empty_return = true;
	if (a->print && !strncmp(path, "return.", 7))
		printf("%-*s %s\n", a->width, path + 7, value);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = getenv("KEMARI_CONTROL"), *cmd;
	struct answer a = { .width = 24 };
	char buf[CTL_LINE] = "";
	bool json = false;
	int timeout_ms = 10000, ch, err;
	char *end;

	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 't':
			timeout_ms = (int)strtol(optarg, &end, 10);
			if (*end || end == optarg || timeout_ms <= 0) {
				fprintf(stderr,
					"kemari-ctl: error: --timeout-ms=%s: expected a positive number\n",
					optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("kemari-ctl %s\n", KEMARI_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr,
			"kemari-ctl: error: name one command: status, stats, stop or switchover (see --help)\n");
		return 2;
	}
	cmd = argv[optind];
	if (strcmp(cmd, "status") && strcmp(cmd, "stats") &&
	    strcmp(cmd, "stop") && strcmp(cmd, "switchover")) {
		fprintf(stderr,
			"kemari-ctl: error: unknown command '%s': use status, stats, stop or switchover\n",
			cmd);
		return 2;
	}
	if (!path || !*path) {
		fprintf(stderr,
			"kemari-ctl: error: no socket: give --control=PATH (as passed to kemari-run) or set KEMARI_CONTROL\n");
		return 2;
	}
	err = ctl__call(path, cmd, timeout_ms, buf, sizeof(buf));
	if (err) {
		fprintf(stderr, "kemari-ctl: error: --control=%s: %s\n", path,
			err == -ENOENT
				? "no such socket (is kemari-run running with this --control?)"
			: err == -ECONNREFUSED
				? "nobody listens there (has kemari-run ended?)"
			: err == -EACCES
				? "permission denied (the socket is mode 0600: run as its owner)"
			: err == -ETIMEDOUT ? "no answer in time (--timeout-ms)"
					    : strerror(-err));
		return 1;
	}
	if (kemari_json__walk(buf, answer__scalar, &a)) {
		fprintf(stderr, "kemari-ctl: error: malformed answer: %s\n",
			buf);
		return 1;
	}
	if (a.error) {
		fprintf(stderr, "kemari-ctl: error: %s (%s)\n", a.desc, a.cls);
		return 1;
	}
	if (json) {
		printf("%s\n", buf);
		return 0;
	}
	if (a.empty_return && !strcmp(cmd, "switchover")) {
		printf("switching over: the secondary takes the guest at the next epoch\n");
		return 0;
	}
	if (a.empty_return) {
		printf("stopping: the guest is paused, the disk flushed, then kemari-run exits\n");
		return 0;
	}
	a.print = true;
	kemari_json__walk(buf, answer__scalar, &a);
	return 0;
}
