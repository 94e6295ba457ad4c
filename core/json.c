// SPDX-License-Identifier: MIT
/* A small JSON reader: scalars with their paths (include/kemari/json.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kemari/json.h"

#define JSON_MAX 256
#define JSON_DEPTH 16

struct json {
	const char *p;
	kemari_json_cb cb;
	void *ctx;
	char path[JSON_MAX];
	int depth;
};

static void json__ws(struct json *j)
{
	while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
		j->p++;
}

static int json__hex(const char *s, unsigned int *out)
{
	*out = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];

		*out <<= 4;
		if (c >= '0' && c <= '9')
			*out |= (unsigned int)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*out |= (unsigned int)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*out |= (unsigned int)(c - 'A' + 10);
		else
			return -EINVAL;
	}
	return 0;
}

/* A string at j->p (its opening quote) into out, unescaped (UTF-8). */
static int json__string(struct json *j, char *out, size_t cap)
{
	size_t n = 0;

	if (*j->p++ != '"')
		return -EINVAL;
	for (;;) {
		unsigned int c = (unsigned char)*j->p++;

		if (!c || c < 0x20)
			return -EINVAL;
		if (c == '"')
			break;
		if (c == '\\') {
			c = (unsigned char)*j->p++;
			switch (c) {
			case '"':
			case '\\':
			case '/':
				break;
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case 'n':
				c = '\n';
				break;
			case 'r':
				c = '\r';
				break;
			case 't':
				c = '\t';
				break;
			case 'u':
				if (json__hex(j->p, &c))
					return -EINVAL;
				j->p += 4;
				/* Surrogates are not needed here: refuse them. */
				if (c >= 0xd800 && c < 0xe000)
					return -EINVAL;
				if (c >= 0x80) {
					char u[3];
					size_t k = c < 0x800 ? 2 : 3;

					if (k == 2) {
						u[0] = (char)(0xc0 | c >> 6);
						u[1] = (char)(0x80 |
							      (c & 0x3f));
					} else {
						u[0] = (char)(0xe0 | c >> 12);
						u[1] = (char)(0x80 |
							      (c >> 6 & 0x3f));
						u[2] = (char)(0x80 |
							      (c & 0x3f));
					}
					if (n + k >= cap)
						return -EINVAL;
					memcpy(out + n, u, k);
					n += k;
					continue;
				}
				break;
			default:
				return -EINVAL;
			}
		}
		if (n + 1 >= cap)
			return -EINVAL;
		out[n++] = (char)c;
	}
	out[n] = 0;
	return 0;
}

static int json__value(struct json *j);

/* Run the member or element at j->p with name appended to the path. */
static int json__child(struct json *j, const char *name)
{
	size_t len = strlen(j->path);
	int err;

	if (len + strlen(name) + 2 > sizeof(j->path))
		return -EINVAL;
	snprintf(j->path + len, sizeof(j->path) - len, "%s%s", len ? "." : "",
		 name);
	err = json__value(j);
	j->path[len] = 0;
	return err;
}

static int json__container(struct json *j)
{
	char open = *j->p++, close = open == '{' ? '}' : ']';
	char name[JSON_MAX];
	unsigned int idx = 0;
	int err;

	if (++j->depth > JSON_DEPTH)
		return -EINVAL;
	json__ws(j);
	if (*j->p == close) {
		j->p++;
		j->depth--;
		return j->cb(j->ctx, j->path, KEMARI_JSON_EMPTY,
			     open == '{' ? "{}" : "[]");
	}
	for (;;) {
		json__ws(j);
		if (open == '{') {
			err = json__string(j, name, sizeof(name));
			if (err)
				return err;
			json__ws(j);
			if (*j->p++ != ':')
				return -EINVAL;
		} else {
			snprintf(name, sizeof(name), "%u", idx++);
		}
		err = json__child(j, name);
		if (err)
			return err;
		json__ws(j);
		if (*j->p == ',') {
			j->p++;
			continue;
		}
		if (*j->p++ != close)
			return -EINVAL;
		j->depth--;
		return 0;
	}
}

static int json__value(struct json *j)
{
	char buf[JSON_MAX];
	const char *start;
	int err;

	json__ws(j);
	switch (*j->p) {
	case '{':
	case '[':
		return json__container(j);
	case '"':
		err = json__string(j, buf, sizeof(buf));
		return err ?: j->cb(j->ctx, j->path, KEMARI_JSON_STRING, buf);
	case 't':
		if (strncmp(j->p, "true", 4))
			return -EINVAL;
		j->p += 4;
		return j->cb(j->ctx, j->path, KEMARI_JSON_BOOL, "true");
	case 'f':
		if (strncmp(j->p, "false", 5))
			return -EINVAL;
		j->p += 5;
		return j->cb(j->ctx, j->path, KEMARI_JSON_BOOL, "false");
	case 'n':
		if (strncmp(j->p, "null", 4))
			return -EINVAL;
		j->p += 4;
		return j->cb(j->ctx, j->path, KEMARI_JSON_NULL, "null");
	default:
		start = j->p;
		if (*j->p == '-')
			j->p++;
		if (*j->p < '0' || *j->p > '9')
			return -EINVAL;
		while (strchr("0123456789.eE+-", *j->p) && *j->p)
			j->p++;
		if ((size_t)(j->p - start) >= sizeof(buf))
			return -EINVAL;
		memcpy(buf, start, (size_t)(j->p - start));
		buf[j->p - start] = 0;
		return j->cb(j->ctx, j->path, KEMARI_JSON_NUMBER, buf);
	}
}

int kemari_json__walk(const char *text, kemari_json_cb cb, void *ctx)
{
	struct json j = { .p = text, .cb = cb, .ctx = ctx };
	int err = json__value(&j);

	if (err)
		return err;
	json__ws(&j);
	return *j.p ? -EINVAL : 0;
}

size_t kemari_json__quote(char *out, size_t cap, const char *s)
{
	size_t n = 0;

#define PUT(c)                                                                 \
	do {                                                                   \
		if (n + 1 < cap)                                               \
			out[n] = (c);                                          \
		n++;                                                           \
	} while (0)
	PUT('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			PUT('\\');
			PUT((char)c);
		} else if (c < 0x20) {
			char esc[8];

			snprintf(esc, sizeof(esc), "\\u%04x", c);
			for (char *e = esc; *e; e++)
				PUT(*e);
		} else {
			PUT((char)c);
		}
	}
	PUT('"');
#undef PUT
	if (cap)
		out[n < cap ? n : cap - 1] = 0;
	return n;
}
