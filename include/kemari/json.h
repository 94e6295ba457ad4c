/* SPDX-License-Identifier: MIT */
/*
 * A small JSON reader for the control socket (kemari-run --control,
 * kemari-ctl): it walks one JSON text and reports every scalar with its
 * path, members joined by '.', array elements by their index
 * ("return.peer.address", "list.0").
 */
#ifndef KEMARI_JSON_H
#define KEMARI_JSON_H

#include <stddef.h>

enum kemari_json_type {
	KEMARI_JSON_STRING, /* value unescaped */
	KEMARI_JSON_NUMBER, /* value as written */
	KEMARI_JSON_BOOL,   /* "true" or "false" */
	KEMARI_JSON_NULL,
	KEMARI_JSON_EMPTY, /* an empty object or array (value "{}"/"[]") */
};

/* Called in document order; a non-zero return stops the walk with it. */
typedef int (*kemari_json_cb)(void *ctx, const char *path,
			      enum kemari_json_type type, const char *value);

/*
 * Walk text (one value, surrounding whitespace allowed). 0, the callback's
 * non-zero return, or -EINVAL when text is not JSON (or nests deeper than
 * 16, or a path or string exceeds 255 bytes).
 */
int kemari_json__walk(const char *text, kemari_json_cb cb, void *ctx);

/* Append s as a JSON string (quoted, escaped) to out of size cap; returns
 * the length it needed, like snprintf. */
size_t kemari_json__quote(char *out, size_t cap, const char *s);

#endif
