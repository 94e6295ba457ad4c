// SPDX-License-Identifier: MIT
/* Configuration files (core/config.c): syntax, errors with the line, and
 * the command line overriding the file through getopt_long. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kemari/config.h"
#include "kemari/kemari.h"

enum { O_MEM = 256, O_ROLE, O_APPEND, O_GARG, O_VERIFY, O_SWITCH };

static const struct option opts[] = {
	{ "mem", required_argument, NULL, O_MEM },
	{ "role", required_argument, NULL, O_ROLE },
	{ "append", required_argument, NULL, O_APPEND },
	{ "guest-arg", required_argument, NULL, O_GARG },
	{ "verify-replica", optional_argument, NULL, O_VERIFY },
	{ "verify-restore", no_argument, NULL, O_SWITCH },
	{ "quiet", no_argument, NULL, 'q' },
	{ NULL, 0, NULL, 0 },
};

static int parse(struct kemari_conf *c, const char *text)
{
	kemari_err_clear();
	return kemari_conf__parse(c, "/etc/kemari/t.conf", text, opts);
}

Test(config, good_file_becomes_long_options_with_their_lines)
{
	struct kemari_conf c;
	static const char text[] =
		"# the protected kvstore\n"
		"\n"
		"role = primary\n"
		"mem=256M   # trailing comment\n"
		"  append = \"console=ttyS0 quiet # kept\"  \n"
		"guest-arg = pages=64\n"
		"verify-restore = true\r\n"
		"quiet\n"
		"verify-replica = 5\n"
		"verify-replica = off\n"
		"verify-restore = no\n"
		"guest-arg = a#b\n";
	static const struct {
		const char *arg;
		unsigned int line;
	} want[] = {
		{ "--role=primary", 3 },
		{ "--mem=256M", 4 },
		{ "--append=console=ttyS0 quiet # kept", 5 },
		{ "--guest-arg=pages=64", 6 },
		{ "--verify-restore", 7 },
		{ "--quiet", 8 },
		{ "--verify-replica=5", 9 },
		{ "--guest-arg=a#b", 12 },
	};

	cr_assert(eq(int, parse(&c, text), 0));
	cr_assert(eq(sz, c.n, sizeof(want) / sizeof(want[0])));
	for (size_t i = 0; i < c.n; i++) {
		cr_assert(eq(str, c.entries[i].arg, (char *)want[i].arg));
		cr_assert(eq(u32, c.entries[i].line, want[i].line));
	}
	kemari_conf__fini(&c);
}

Test(config, empty_and_comment_only_files_set_nothing)
{
	struct kemari_conf c;

	cr_assert(eq(int, parse(&c, ""), 0));
	cr_assert(eq(sz, c.n, 0));
	kemari_conf__fini(&c);
	cr_assert(eq(int, parse(&c, "# nothing\n\n   \n\t# here\n"), 0));
	cr_assert(eq(sz, c.n, 0));
	kemari_conf__fini(&c);
}

Test(config, errors_name_the_file_and_line)
{
	static const struct {
		const char *text, *msg;
	} cases[] = {
		{ "mem = 64M\n\n# x\nmemory = 1G\n",
		  "/etc/kemari/t.conf:4: unknown key 'memory' (the keys are the long options, without the dashes)" },
		{ "role = primary\nmem 64M\n",
		  "/etc/kemari/t.conf:2: expected KEY = VALUE, a bare KEY or a # comment" },
		{ "mem\n",
		  "/etc/kemari/t.conf:1: 'mem' needs a value: mem = VALUE" },
		{ "\nrole =  # none\n",
		  "/etc/kemari/t.conf:2: 'role =' has no value" },
		{ "verify-restore = maybe\n",
		  "/etc/kemari/t.conf:1: 'verify-restore' is a switch: verify-restore = true or false, or the bare key" },
		{ "append = \"console=ttyS0\n",
		  "/etc/kemari/t.conf:1: 'append' has no closing quote" },
		{ "append = \"a\" b\n",
		  "/etc/kemari/t.conf:1: text after the quoted value of 'append'" },
		{ "= 5\n",
		  "/etc/kemari/t.conf:1: expected KEY = VALUE, a bare KEY or a # comment" },
		{ "--mem = 5\n",
		  "/etc/kemari/t.conf:1: unknown key '--mem' (the keys are the long options, without the dashes)" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kemari_conf c;

		cr_assert(eq(int, parse(&c, cases[i].text), -EINVAL),
			  "case %zu", i);
		cr_assert(eq(str, (char *)kemari_last_error(-EINVAL),
			     (char *)cases[i].msg),
			  "case %zu", i);
		cr_assert(eq(sz, c.n, 0));
		kemari_conf__fini(&c);
	}
}

/* What getopt_long makes of the merged vector: the last --mem and --role
 * win, --guest-arg adds up, and the lines map back to the file. */
Test(config, command_line_overrides_the_file_whatever_the_order)
{
	struct kemari_conf c;
	char *argv[] = { "kemari-run", "--mem=128M", "--config=t.conf",
			 "--guest-arg=rounds=9", NULL };
	const char *mem = NULL, *role = NULL;
	int ngarg = 0, ch;

	cr_assert(eq(int,
		     parse(&c, "mem = 256M\nrole = primary\nguest-arg = x=1\n"),
		     0));
	cr_assert(eq(int, kemari_conf__argv(&c, 4, argv), 0));
	cr_assert(eq(int, c.argc, 7));
	cr_assert(eq(str, c.argv[0], "kemari-run"));
	cr_assert(eq(str, c.argv[1], "--mem=256M"));
	cr_assert(eq(str, c.argv[4], "--mem=128M"));
	cr_assert(eq(u32, kemari_conf__line(&c, 1), 1));
	cr_assert(eq(u32, kemari_conf__line(&c, 3), 3));
	cr_assert(eq(u32, kemari_conf__line(&c, 4), 0));
	cr_assert(eq(u32, kemari_conf__line(&c, 0), 0));

	static const struct option all[] = {
		{ "mem", required_argument, NULL, O_MEM },
		{ "role", required_argument, NULL, O_ROLE },
		{ "guest-arg", required_argument, NULL, O_GARG },
		{ "config", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	optind = 0;
	while ((ch = getopt_long(c.argc, c.argv, "", all, NULL)) != -1) {
		if (ch == O_MEM)
			mem = optarg;
		else if (ch == O_ROLE)
			role = optarg;
		else if (ch == O_GARG)
			ngarg++;
	}
	cr_assert(eq(str, (char *)mem, "128M"));
	cr_assert(eq(str, (char *)role, "primary"));
	cr_assert(eq(int, ngarg, 2));
	kemari_conf__fini(&c);
}

Test(config, load_reads_the_file_and_names_a_missing_one)
{
	char path[] = "/tmp/kemari-conf.XXXXXX", want[300];
	struct kemari_conf c;
	int fd = mkstemp(path);

	cr_assert(fd >= 0);
	cr_assert(eq(sz, (size_t)write(fd, "mem = 1G\nbogus\n", 15), 15));
	close(fd);
	kemari_err_clear();
	cr_assert(eq(int, kemari_conf__load(&c, path, opts), -EINVAL));
	snprintf(
		want, sizeof(want),
		"%s:2: unknown key 'bogus' (the keys are the long options, without the dashes)",
		path);
	cr_assert(eq(str, (char *)kemari_last_error(-EINVAL), want));
	kemari_conf__fini(&c);
	unlink(path);
	kemari_err_clear();
	cr_assert(eq(int, kemari_conf__load(&c, path, opts), -ENOENT));
	snprintf(want, sizeof(want), "--config=%s: No such file or directory",
		 path);
	cr_assert(eq(str, (char *)kemari_last_error(-ENOENT), want));
	kemari_conf__fini(&c);
}
