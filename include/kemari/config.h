/* SPDX-License-Identifier: MIT */
/*
 * Configuration files for the programs (kemari-run --config=FILE): one
 * setting per line, named like a long option without its dashes.
 *
 *   # a comment; blank lines are ignored
 *   role = primary           KEY = VALUE (spaces around '=' optional)
 *   mem = 256M
 *   append = "console=ttyS0" a value in double quotes keeps '#' and spaces
 *   verify-restore = true    a switch: true/false, yes/no, on/off, 1/0 ...
 *   no-progress              ... or the bare key (= true)
 *
 * A '#' after whitespace outside quotes starts a comment. The keys are the
 * long options of the table the caller passes, so every option is a key.
 * The file's settings become "--KEY=VALUE" arguments placed *before* the
 * command line's: with getopt_long the command line then overrides the
 * file whatever the order, and repeatable options add up.
 */
#ifndef KEMARI_CONFIG_H
#define KEMARI_CONFIG_H

#include <getopt.h>
#include <stddef.h>

struct kemari_conf_entry {
	char *arg;	   /* "--KEY=VALUE" or "--KEY" */
	unsigned int line; /* in the file, from 1 */
};

struct kemari_conf {
	char path[256];
	struct kemari_conf_entry *entries;
	size_t n;
	/* kemari_conf__argv(): the merged argument vector, and how many of
	 * its words after argv[0] came from the file. */
	char **argv;
	int argc, nfile;
};

/*
 * Parse text (the contents of the file named path) against the long
 * options opts (terminated by a zero entry). 0, or -EINVAL with a one-line
 * message "PATH:LINE: ..." in kemari_last_error(); -ENOMEM.
 */
int kemari_conf__parse(struct kemari_conf *c, const char *path,
		       const char *text, const struct option *opts);
/* Read the file and parse it: the same, and -errno naming the file. */
int kemari_conf__load(struct kemari_conf *c, const char *path,
		      const struct option *opts);
/*
 * The argument vector for getopt_long: argv[0], the file's settings, then
 * argv[1..argc-1]. c owns it (strings are argv's or c's); 0 or -ENOMEM.
 */
int kemari_conf__argv(struct kemari_conf *c, int argc, char **argv);
/* The file line of word i of the merged vector, 0 when from the command line. */
unsigned int kemari_conf__line(const struct kemari_conf *c, int i);
void kemari_conf__fini(struct kemari_conf *c);

#endif
