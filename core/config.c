// SPDX-License-Identifier: MIT
/*
 * Configuration files: "KEY = VALUE" lines turned into "--KEY=VALUE"
 * arguments ahead of the command line's (include/kemari/config.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kemari/config.h"
#include "kemari/kemari.h"

static const struct option *conf__find(const struct option *opts,
				       const char *key, size_t n)
{
	for (; opts->name; opts++)
		if (strlen(opts->name) == n && !strncmp(opts->name, key, n))
			return opts;
	return NULL;
}

/* 1 true, 0 false, -1 neither. */
static int conf__bool(const char *v)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (unsigned int i = 0; i < KEMARI_ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(v, yes[i]))
			return 1;
		if (!strcasecmp(v, no[i]))
			return 0;
	}
	return -1;
}

static int conf__add(struct kemari_conf *c, unsigned int line, const char *name,
		     const char *value)
{
	struct kemari_conf_entry *e;
	size_t len = strlen(name) + (value ? strlen(value) + 1 : 0) + 3;

	e = realloc(c->entries, (c->n + 1) * sizeof(*e));
	if (!e)
		return -ENOMEM;
	c->entries = e;
	e = &c->entries[c->n];
	e->line = line;
	e->arg = malloc(len);
	if (!e->arg)
		return -ENOMEM;
	snprintf(e->arg, len, "--%s%s%s", name, value ? "=" : "",
		 value ? value : "");
	c->n++;
	return 0;
}

/*
 * One line, without its newline, modified in place. The value ends at the
 * line's end, or at a '#' after whitespace (a comment), trailing
 * whitespace dropped; a quoted value ends at its closing quote.
 */
static int conf__line(struct kemari_conf *c, unsigned int ln, char *s,
		      const struct option *opts)
{
	const struct option *o;
	char *key, *val = NULL, *p;
	size_t klen;
	int b;

	while (isspace((unsigned char)*s))
		s++;
	if (!*s || *s == '#')
		return 0;
	key = s;
	while (isalnum((unsigned char)*s) || *s == '-' || *s == '_')
		s++;
	klen = (size_t)(s - key);
	while (isspace((unsigned char)*s))
		s++;
	if (!klen || (*s && *s != '=' && *s != '#'))
		return kemari_err(
			-EINVAL,
			"%s:%u: expected KEY = VALUE, a bare KEY or a # comment",
			c->path, ln);
	o = conf__find(opts, key, klen);
	if (!o)
		return kemari_err(
			-EINVAL,
			"%s:%u: unknown key '%.*s' (the keys are the long options, without the dashes)",
			c->path, ln, (int)klen, key);
	if (*s == '=') {
		s++;
		while (isspace((unsigned char)*s))
			s++;
		if (*s == '"') {
			val = ++s;
			p = strchr(s, '"');
			if (!p)
				return kemari_err(
					-EINVAL,
					"%s:%u: '%s' has no closing quote",
					c->path, ln, o->name);
			*p++ = 0;
			while (isspace((unsigned char)*p))
				p++;
			if (*p && *p != '#')
				return kemari_err(
					-EINVAL,
					"%s:%u: text after the quoted value of '%s'",
					c->path, ln, o->name);
		} else if (*s && *s != '#') {
			val = s;
			for (p = s; *p; p++)
				if (*p == '#' && isspace((unsigned char)p[-1]))
					break;
			*p = 0;
			while (p > val && isspace((unsigned char)p[-1]))
				*--p = 0;
		} else {
			return kemari_err(-EINVAL, "%s:%u: '%s =' has no value",
					  c->path, ln, o->name);
		}
	}
	key[klen] = 0;
	switch (o->has_arg) {
	case required_argument:
		if (!val)
			return kemari_err(
				-EINVAL,
				"%s:%u: '%s' needs a value: %s = VALUE",
				c->path, ln, o->name, o->name);
		return conf__add(c, ln, o->name, val);
	case optional_argument:
		b = val ? conf__bool(val) : 1;
		if (b == 0)
			return 0;
		return conf__add(c, ln, o->name, b == 1 ? NULL : val);
	case no_argument:
	default:
		b = val ? conf__bool(val) : 1;
		if (b < 0)
			return kemari_err(
				-EINVAL,
				"%s:%u: '%s' is a switch: %s = true or false, or the bare key",
				c->path, ln, o->name, o->name);
		return b ? conf__add(c, ln, o->name, NULL) : 0;
	}
}

int kemari_conf__parse(struct kemari_conf *c, const char *path,
		       const char *text, const struct option *opts)
{
	char *copy = strdup(text), *line, *nl;
	unsigned int ln = 1;
	int err = 0;

	memset(c, 0, sizeof(*c));
	snprintf(c->path, sizeof(c->path), "%s", path);
	if (!copy)
		return -ENOMEM;
	/* Line by line, counting empty ones (strtok_r would skip them). */
	for (line = copy; line && !err; line = nl, ln++) {
		nl = strchr(line, '\n');
		if (nl)
			*nl++ = 0;
		line[strcspn(line, "\r")] = 0;
		err = conf__line(c, ln, line, opts);
	}
	free(copy);
	if (err)
		kemari_conf__fini(c);
	return err;
}

int kemari_conf__load(struct kemari_conf *c, const char *path,
		      const struct option *opts)
{
	FILE *f = fopen(path, "r");
	char *text = NULL;
	size_t cap = 0;
	ssize_t n;
	int err;

	memset(c, 0, sizeof(*c));
	if (!f)
		return kemari_err(-errno, "--config=%s: %s", path,
				  strerror(errno));
	/* The whole file: getdelim up to a NUL it will not contain. */
	n = getdelim(&text, &cap, 0, f);
	err = ferror(f) ? -EIO : 0;
	fclose(f);
	if (err || n < 0) {
		free(text);
		if (err)
			return kemari_err(err, "--config=%s: read error", path);
		return kemari_conf__parse(c, path, "", opts);
	}
	if ((size_t)n != strlen(text)) {
		free(text);
		return kemari_err(-EINVAL, "--config=%s: not a text file",
				  path);
	}
	err = kemari_conf__parse(c, path, text, opts);
	free(text);
	return err;
}

int kemari_conf__argv(struct kemari_conf *c, int argc, char **argv)
{
	int n = 0;

	free(c->argv);
	c->argv = calloc((size_t)argc + c->n + 1, sizeof(*c->argv));
	if (!c->argv)
		return -ENOMEM;
	c->argv[n++] = argc ? argv[0] : "";
	for (size_t i = 0; i < c->n; i++)
		c->argv[n++] = c->entries[i].arg;
	for (int i = 1; i < argc; i++)
		c->argv[n++] = argv[i];
	c->argc = n;
	c->nfile = (int)c->n;
	return 0;
}

unsigned int kemari_conf__line(const struct kemari_conf *c, int i)
{
	if (i < 1 || i > c->nfile)
		return 0;
	return c->entries[i - 1].line;
}

void kemari_conf__fini(struct kemari_conf *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->entries[i].arg);
	free(c->entries);
	free(c->argv);
	c->entries = NULL;
	c->argv = NULL;
	c->n = 0;
	c->argc = c->nfile = 0;
}
