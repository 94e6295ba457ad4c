#!/usr/bin/env bash
# The manual pages: each renders without a warning from man(1), and every
# long option a program's --help lists is documented in its page (as a
# bold option term), so a new option without documentation fails here.
# BUILD selects the build directory (default build).
set -uo pipefail

B=${BUILD:-build}
export LC_ALL=C.UTF-8 MANWIDTH=80
fail=0 checked=0

shopt -s nullglob
pages=("$B"/man/*.[1-8])
if [ ${#pages[@]} -eq 0 ]; then
	echo "man: no pages in $B/man/: run 'make BUILD=$B man' (needs scdoc: 'make deps')" >&2
	exit 1
fi
for p in "${pages[@]}"; do
	warn=$(man --warnings -l "$p" 2>&1 >/dev/null)
	if [ -n "$warn" ]; then
		echo "man: $p: man --warnings printed:" >&2
		echo "$warn" >&2
		fail=1
	fi
	checked=$((checked + 1))
done

# Every long option of --help, documented in the program's page.
for prog in kemari-run kemari-kv kemari-ctl; do
	[ -x "$B/$prog" ] || continue
	page="$B/man/$prog.1"
	if [ ! -f "$page" ]; then
		echo "man: $prog has no page (docs/man/$prog.1.scd)" >&2
		fail=1
		continue
	fi
	opts=$("$B/$prog" --help | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u)
	if [ -z "$opts" ]; then
		echo "man: $prog --help lists no long option" >&2
		fail=1
		continue
	fi
	for o in $opts; do
		if ! grep -qF -- "\\fB$o\\fR" "$page"; then
			echo "man: $prog: option $o is in --help but not documented in docs/man/$prog.1.scd" >&2
			fail=1
		fi
		checked=$((checked + 1))
	done
done

if [ $fail -ne 0 ]; then
	echo "man: FAILED" >&2
	exit 1
fi
echo "man: ${#pages[@]} pages render without warnings; $((checked - ${#pages[@]})) options documented"
