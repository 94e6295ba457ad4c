#!/bin/sh
# Runs in dom0 of the patched Xen (started by check-xen-tap.sh, chrooted into
# the host's root): brings up the toolstack, starts a PV domU that prints a
# line every 0.2 s on its console, then taps the domU's console port with
# evtchn-tap-test (patched libxenctrl). Also checks what the unprivileged
# domU itself got when it issued the tap domctl. Prints PASS/FAIL lines and
# a final "N passed, M failed"; exits non-zero on any failure.
#
#   dom0-tap.sh BINDIR LIBDIR GUESTDIR
set -u
BIN=$1 LIB=$2 GUEST=$3
XENBIN=/usr/lib/xen-4.17/bin
OUT=/tmp/tap-results
LOG=/var/log/xen/console/guest-tapguest.log
: >"$OUT"

pass() { echo "PASS: $*" | tee -a "$OUT"; }
fail() { echo "FAIL: $*" | tee -a "$OUT"; }
finish() {
	p=$(grep -c '^PASS:' "$OUT") f=$(grep -c '^FAIL:' "$OUT")
	echo "xen-tap: $p passed, $f failed"
	[ "$f" -eq 0 ] && [ "$p" -gt 0 ]
	exit $?
}
# wait_for SECS CMD...: poll CMD every 0.5 s for SECS seconds of wall time.
wait_for() {
	end=$(($(date +%s) + $1)); shift
	while [ "$(date +%s)" -lt "$end" ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	return 1
}

mkdir -p /run/xenstored /run/xen /var/log/xen/console /var/lib/xen
XENSTORED_ROOTDIR=/run/xenstored "$XENBIN/oxenstored"
wait_for 60 xenstore-read -s / || { fail "xenstored did not come up"; finish; }
"$XENBIN/xen-init-dom0" >/dev/null 2>&1 || { fail "xen-init-dom0"; finish; }
xenconsoled --log=guest --log-dir=/var/log/xen/console ||
	{ fail "xenconsoled did not start"; finish; }

# The first domain created after boot gets domid 1; the guest is told so it
# can name itself in its own (refused) domctls, and we check it was right.
cat >/tmp/tapguest.cfg <<EOF
name = "tapguest"
type = "pv"
kernel = "$GUEST/vmlinux.gz"
ramdisk = "$GUEST/domu-initrd.gz"
extra = "console=hvc0 loglevel=3 kemari.domid=1"
memory = 128
vcpus = 1
on_crash = "preserve"
EOF
if ! timeout 300 xl create /tmp/tapguest.cfg >/tmp/xl-create.log 2>&1; then
	cat /tmp/xl-create.log
	fail "xl create of the PV domU"
	finish
fi
dom=$(xl domid tapguest)
[ "$dom" = 1 ] && pass "PV domU created (domid $dom)" ||
	fail "PV domU got domid $dom, expected 1"
port=$(xenstore-read "/local/domain/$dom/console/port")
echo "xen-tap: domU console port $port"

# The domU boots in a minute or several under TCG, depending on the load.
ticks() { grep -q 'tick 3' "$LOG"; }
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
	wait_for 30 ticks && break
	echo "xen-tap: waiting for the domU to print: log $(wc -c <"$LOG" 2>/dev/null || echo none) bytes," \
		"$(xl list tapguest 2>&1 | tail -1 | tr -s ' ')"
done
if ! ticks; then
	echo "xen-tap: the domU's console log ends with:"
	tail -20 "$LOG" 2>&1 | tr -d '\r' | sed 's/^/  domU| /'
	fail "domU never printed its ticks"
	finish
fi

# The guest's own attempts (tap-guest.c) must all have been refused (EPERM=1),
# while a hypercall any guest may make went through the same path.
line=$(grep -a "^GUEST-HYPERCALL xen_version " "$LOG" | head -1 | tr -d '\r')
case $line in
*"rc=0x4"*) pass "unprivileged domU reaches Xen through privcmd (xen_version ${line#*rc=})" ;;
*) fail "unprivileged domU's xen_version hypercall: '${line:-no result}'" ;;
esac
for d in 0 "$dom"; do
	for op in query untap release tap; do
		line=$(grep -a "^GUEST-DOMCTL dom=$d op=$op " "$LOG" | head -1 | tr -d '\r')
		case $line in
		*"rc=-1 errno=1") pass "unprivileged domU's $op on dom $d refused (EPERM)" ;;
		*) fail "unprivileged domU's $op on dom $d: '${line:-no result}'" ;;
		esac
	done
done

LD_LIBRARY_PATH=$LIB "$BIN/evtchn-tap-test" "$dom" "$port" "$LOG" \
	>/tmp/tap-test.out 2>&1
rc=$?
cat /tmp/tap-test.out
grep -E '^(PASS|FAIL):' /tmp/tap-test.out >>"$OUT"
[ $rc -eq 0 ] || fail "evtchn-tap-test exited with status $rc"
echo "xen-tap: console of the domU around the tap:"
tail -5 "$LOG" | tr -d '\r' | sed 's/^/  domU| /'
xl destroy tapguest >/dev/null 2>&1
finish
