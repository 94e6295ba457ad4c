// SPDX-License-Identifier: MIT
/*
 * kemari-run: run a guest on the built-in KVM VMM, standalone or replicated
 * (primary/secondary). Only here may the program exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "kemari/auth.h"
#include "kemari/config.h"
#include "kemari/engine.h"
#include "kemari/kemari.h"
#include "metrics-http.h"

/* What the signal handlers act on: set once created, cleared before the
 * engine is destroyed (a SIGTERM during the teardown used it freed). */
static struct kemari_engine *_Atomic g_engine;
static const char *g_metrics; /* --metrics=HOST:PORT */
static const char *g_control; /* --control=PATH */
static const char *g_gen_key; /* --gen-key=FILE: only that */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kemari-run --guest=ELF [options]\n"
		"\n"
		"Run a guest on the built-in KVM VMM, alone or protected by a secondary.\n"
		"\n"
		"Roles:\n"
		"  --role=standalone|primary|secondary  (default standalone)\n"
		"  --transport=NAME      tcp, rdma or ofi (default tcp); see --list-transports\n"
		"  --peer=HOST:PORT      primary: the secondary to replicate to; secondary:\n"
		"                        where a new secondary listens once it took over\n"
		"  --listen=HOST:PORT    secondary: where to wait for the primary; primary:\n"
		"                        where to wait as the secondary after a switchover\n"
		"  --provider=NAME       ofi: libfabric provider (default: best offered)\n"
		"  --auth-key=FILE       both sides: the shared 32-byte key; each side proves\n"
		"                        it holds it (HMAC-SHA256) before anything else\n"
		"  --gen-key=FILE        write a new random key to FILE (mode 0600) and exit\n"
		"  --insecure            secondary: listen on a non-loopback address without\n"
		"                        --auth-key (refused otherwise)\n"
		"  --tls                 both sides, tcp: encrypt the link (TLS 1.3, its key\n"
		"                        derived from --auth-key; no certificates)\n"
		"\n"
		"Guest:\n"
		"  --guest=ELF           guest image (both sides name the same file)\n"
		"  --kernel=BZIMAGE      a Linux kernel instead (a PC with a serial console,\n"
		"                        virtio-pci disk and network); both sides the same\n"
		"  --initrd=FILE         its initramfs; --append=CMDLINE its command line\n"
		"  --console-log=PATH    the guest's serial console into PATH (default stdout)\n"
		"  --hv=kvm|synth        kvm: the built-in KVM VMM (default); synth: no VM,\n"
		"                        a host thread runs the dirtier's workload (pages=,\n"
		"                        ws=, rounds=, think_us=; --disk is its output file):\n"
		"                        the engine and transports measured without KVM\n"
		"  --mem=SIZE            guest RAM, K/M/G suffixes (default 64M)\n"
		"  --cpus=N              vCPUs (default 1)\n"
		"  --disk=PATH           block device backing file (shared by both sides)\n"
		"  --disk-size=SIZE      size when --disk is created (default 64M)\n"
		"  --fence=PATH          the fence record of the shared disk (default\n"
		"                        DISK.kemari with --disk; none without): its\n"
		"                        identity and generation; after losing its peer a\n"
		"                        side serves only once it has won it; none: no\n"
		"                        fencing (both sides; disks not shared)\n"
		"  --net=udp:HOST:PORT   net device service address (both sides; the\n"
		"                        secondary binds it only when it takes over)\n"
		"  --guest-arg=KEY=VAL   workload parameter for the guest (repeatable)\n"
		"  --tap-console         also synchronize at console output\n"
		"  --dirty-track=MODE    auto, ring (KVM dirty ring: cost follows the dirty\n"
		"                        set) or bitmap (KVM_GET_DIRTY_LOG); default auto:\n"
		"                        the ring, but the bitmap where KVM is PVM\n"
		"\n"
		"Replication:\n"
		"  --heartbeat-ms=N            heartbeat period (default 20)\n"
		"  --heartbeat-timeout-ms=N    peer declared dead after N ms of silence (default 200)\n"
		"  --connect-timeout-ms=N      primary: keep trying to reach the peer for N ms (default 10000)\n"
		"  --reprotect-ms=N      serving alone (secondary lost, or taken over), try\n"
		"                        --peer for a new secondary every N ms (default 1000;\n"
		"                        0: never)\n"
		"  --on-secondary-loss=continue|pause  primary's policy (default continue)\n"
		"  --stats=PATH                per-epoch metrics as JSON lines\n"
		"  --speculate-us=N            push dirty pages every N us while the guest\n"
		"                              runs, so the tap sends only the rest (0: off)\n"
		"  --full-copy                 baseline: copy all of RAM at every epoch\n"
		"  --fault=PHASE[:EPOCH]       testing: primary crashes (SIGKILL) at PHASE of\n"
		"                              epoch EPOCH or later; PHASE is sync, before-push,\n"
		"                              mid-push, after-push, after-commit or after-ack;\n"
		"                              guest-crash: the primary's guest triple-faults\n"
		"                              after the ack of EPOCH (the VMM lives on);\n"
		"                              freeze-after-ack: the primary stops itself\n"
		"                              (SIGSTOP) after the ack of EPOCH, before its\n"
		"                              output (SIGCONT resumes it);\n"
		"                              EPOCH SIGUSR2: the first epoch begun after a\n"
		"                              SIGUSR2 (e.g. once a Linux guest serves)\n"
		"  --stretch-pause=MS[:EVERY]  testing: sleep MS ms inside the paused window of\n"
		"                              every EVERY-th epoch (default 100)\n"
		"  --verify-replica[=EVERY]    testing: hash every page at every (EVERY-th)\n"
		"                              commit; the primary names pages changed but not\n"
		"                              reported, the secondary replica pages that differ\n"
		"  --verify-restore            testing: after every epoch the primary loads its\n"
		"                              own saved vCPU, platform and device state back\n"
		"                              before the guest resumes (finds missing state)\n"
		"\n"
		"Other:\n"
		"  --no-progress         no initial-sync progress bar\n"
		"  -q, --quiet           warnings and errors only\n"
		"  -v, --verbose         debug messages\n"
		"  --list-transports     transports compiled in\n"
		"  --metrics=HOST:PORT   serve Prometheus metrics on http://HOST:PORT/metrics\n"
		"  --control=PATH        a control socket (mode 0600) for kemari-ctl\n"
		"  --config=FILE         settings from FILE, one KEY = VALUE per line, the\n"
		"                        keys the long options (the command line wins)\n"
		"  -h, --help            this text\n"
		"  --version\n"
		"\n"
		"Signals: SIGINT/SIGTERM stop cleanly (guest paused, disk flushed; the\n"
		"sender's pid logged); SIGUSR1 prints the pause-time summary; SIGUSR2\n"
		"arms --fault=PHASE:SIGUSR2. SIGHUP is not handled (a crash: the\n"
		"secondary takes over).\n");
}

/*
 * The first stop signal and its sender, as the handler found them. A
 * handler may only record (async-signal-safe); the line is logged by the
 * stop watcher (a thread, woken through g_sig_pipe) at once, or by main()
 * once the run has ended, whichever comes first (control__note_stop()
 * keeps it to one line).
 */
static atomic_int g_stop_signo;
static atomic_int g_stop_pid;
static atomic_uint g_stop_uid;
static atomic_int g_stop_code;
static int g_sig_pipe[2] = { -1, -1 };

static void on_stop(int sig, siginfo_t *si, void *uctx)
{
	struct kemari_engine *e = atomic_load(&g_engine);
	int none = 0, saved = errno;

	(void)uctx;
	if (atomic_compare_exchange_strong(&g_stop_signo, &none, sig)) {
		atomic_store(&g_stop_pid, si ? (int)si->si_pid : 0);
		atomic_store(&g_stop_uid, si ? (unsigned int)si->si_uid : 0);
		atomic_store(&g_stop_code, si ? si->si_code : SI_KERNEL);
		if (g_sig_pipe[1] >= 0 && write(g_sig_pipe[1], "s", 1) < 0) {
			/* main() says it at the end instead */
		}
	}
	if (e)
		kemari_engine__stop(e);
	errno = saved;
}

/* "stopping on SIGTERM from pid 1234 (bash)", once, outside the handler. */
static void note_stop_signal(void)
{
	int sig = atomic_load(&g_stop_signo);
	int pid = atomic_load(&g_stop_pid);
	unsigned int uid = atomic_load(&g_stop_uid);
	char who[96], extra[48] = "";

	if (!sig)
		return;
	/* SI_USER/SI_QUEUE/SI_TKILL: kill(2) and friends, with a sender. */
	if (atomic_load(&g_stop_code) <= 0 && pid > 0) {
		control__describe_pid(pid, who, sizeof(who));
		if (uid != (unsigned int)getuid())
			snprintf(extra, sizeof(extra), ", uid %u", uid);
		control__note_stop("stopping on SIG%s from %s%s",
				   sigabbrev_np(sig) ? sigabbrev_np(sig) : "?",
				   who, extra);
	} else {
		/* The kernel's: a terminal's interrupt key (Ctrl-C). */
		control__note_stop(
			"stopping on SIG%s from the kernel (the terminal?)",
			sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
	}
}

static void *stop_watcher(void *arg)
{
	char c;

	(void)arg;
	while (read(g_sig_pipe[0], &c, 1) < 0 && errno == EINTR)
		;
	note_stop_signal();
	return NULL;
}

static void on_summary(int sig)
{
	(void)sig;
	struct kemari_engine *e = atomic_load(&g_engine);

	if (e)
		kemari_engine__request_summary(e);
}

static void on_arm_fault(int sig)
{
	(void)sig;
	struct kemari_engine *e = atomic_load(&g_engine);

	if (e)
		kemari_engine__arm_fault(e);
}

static void fault_kill(enum kemari_fault f, uint64_t epoch)
{
	(void)epoch;
	/* A host frozen between the ack and the output: SIGCONT resumes it. */
	if (f == KEMARI_FAULT_FREEZE_AFTER_ACK) {
		kill(getpid(), SIGSTOP);
		return;
	}
	/* A crash, not an exit: nothing gets flushed or said to the peer. */
	kill(getpid(), SIGKILL);
}

enum {
	OPT_ROLE = 256,
	OPT_TRANSPORT,
	OPT_PEER,
	OPT_LISTEN,
	OPT_PROVIDER,
	OPT_AUTH_KEY,
	OPT_GEN_KEY,
	OPT_INSECURE,
	OPT_TLS,
	OPT_GUEST,
	OPT_KERNEL,
	OPT_INITRD,
	OPT_APPEND,
	OPT_CONSOLE_LOG,
	OPT_HV,
	OPT_MEM,
	OPT_CPUS,
	OPT_DISK,
	OPT_DISK_SIZE,
	OPT_NET,
	OPT_GUEST_ARG,
	OPT_TAP_CONSOLE,
	OPT_DIRTY_TRACK,
	OPT_HB,
	OPT_HB_TIMEOUT,
	OPT_CONNECT_TIMEOUT,
	OPT_REPROTECT,
	OPT_ON_LOSS,
	OPT_STATS,
	OPT_SPECULATE,
	OPT_FULL_COPY,
	OPT_FAULT,
	OPT_STRETCH,
	OPT_VERIFY_REPLICA,
	OPT_VERIFY_RESTORE,
	OPT_NO_PROGRESS,
	OPT_LIST_TRANSPORTS,
	OPT_VERSION,
	OPT_CONFIG,
	OPT_METRICS,
	OPT_CONTROL,
	OPT_FENCE,
};

static const struct option long_opts[] = {
	{ "role", required_argument, NULL, OPT_ROLE },
	{ "transport", required_argument, NULL, OPT_TRANSPORT },
	{ "peer", required_argument, NULL, OPT_PEER },
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "provider", required_argument, NULL, OPT_PROVIDER },
	{ "auth-key", required_argument, NULL, OPT_AUTH_KEY },
	{ "gen-key", required_argument, NULL, OPT_GEN_KEY },
	{ "insecure", no_argument, NULL, OPT_INSECURE },
	{ "tls", no_argument, NULL, OPT_TLS },
	{ "guest", required_argument, NULL, OPT_GUEST },
	{ "kernel", required_argument, NULL, OPT_KERNEL },
	{ "initrd", required_argument, NULL, OPT_INITRD },
	{ "append", required_argument, NULL, OPT_APPEND },
	{ "console-log", required_argument, NULL, OPT_CONSOLE_LOG },
	{ "hv", required_argument, NULL, OPT_HV },
	{ "mem", required_argument, NULL, OPT_MEM },
	{ "cpus", required_argument, NULL, OPT_CPUS },
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "disk-size", required_argument, NULL, OPT_DISK_SIZE },
	{ "fence", required_argument, NULL, OPT_FENCE },
	{ "net", required_argument, NULL, OPT_NET },
	{ "guest-arg", required_argument, NULL, OPT_GUEST_ARG },
	{ "tap-console", no_argument, NULL, OPT_TAP_CONSOLE },
	{ "dirty-track", required_argument, NULL, OPT_DIRTY_TRACK },
	{ "heartbeat-ms", required_argument, NULL, OPT_HB },
	{ "heartbeat-timeout-ms", required_argument, NULL, OPT_HB_TIMEOUT },
	{ "connect-timeout-ms", required_argument, NULL, OPT_CONNECT_TIMEOUT },
	{ "reprotect-ms", required_argument, NULL, OPT_REPROTECT },
	{ "on-secondary-loss", required_argument, NULL, OPT_ON_LOSS },
	{ "stats", required_argument, NULL, OPT_STATS },
	{ "speculate-us", required_argument, NULL, OPT_SPECULATE },
	{ "full-copy", no_argument, NULL, OPT_FULL_COPY },
	{ "fault", required_argument, NULL, OPT_FAULT },
	{ "stretch-pause", required_argument, NULL, OPT_STRETCH },
	{ "verify-replica", optional_argument, NULL, OPT_VERIFY_REPLICA },
	{ "verify-restore", no_argument, NULL, OPT_VERIFY_RESTORE },
	{ "no-progress", no_argument, NULL, OPT_NO_PROGRESS },
	{ "list-transports", no_argument, NULL, OPT_LIST_TRANSPORTS },
	{ "quiet", no_argument, NULL, 'q' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "metrics", required_argument, NULL, OPT_METRICS },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ NULL, 0, NULL, 0 },
};

/* --config=FILE: its settings, and where the option being parsed came from
 * ("" or "FILE:LINE: ") for the error lines. */
static struct kemari_conf g_conf;
static char g_where[300];

static void opt_error(const char *fmt, ...) KEMARI_PRINTF(1, 2);
static void opt_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kemari-run: error: %s", g_where);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/* Word i of the merged arguments: from the file, or the command line. */
static void opt_where(int i)
{
	unsigned int line = kemari_conf__line(&g_conf, i);

	g_where[0] = 0;
	if (line)
		snprintf(g_where, sizeof(g_where), "%s:%u: ", g_conf.path,
			 line);
}

/*
 * With --config=FILE, the file's settings go through getopt_long ahead of
 * the command line's options (which thereby win): *argc and *argv become
 * the merged vector. The keys are every long option but the actions.
 */
static int load_config(int *argc, char ***argv)
{
	static const char *const actions[] = { "config", "help", "version",
					       "list-transports", "gen-key" };
	struct option conf_opts[KEMARI_ARRAY_SIZE(long_opts)];
	const char *path = NULL;
	unsigned int n = 0;
	int c, err;

	opterr = 0;
	while ((c = getopt_long(*argc, *argv, "qvh", long_opts, NULL)) != -1)
		if (c == OPT_CONFIG)
			path = optarg;
	opterr = 1;
	optind = 0; /* glibc: start over, fully */
	if (!path)
		return 0;
	for (unsigned int i = 0; long_opts[i].name; i++) {
		bool action = false;

		for (unsigned int j = 0; j < KEMARI_ARRAY_SIZE(actions); j++)
			action |= !strcmp(long_opts[i].name, actions[j]);
		if (!action)
			conf_opts[n++] = long_opts[i];
	}
	conf_opts[n] = (struct option){ 0 };
	err = kemari_conf__load(&g_conf, path, conf_opts);
	err = err ?: kemari_conf__argv(&g_conf, *argc, *argv);
	if (err) {
		fprintf(stderr, "kemari-run: error: %s\n",
			kemari_last_error(err));
		return err;
	}
	*argc = g_conf.argc;
	*argv = g_conf.argv;
	return 0;
}

static int parse_uint(const char *opt, const char *s, unsigned int min,
		      unsigned int max, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v < min || v > max) {
		opt_error("--%s=%s: expected a number from %u to %u\n", opt, s,
			  min, max);
		return -EINVAL;
	}
	*out = (unsigned int)v;
	return 0;
}

static int parse_size_opt(const char *opt, const char *s, uint64_t *out)
{
	if (kemari_parse_size(s, out)) {
		opt_error("--%s=%s: expected a size like 64M, 1G or 4096\n",
			  opt, s);
		return -EINVAL;
	}
	return 0;
}

/* --fence=none: no fencing even with a --disk (disks not shared). */
static bool g_no_fence;

static const char *role_name(enum kemari_role r)
{
	return r == KEMARI_ROLE_PRIMARY	    ? "primary"
	       : r == KEMARI_ROLE_SECONDARY ? "secondary"
					    : "standalone";
}

static int parse_args(int argc, char **argv, struct kemari_engine_cfg *cfg)
{
	const char *transport = "tcp";
	int c;

	memset(cfg, 0, sizeof(*cfg));
	cfg->role = KEMARI_ROLE_STANDALONE;
	cfg->hv = kemari_hv_find("kvm");
	cfg->hv_cfg.mem_size = 64ULL << 20;
	cfg->hv_cfg.ncpus = 1;
	cfg->hv_cfg.disk_size = 64ULL << 20;
	cfg->heartbeat_ms = 20;
	cfg->heartbeat_timeout_ms = 200;
	cfg->reprotect_ms = 1000;
	cfg->xport_opts.connect_timeout_ms = 10000;
	cfg->progress = true;
	cfg->fault_hook = fault_kill;

	if (load_config(&argc, &argv))
		return -EINVAL;
	while ((c = getopt_long(argc, argv, "qvh", long_opts, NULL)) != -1) {
		opt_where(optind - 1);
		switch (c) {
		case OPT_CONFIG:
			break;
		case OPT_METRICS: {
			struct sockaddr_in sa;

			if (kemari_parse_sockaddr(optarg, &sa)) {
				opt_error(
					"--metrics=%s: expected IPV4:PORT, e.g. 127.0.0.1:9460\n",
					optarg);
				return -EINVAL;
			}
			g_metrics = optarg;
			break;
		}
		case OPT_CONTROL:
			g_control = optarg;
			break;
		case OPT_ROLE:
			if (!strcmp(optarg, "standalone"))
				cfg->role = KEMARI_ROLE_STANDALONE;
			else if (!strcmp(optarg, "primary"))
				cfg->role = KEMARI_ROLE_PRIMARY;
			else if (!strcmp(optarg, "secondary"))
				cfg->role = KEMARI_ROLE_SECONDARY;
			else {
				opt_error(
					"--role=%s: use standalone, primary or secondary\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_TRANSPORT:
			transport = optarg;
			break;
		case OPT_PEER:
			cfg->peer = optarg;
			break;
		case OPT_LISTEN:
			cfg->listen = optarg;
			break;
		case OPT_PROVIDER:
			cfg->xport_opts.provider = optarg;
			break;
		case OPT_AUTH_KEY:
			cfg->auth_key_path = optarg;
			break;
		case OPT_GEN_KEY:
			g_gen_key = optarg;
			break;
		case OPT_INSECURE:
			cfg->insecure = true;
			break;
		case OPT_TLS:
			cfg->tls = true;
			break;
		case OPT_GUEST:
			cfg->guest_path = optarg;
			break;
		case OPT_KERNEL:
			cfg->hv_cfg.kernel = optarg;
			break;
		case OPT_INITRD:
			cfg->hv_cfg.initrd = optarg;
			break;
		case OPT_APPEND:
			cfg->hv_cfg.cmdline = optarg;
			break;
		case OPT_CONSOLE_LOG:
			cfg->hv_cfg.console_log = optarg;
			break;
		case OPT_HV:
			cfg->hv = kemari_hv_find(optarg);
			if (!cfg->hv) {
				opt_error("--hv=%s: use kvm or synth\n",
					  optarg);
				return -EINVAL;
			}
			break;
		case OPT_MEM:
			if (parse_size_opt("mem", optarg,
					   &cfg->hv_cfg.mem_size))
				return -EINVAL;
			break;
		case OPT_CPUS:
			if (parse_uint("cpus", optarg, 1, 8,
				       &cfg->hv_cfg.ncpus))
				return -EINVAL;
			break;
		case OPT_FENCE:
			g_no_fence = !strcmp(optarg, "none");
			cfg->fence_path = g_no_fence ? NULL : optarg;
			break;
		case OPT_DISK:
			cfg->hv_cfg.disk_path = optarg;
			break;
		case OPT_DISK_SIZE:
			if (parse_size_opt("disk-size", optarg,
					   &cfg->hv_cfg.disk_size))
				return -EINVAL;
			break;
		case OPT_NET:
			cfg->hv_cfg.net = optarg;
			break;
		case OPT_GUEST_ARG:
			if (cfg->hv_cfg.nguest_args >= KEMARI_MAX_GUEST_ARGS) {
				opt_error("at most %d --guest-arg options\n",
					  KEMARI_MAX_GUEST_ARGS);
				return -EINVAL;
			}
			cfg->hv_cfg.guest_args[cfg->hv_cfg.nguest_args++] =
				optarg;
			break;
		case OPT_TAP_CONSOLE:
			cfg->hv_cfg.tap_console = 1;
			break;
		case OPT_DIRTY_TRACK:
			if (!strcmp(optarg, "auto"))
				cfg->hv_cfg.dirty_track = KEMARI_DIRTY_AUTO;
			else if (!strcmp(optarg, "ring"))
				cfg->hv_cfg.dirty_track = KEMARI_DIRTY_RING;
			else if (!strcmp(optarg, "bitmap"))
				cfg->hv_cfg.dirty_track = KEMARI_DIRTY_BITMAP;
			else {
				opt_error(
					"--dirty-track=%s: use auto, ring or bitmap\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_HB:
			if (parse_uint("heartbeat-ms", optarg, 1, 60000,
				       &cfg->heartbeat_ms))
				return -EINVAL;
			break;
		case OPT_HB_TIMEOUT:
			if (parse_uint("heartbeat-timeout-ms", optarg, 2,
				       600000, &cfg->heartbeat_timeout_ms))
				return -EINVAL;
			break;
		case OPT_CONNECT_TIMEOUT:
			if (parse_uint("connect-timeout-ms", optarg, 0, 3600000,
				       &cfg->xport_opts.connect_timeout_ms))
				return -EINVAL;
			break;
		case OPT_REPROTECT:
			if (parse_uint("reprotect-ms", optarg, 0, 3600000,
				       &cfg->reprotect_ms))
				return -EINVAL;
			break;
		case OPT_ON_LOSS:
			if (!strcmp(optarg, "continue"))
				cfg->on_secondary_loss = KEMARI_LOSS_CONTINUE;
			else if (!strcmp(optarg, "pause"))
				cfg->on_secondary_loss = KEMARI_LOSS_PAUSE;
			else {
				opt_error(
					"--on-secondary-loss=%s: use continue or pause\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_STATS:
			cfg->stats_path = optarg;
			break;
		case OPT_SPECULATE:
			if (parse_uint("speculate-us", optarg, 0, 10000000,
				       &cfg->speculate_us))
				return -EINVAL;
			break;
		case OPT_FULL_COPY:
			cfg->full_copy = true;
			break;
		case OPT_FAULT:
			if (kemari_fault__parse(optarg, &cfg->fault,
						&cfg->fault_epoch)) {
				opt_error(
					"--fault=%s: use PHASE[:EPOCH|:SIGUSR2] with PHASE one of sync, before-push, mid-push, after-push, after-commit, after-ack, guest-crash, freeze-after-ack\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_STRETCH: {
			char ms[32], *colon;

			snprintf(ms, sizeof(ms), "%s", optarg);
			colon = strchr(ms, ':');
			cfg->stretch_every = 100;
			if (colon) {
				*colon = 0;
				if (parse_uint("stretch-pause EVERY", colon + 1,
					       1, 1000000, &cfg->stretch_every))
					return -EINVAL;
			}
			if (parse_uint("stretch-pause", ms, 0, 600000,
				       &cfg->stretch_pause_ms))
				return -EINVAL;
			break;
		}
		case OPT_VERIFY_REPLICA:
			cfg->verify_every = 1;
			if (optarg && parse_uint("verify-replica", optarg, 1,
						 1000000, &cfg->verify_every))
				return -EINVAL;
			break;
		case OPT_VERIFY_RESTORE:
			cfg->verify_restore = true;
			break;
		case OPT_NO_PROGRESS:
			cfg->progress = false;
			break;
		case OPT_LIST_TRANSPORTS:
			for (unsigned int i = 0; kemari_xport_backends[i]; i++)
				printf("%s\n", kemari_xport_backends[i]->name);
			return 1;
		case 'q':
			kemari_log_set_level(KEMARI_LOG_WARN);
			break;
		case 'v':
			kemari_log_set_level(KEMARI_LOG_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 1;
		case OPT_VERSION:
			printf("kemari-run %s\n", KEMARI_VERSION);
			return 1;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	g_where[0] = 0;
	if (optind < argc) {
		fprintf(stderr,
			"kemari-run: error: unexpected argument '%s' (see --help)\n",
			argv[optind]);
		return -EINVAL;
	}
	if (g_gen_key)
		return 0; /* nothing else applies */
	if (cfg->guest_path && cfg->hv_cfg.kernel) {
		fprintf(stderr,
			"kemari-run: error: --guest=ELF and --kernel=BZIMAGE exclude each other: pick a freestanding image or a Linux kernel\n");
		return -EINVAL;
	}
	if (cfg->verify_restore && cfg->role != KEMARI_ROLE_PRIMARY) {
		fprintf(stderr,
			"kemari-run: error: --verify-restore checks the state a primary saves each epoch: use it with --role=primary\n");
		return -EINVAL;
	}
	if ((cfg->hv_cfg.initrd || cfg->hv_cfg.cmdline) &&
	    !cfg->hv_cfg.kernel) {
		fprintf(stderr,
			"kemari-run: error: --initrd and --append need --kernel=BZIMAGE\n");
		return -EINVAL;
	}
	if (!cfg->guest_path && !cfg->hv_cfg.kernel &&
	    strcmp(cfg->hv->name, "synth")) {
		fprintf(stderr,
			"kemari-run: error: --guest=ELF or --kernel=BZIMAGE is required (e.g. --guest=build/guests/kvstore.elf)\n");
		return -EINVAL;
	}
	if (cfg->role == KEMARI_ROLE_PRIMARY && !cfg->peer) {
		fprintf(stderr,
			"kemari-run: error: --role=primary needs --peer=HOST:PORT of the secondary\n");
		return -EINVAL;
	}
	if (cfg->role == KEMARI_ROLE_SECONDARY && !cfg->listen) {
		fprintf(stderr,
			"kemari-run: error: --role=secondary needs --listen=HOST:PORT\n");
		return -EINVAL;
	}
	/* The fence lives beside the shared disk unless moved (--fence);
	 * a guest without a disk is fenced only with --fence. */
	if (cfg->role != KEMARI_ROLE_STANDALONE && !cfg->fence_path &&
	    !g_no_fence && cfg->hv_cfg.disk_path) {
		static char fence[4096];

		if ((size_t)snprintf(fence, sizeof(fence), "%s.kemari",
				     cfg->hv_cfg.disk_path) >= sizeof(fence)) {
			fprintf(stderr,
				"kemari-run: error: --disk=%s: path too long\n",
				cfg->hv_cfg.disk_path);
			return -EINVAL;
		}
		cfg->fence_path = fence;
	}
	if (cfg->role == KEMARI_ROLE_STANDALONE)
		cfg->fence_path = NULL;
	if (cfg->heartbeat_timeout_ms <= cfg->heartbeat_ms) {
		fprintf(stderr,
			"kemari-run: error: --heartbeat-timeout-ms (%u) must exceed --heartbeat-ms (%u)\n",
			cfg->heartbeat_timeout_ms, cfg->heartbeat_ms);
		return -EINVAL;
	}
	if (cfg->role != KEMARI_ROLE_STANDALONE) {
		cfg->xport = kemari_xport_find(transport);
		if (!cfg->xport) {
			char list[256] = "";

			for (unsigned int i = 0; kemari_xport_backends[i];
			     i++) {
				strncat(list, i ? ", " : "",
					sizeof(list) - strlen(list) - 1);
				strncat(list, kemari_xport_backends[i]->name,
					sizeof(list) - strlen(list) - 1);
			}
			fprintf(stderr,
				"kemari-run: error: --transport=%s is not available in this build (have: %s); install its library with 'make deps' and rebuild\n",
				transport, list);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * The run is over: the stop watcher ends (its wake-up byte), and a stop
 * signal it has not said yet is said here, on the main thread.
 */
static void ended(pthread_t *watcher)
{
	if (watcher) {
		if (write(g_sig_pipe[1], "e", 1) == 1)
			pthread_join(*watcher, NULL);
		else
			pthread_detach(*watcher);
	}
	note_stop_signal();
}

/* --gen-key=FILE: a new key, one line either way. */
static int gen_key(const char *path)
{
	int err = kemari_auth__gen_key(path);

	if (err) {
		fprintf(stderr, "kemari-run: error: %s\n",
			kemari_last_error(err));
		return 1;
	}
	printf("kemari-run: wrote a new %d-byte key to %s (mode 0600): give both sides --auth-key=%s\n",
	       KEMARI_AUTH_KEY_LEN, path, path);
	return 0;
}

int main(int argc, char **argv)
{
	struct metrics_http *metrics = NULL;
	struct control *control = NULL;
	struct kemari_engine *eng = NULL;
	struct kemari_engine_cfg cfg;
	struct sigaction sa;
	pthread_t watcher;
	bool watching = false;
	char prefix[64];
	int ret;

	ret = parse_args(argc, argv, &cfg);
	if (!ret && g_gen_key)
		return gen_key(g_gen_key);
	if (ret)
		return ret > 0 ? 0 : 2;
	snprintf(prefix, sizeof(prefix), "kemari-run[%s]", role_name(cfg.role));
	kemari_log_set_prefix(prefix);
	cfg.hv_cfg.console_prefix = cfg.role == KEMARI_ROLE_SECONDARY
					    ? "guest(secondary): "
					    : "guest: ";

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a blocking call of the engine's must see EINTR
	 * and the stop flag. SIGHUP keeps its default (the end of the
	 * process, unlogged: a crash, which the secondary takes over). */
	sa.sa_flags = SA_SIGINFO;
	sa.sa_sigaction = on_stop;
	if (!pipe2(g_sig_pipe, O_CLOEXEC) &&
	    !pthread_create(&watcher, NULL, stop_watcher, NULL))
		watching = true;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_flags = 0;
	sa.sa_handler = on_summary;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_arm_fault;
	sigaction(SIGUSR2, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	ret = kemari_engine__create(&eng, &cfg);
	if (!ret) {
		atomic_store(&g_engine, eng);
		/* A stop signal while creating found no engine to stop. */
		if (atomic_load(&g_stop_signo))
			kemari_engine__stop(eng);
	}
	if (ret) {
		ended(watching ? &watcher : NULL);
		fprintf(stderr, "%s: error: %s\n", prefix,
			kemari_last_error(ret));
		return 1;
	}
	if (g_metrics) {
		ret = metrics_http__start(&metrics, g_metrics, eng);
		if (ret) {
			ended(watching ? &watcher : NULL);
			fprintf(stderr, "%s: error: %s\n", prefix,
				kemari_last_error(ret));
			atomic_store(&g_engine, NULL);
			kemari_engine__destroy(eng);
			return 1;
		}
	}
	if (g_control) {
		ret = control__start(&control, g_control, eng);
		if (ret) {
			ended(watching ? &watcher : NULL);
			fprintf(stderr, "%s: error: %s\n", prefix,
				kemari_last_error(ret));
			metrics_http__stop(metrics);
			atomic_store(&g_engine, NULL);
			kemari_engine__destroy(eng);
			return 1;
		}
	}
	ret = kemari_engine__run(eng);
	control__stop(control);
	metrics_http__stop(metrics);
	/* The stop signal's line, before what followed from it. */
	ended(watching ? &watcher : NULL);
	if (cfg.role == KEMARI_ROLE_PRIMARY)
		kemari_engine__summary(eng, stderr);
	atomic_store(&g_engine, NULL);
	/* The devices' last words (the guest's console) before ours. */
	kemari_engine__destroy(eng);
	if (ret < 0) {
		fprintf(stderr, "%s: error: %s\n", prefix,
			kemari_last_error(ret));
		return 1;
	}
	return ret > 255 ? 255 : ret;
}
