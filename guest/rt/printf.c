// SPDX-License-Identifier: MIT
/*
 * A small vsnprintf for console lines and panics. Integer conversions only:
 * the guest is built without SSE/x87, so there is no floating point to print.
 */
#include "rt.h"

struct printf_out {
	char *buf;
	size_t cap; /* bytes usable before the NUL */
	size_t len;
};

static void printf__putc(struct printf_out *o, char c)
{
	if (o->len < o->cap)
		o->buf[o->len++] = c;
}

static void printf__field(struct printf_out *o, const char *s, size_t len,
			  unsigned int width, bool left, char pad)
{
	size_t fill = width > len ? width - len : 0;
	size_t i;

	/* Zero padding goes after a sign, space padding before it. */
	if (!left && pad == '0' && len && s[0] == '-') {
		printf__putc(o, '-');
		s++;
		len--;
	}
	if (!left) {
		for (i = 0; i < fill; i++)
			printf__putc(o, pad);
	}
	for (i = 0; i < len; i++)
		printf__putc(o, s[i]);
	if (left) {
		for (i = 0; i < fill; i++)
			printf__putc(o, ' ');
	}
}

static size_t printf__hex(char *buf, uint64_t v)
{
	char tmp[16];
	size_t n = 0, i;

	do {
		tmp[n++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	for (i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

/* Returns the length stored in buf (truncated output, always terminated),
 * unlike C's vsnprintf which returns the length it would have needed. */
int rt__vsnprintf(char *buf, size_t cap, const char *fmt, va_list ap)
{
	struct printf_out o = { buf, cap ? cap - 1 : 0, 0 };
	char num[24];

	for (; *fmt; fmt++) {
		unsigned int width = 0, lng = 0;
		int prec = -1;
		bool left = false;
		char pad = ' ';
		const char *s;
		size_t n;

		if (*fmt != '%') {
			printf__putc(&o, *fmt);
			continue;
		}
		fmt++;
		for (;; fmt++) {
			if (*fmt == '-')
				left = true;
			else if (*fmt == '0')
				pad = '0';
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned int)(*fmt++ - '0');
		if (*fmt == '.' && fmt[1] == '*') {
			prec = va_arg(ap, int);
			fmt += 2;
		}
		while (*fmt == 'l' || *fmt == 'z') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, long) : va_arg(ap, int);

			n = rt__fmt_i64(num, v);
			printf__field(&o, num, n, width, left, pad);
			break;
		}
		case 'u':
		case 'x': {
			uint64_t v = lng ? va_arg(ap, unsigned long)
					 : va_arg(ap, unsigned int);

			if (*fmt == 'u')
				n = rt__fmt_u64(num, v);
			else
				n = printf__hex(num, v);
			printf__field(&o, num, n, width, left, pad);
			break;
		}
		case 'p':
			num[0] = '0';
			num[1] = 'x';
			n = 2 +
			    printf__hex(num + 2, (uintptr_t)va_arg(ap, void *));
			printf__field(&o, num, n, width, left, pad);
			break;
		case 'c':
			num[0] = (char)va_arg(ap, int);
			printf__field(&o, num, 1, width, left, ' ');
			break;
		case 's':
			s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			for (n = 0; s[n] && (prec < 0 || n < (size_t)prec); n++)
				;
			printf__field(&o, s, n, width, left, ' ');
			break;
		case '%':
			printf__putc(&o, '%');
			break;
		case '\0':
			fmt--; /* let the loop see the end */
			break;
		default:
			/* Unknown conversion: show it rather than guess. */
			printf__putc(&o, '%');
			printf__putc(&o, *fmt);
			break;
		}
	}
	if (cap)
		buf[o.len] = '\0';
	return (int)o.len;
}

int rt__snprintf(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = rt__vsnprintf(buf, cap, fmt, ap);
	va_end(ap);
	return n;
}
