#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Linux guest image (scripts/linux-guest.sh) booted under plain QEMU TCG
# with legacy-only virtio-pci disk and NIC, reached through QEMU's user
# networking on forwarded loopback ports. Needs no KVM; two boots. The
# consoles are kept in $BUILD/guests/linux/qemu-boot{1,2}.log.
#   BUILD=dir tests/linux-guest-qemu.sh    (needs $BUILD/kemari-kv: make)
#
# Boot 1, the image as built, a fresh disk: "kemari-guest: ready" (its time
# is reported), SET/GET/INCR and exactly-once over UDP (kemari-kv) and TCP
# (socat); then QEMU is killed (a power cut).
# Boot 2, the same image with a test overlay whose service wrapper ends
# kemari-kvstore when the host connects to guest TCP port 7600 (first with
# SIGKILL, then with SIGTERM): the log replayed from the same disk, the
# values there over UDP and TCP, init restarting the service and saying
# ready again, and the guest's end by reboot -f (QEMU exits by itself).
# Exit 77: cannot run here, the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KV=$BUILD/kemari-kv
IMG=$BUILD/guests/linux
BOOT_TIMEOUT=${KEMARI_LG_BOOT_TIMEOUT:-300}

skip() { echo "linux-guest-qemu: $*" >&2; exit 77; }
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 missing: run 'make deps'"
command -v socat >/dev/null || skip "socat missing: run 'make deps'"
[ -x "$KV" ] || skip "$KV missing: run 'make BUILD=$BUILD' first"

tmp=$(mktemp -d)
qpid=
# The consoles are kept as $IMG/qemu-boot{1,2}.log.
cleanup() {
	[ -n "$qpid" ] && kill -9 "$qpid" 2>/dev/null
	cp -f "$tmp"/qemu-boot*.log "$IMG/" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

rc=0
BUILD=$BUILD scripts/linux-guest.sh || rc=$?
[ $rc = 77 ] && exit 77
[ $rc = 0 ] || exit $rc

# The test overlay for boot 2.
mkdir -p "$tmp/overlay/etc" "$tmp/overlay/bin"
echo 'SERVICE=/bin/kvstore-test-svc' >"$tmp/overlay/etc/kemari-guest.conf"
cat >"$tmp/overlay/bin/kvstore-test-svc" <<'SVC'
#!/bin/sh
# kemari-kvstore, ended when the host connects to port 7600: SIGKILL the
# first time, SIGTERM (a clean stop, so init powers off) after that.
/bin/kemari-kvstore --disk=/dev/vda &
pid=$!
n=$(($(cat /tmp/starts 2>/dev/null || echo 0) + 1))
echo $n >/tmp/starts
nc -l -p 7600 </dev/null >/dev/null
if [ $n = 1 ]; then kill -9 $pid; else kill -TERM $pid; fi
wait $pid
SVC
chmod 755 "$tmp/overlay/bin/kvstore-test-svc"
rc=0
BUILD=$BUILD scripts/linux-guest.sh --overlay="$tmp/overlay" --out="$tmp/img2" || rc=$?
[ $rc = 0 ] || exit $rc

pass=0
fail=0
check() { # NAME EXPECTED ACTUAL
	if [ "$2" = "$3" ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		printf 'linux-guest-qemu: FAIL %s\n  expected: %s\n  got:      %s\n' "$1" "$2" "$3" >&2
	fi
}

free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 30000))
		[ -z "$(ss -Hanu "sport = :$p" 2>/dev/null)$(ss -Hant "sport = :$p" 2>/dev/null)" ] && {
			echo "$p"
			return
		}
	done
	echo 27500
}
port=$(free_port)
ctl=$(free_port)
truncate -s 8M "$tmp/disk.img"

boot() { # DIR-WITH-IMAGE LOG
	local t0
	t0=$(date +%s%N)
	qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot \
		-kernel "$1/vmlinuz" -initrd "$1/initrd.img" \
		-append 'console=ttyS0 kemari.ip=10.0.2.15/24' \
		-drive file="$tmp/disk.img",if=none,id=d0,format=raw \
		-device virtio-blk-pci,drive=d0,disable-modern=on,disable-legacy=off \
		-netdev user,id=n0,hostfwd=udp:127.0.0.1:$port-:7500,hostfwd=tcp:127.0.0.1:$port-:7500,hostfwd=tcp:127.0.0.1:$ctl-:7600 \
		-device virtio-net-pci,netdev=n0,disable-modern=on,disable-legacy=off \
		</dev/null >"$2" 2>&1 &
	qpid=$!
	wait_line "$2" 'kemari-guest: ready' 1 "$BOOT_TIMEOUT"
	echo "linux-guest-qemu: $(basename "$2" .log | sed s/qemu-//): kemari-guest: ready after $((($(date +%s%N) - t0) / 1000000)) ms"
}

# Wait until LOG holds COUNT lines matching PATTERN, up to SECS seconds.
wait_line() { # LOG PATTERN COUNT SECS
	local end=$(($(date +%s) + $4))
	while [ "$(grep -c -- "$2" "$1" 2>/dev/null)" -lt "$3" ]; do
		if [ "$(date +%s)" -ge "$end" ] || ! kill -0 "$qpid" 2>/dev/null; then
			echo "linux-guest-qemu: no ${3}x '$2' in $1 within $4 s; its end:" >&2
			tail -n 30 "$1" >&2
			exit 1
		fi
		sleep 0.2
	done
}

# Connect to guest port 7600 until the console shows COUNT lines of PATTERN
# (slirp accepts on the host side even when nothing listens in the guest).
trigger() { # LOG PATTERN COUNT
	local i
	for i in $(seq 20); do
		socat -u /dev/null "TCP:127.0.0.1:$ctl" 2>/dev/null || true
		for _ in $(seq 15); do
			[ "$(grep -c -- "$2" "$1")" -ge "$3" ] && return 0
			sleep 0.2
		done
	done
	echo "linux-guest-qemu: the guest did not react to port 7600 with '$2'" >&2
	tail -n 30 "$1" >&2
	exit 1
}

udp() { # CLIENT SEQ CMD...
	"$KV" --server="127.0.0.1:$port" --client="$1" --seq="$2" --timeout-ms=20000 "${@:3}"
}
tcp() { # LINE... -> the replies, one per line
	printf '%s\n' "$@" | socat -t 20 - "TCP:127.0.0.1:$port"
}

# --- boot 1 -----------------------------------------------------------------
log1=$tmp/qemu-boot1.log
boot "$IMG" "$log1"
check "boot 1: a fresh log" 1 "$(grep -c 'kvstore: ready, 0 records replayed, 0 keys' "$log1")"
check "udp SET" "OK" "$(udp h1 1 SET greeting hello)"
check "udp GET" "OK hello" "$(udp h1 2 GET greeting)"
check "udp INCR" "OK 1" "$(udp h1 3 INCR n)"
check "udp INCR same seq: not re-applied" "OK 1" "$(udp h1 3 INCR n)"
check "udp INCR" "OK 2" "$(udp h1 4 INCR n)"
check "tcp SET, GET, GET" "$(printf 't1 1 OK\nt1 2 OK viaTCP\nt1 3 OK 2')" \
	"$(tcp "t1 1 SET t viaTCP" "t1 2 GET t" "t1 3 GET n")"
kill -9 "$qpid"
wait "$qpid" 2>/dev/null || true
qpid=

# --- boot 2 -----------------------------------------------------------------
log2=$tmp/qemu-boot2.log
boot "$tmp/img2" "$log2"
check "boot 2: the log replayed" 1 "$(grep -c 'kvstore: ready, [1-9][0-9]* records replayed, 3 keys' "$log2")"
check "after the power cut: a repeated seq stays cached" "OK 2" "$(udp h1 4 INCR n)"
check "after the power cut: udp" "OK hello" "$(udp h1 5 GET greeting)"
check "after the power cut: tcp" "t2 1 OK 2" "$(tcp "t2 1 GET n")"
check "udp SET before SIGKILL" "OK" "$(udp h1 6 SET late yes)"
trigger "$log2" 'kemari-guest: service died (exit status 137), restarting' 1
wait_line "$log2" 'kemari-guest: ready' 2 120
check "restarted service: replayed, 4 keys" 1 "$(grep -c 'kvstore: ready, [1-9][0-9]* records replayed, 4 keys' "$log2")"
check "after SIGKILL: udp" "OK yes" "$(udp h1 7 GET late)"
check "after SIGKILL: tcp" "t3 1 OK 3" "$(tcp "t3 1 INCR n")"
trigger "$log2" 'kemari-guest: powering off (reboot -f)' 1
for _ in $(seq 150); do
	kill -0 "$qpid" 2>/dev/null || break
	sleep 0.2
done
if kill -0 "$qpid" 2>/dev/null; then
	check "QEMU ends with the guest's reboot -f" "exited" "still running"
else
	wait "$qpid" && rc=0 || rc=$?
	check "QEMU ends with the guest's reboot -f (exit status)" 0 "$rc"
fi
qpid=

echo "linux-guest-qemu: $pass passed, $fail failed"
if [ "$fail" != 0 ]; then
	for l in "$log1" "$log2"; do
		echo "---- $l (kemari lines)"
		grep -a -E 'kemari|kvstore' "$l"
	done
	exit 1
fi
