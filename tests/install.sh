#!/usr/bin/env bash
# make install into a temporary DESTDIR: the installed kemari-run reports
# the version of include/kemari/kemari.h, every program, man page, guest and
# systemd unit is in place, and the units pass systemd-analyze verify
# (skipped, with the reason, where systemd-analyze is missing).
# BUILD selects the build directory (default build); MAKE the make to run.
set -uo pipefail

B=${BUILD:-build}
MAKE=${MAKE:-make}
PREFIX=/usr/local
dest=$(mktemp -d /tmp/kemari-install.XXXXXX)
trap 'rm -rf "$dest"' EXIT
fail=0 checks=0

check() { # description, command...
	local what=$1
	shift
	checks=$((checks + 1))
	if ! "$@"; then
		echo "install: FAIL: $what" >&2
		fail=1
	fi
}

if ! $MAKE -s --no-print-directory BUILD="$B" PREFIX=$PREFIX DESTDIR="$dest" \
	install >"$dest.log" 2>&1; then
	cat "$dest.log" >&2
	rm -f "$dest.log"
	echo "install: make install failed" >&2
	exit 1
fi
rm -f "$dest.log"
root=$dest$PREFIX

want=$(sed -n 's/^#define KEMARI_VERSION "\(.*\)"$/\1/p' include/kemari/kemari.h)
got=$("$root/bin/kemari-run" --version)
check "kemari-run --version printed '$got', expected 'kemari-run $want'" \
	test "$got" = "kemari-run $want"

for prog in kemari-run kemari-kv kemari-perf kemari-ctl; do
	[ -e "$B/$prog" ] || continue
	check "$PREFIX/bin/$prog is not an executable copy of $B/$prog" \
		cmp -s "$B/$prog" "$root/bin/$prog"
	check "$PREFIX/bin/$prog is not mode 0755" \
		test "$(stat -c %a "$root/bin/$prog")" = 755
done
for page in "$B"/man/*.1; do
	inst=$root/share/man/man1/${page##*/}
	check "$inst missing or different" cmp -s "$page" "$inst"
	check "$inst does not render" \
		test -z "$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$inst" 2>&1 >/dev/null)"
done
check "no kemari-run(1) installed" test -f "$root/share/man/man1/kemari-run.1"
for g in kvstore dirtier; do
	check "$PREFIX/share/kemari/guests/$g.elf missing or different" \
		cmp -s "$B/guests/$g.elf" "$root/share/kemari/guests/$g.elf"
done
n=$(find "$root/share/kemari/guests" -type f | wc -l)
check "$n guests installed, expected 2 (kvstore, dirtier)" test "$n" -eq 2

units=$root/lib/systemd/system
for role in primary secondary; do
	u=$units/kemari-$role@.service
	check "$u missing" test -f "$u"
	check "$u: ExecStart does not run $PREFIX/bin/kemari-run --config=/etc/kemari/%i.conf --role=$role" \
		grep -qxF "ExecStart=$PREFIX/bin/kemari-run --config=/etc/kemari/%i.conf --role=$role --no-progress" "$u"
	check "$u: no LimitMEMLOCK=infinity" grep -qx 'LimitMEMLOCK=infinity' "$u"
done

if command -v systemd-analyze >/dev/null 2>&1; then
	# Verified as installed, with ExecStart and man: pointed into DESTDIR.
	vdir=$dest/verify
	mkdir -p "$vdir"
	for u in "$units"/*.service; do
		sed "s|^ExecStart=$PREFIX/|ExecStart=$root/|" "$u" >"$vdir/${u##*/}"
	done
	out=$(cd "$vdir" && MANPATH=$root/share/man SYSTEMD_LOG_LEVEL=notice \
		systemd-analyze verify ./*.service 2>&1)
	rc=$?
	check "systemd-analyze verify (rc $rc): $out" test $rc -eq 0 -a -z "$out"
else
	echo "install: systemd-analyze not found (Debian package systemd): unit files not verified"
fi

if [ $fail -ne 0 ]; then
	echo "install: FAILED" >&2
	exit 1
fi
echo "install: $checks checks passed (DESTDIR install, $PREFIX)"
