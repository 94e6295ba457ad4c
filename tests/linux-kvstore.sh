#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# kemari-kvstore (guest/linux/kvstore.c) natively on 127.0.0.1 with a file
# as its disk: the kvstore protocol over UDP (kemari-kv) and TCP (socat),
# exactly-once on repeated seqs, concurrent TCP clients, durability across
# kill -9 and a restart on the same file, and its one-line errors.
#   BUILD=dir tests/linux-kvstore.sh     (needs $BUILD/kemari-kv: make)
#   KEMARI_KVSTORE=path                  test that binary instead
# Needs no KVM and no VM. Exit 77: cannot run here, the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KV=$BUILD/kemari-kv
# KEMARI_KVSTORE=path tests another build (e.g. one with sanitizers).
SRV=${KEMARI_KVSTORE:-$BUILD/guests/linux/kemari-kvstore}

[ -x "$KV" ] || { echo "linux-kvstore: $KV missing: run 'make BUILD=$BUILD' first" >&2; exit 77; }
command -v socat >/dev/null || { echo "linux-kvstore: socat missing: run 'make deps'" >&2; exit 77; }
[ -n "${KEMARI_KVSTORE:-}" ] || BUILD=$BUILD scripts/linux-guest.sh --kvstore

tmp=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

pass=0
fail=0
check() { # NAME EXPECTED ACTUAL
	if [ "$2" = "$3" ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		printf 'linux-kvstore: FAIL %s\n  expected: %s\n  got:      %s\n' "$1" "$2" "$3" >&2
	fi
}
check_grep() { # NAME PATTERN FILE
	if grep -q -- "$2" "$3"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		printf 'linux-kvstore: FAIL %s: no "%s" in:\n' "$1" "$2" >&2
		cat "$3" >&2
	fi
}

# A port free for both UDP and TCP on loopback.
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
disk=$tmp/disk
truncate -s 1M "$disk"

# Start the server and wait (up to 10 s) for its ready line.
start() {
	: >"$tmp/srv.log"
	"$SRV" --disk="$disk" --bind=127.0.0.1 --port="$port" >"$tmp/srv.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		grep -q '^kvstore: ready' "$tmp/srv.log" && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "linux-kvstore: the server did not get ready:" >&2
	cat "$tmp/srv.log" >&2
	exit 1
}
udp() { # CLIENT SEQ CMD...
	"$KV" --server="127.0.0.1:$port" --client="$1" --seq="$2" --timeout-ms=5000 "${@:3}"
}
tcp() { # LINE... -> the replies, one per line
	printf '%s\n' "$@" | socat -t 5 - "TCP:127.0.0.1:$port"
}

start
check "ready line (fresh disk)" "kvstore: ready, 0 records replayed, 0 keys" "$(head -1 "$tmp/srv.log")"

# --- UDP --------------------------------------------------------------------
check "udp PING" "OK PONG" "$(udp u1 1 PING)"
check "udp SET" "OK" "$(udp u1 2 SET a 5)"
check "udp GET" "OK 5" "$(udp u1 3 GET a)"
check "udp INCR" "OK 6" "$(udp u1 4 INCR a)"
check "udp INCR same seq: cached, not re-applied" "OK 6" "$(udp u1 4 INCR a)"
check "udp GET after the repeat" "OK 6" "$(udp u1 5 GET a)"
check "udp lower seq" "ERR stale" "$(udp u1 3 GET a)"
check "udp INCR missing key" "OK 1" "$(udp u1 6 INCR fresh)"
check "udp DEL" "OK" "$(udp u1 7 DEL fresh)"
check "udp GET deleted" "NOTFOUND" "$(udp u1 8 GET fresh)"
check "udp arity" "ERR arity" "$(udp u2 1 INCR a x)"
check "udp SET for later" "OK" "$(udp u2 2 SET s hello)"
check "udp SET text" "OK" "$(udp u3 1 SET a.txt hello)"
check "udp INCR text" "ERR not-integer" "$(udp u3 2 INCR a.txt)"

# kemari-kv without --client: a random id per run. Two runs in fresh pid
# namespaces have the same pid (1); with ids made of the pid the second
# INCR was answered from the first one's cached reply, never applied.
if unshare -fp true 2>/dev/null; then
	a=$(unshare -fp "$KV" --server="127.0.0.1:$port" --timeout-ms=5000 INCR pidreuse)
	b=$(unshare -fp "$KV" --server="127.0.0.1:$port" --timeout-ms=5000 INCR pidreuse)
	check "default client ids survive pid reuse (INCR twice as pid 1)" "OK 1/OK 2" "$a/$b"
else
	check "unshare -fp (util-linux, root) for the pid-reuse check" ok missing
fi
# Numbers on kemari-kv's command line are checked whole: exit 2, one line.
for bad in "--timeout-ms=abc" "--timeout-ms=0" "--seq=-1" "--seq=12x"; do
	rc=0
	"$KV" --server="127.0.0.1:$port" "$bad" GET a >"$tmp/bad.out" 2>&1 || rc=$?
	check "kemari-kv $bad: exit 2 with one line" "2 1 ${bad%%=*}" \
		"$rc $(wc -l <"$tmp/bad.out") $(grep -o -- "${bad%%=*}" "$tmp/bad.out" | head -1)"
done
for bad in "--clients=0" "--clients=x" "--keys=-3" "--ops=1e3" "--duration-ms=five"; do
	rc=0
	"$KV" --server="127.0.0.1:$port" load "$bad" >"$tmp/bad.out" 2>&1 || rc=$?
	check "kemari-kv load $bad: exit 2 with one line" "2 1 ${bad%%=*}" \
		"$rc $(wc -l <"$tmp/bad.out") $(grep -o -- "${bad%%=*}" "$tmp/bad.out" | head -1)"
done

# --- TCP --------------------------------------------------------------------
check "tcp pipelined lines, replies in order" \
	"$(printf 't1 1 OK\nt1 2 OK world\nt1 3 OK 7\nt2 1 OK hello')" \
	"$(tcp "t1 1 SET w world" "t1 2 GET w" "t1 3 INCR a" "t2 1 GET s")"
check "tcp CRLF, no client-id dropped, unterminated last line" \
	"$(printf 't3 1 OK PONG\nt3 2 ERR unknown-command\nt3 3 OK 7')" \
	"$(printf 't3 1 PING\r\n\n \nt3 2 NOPE\nt3 3 GET a' | socat -t 5 - "TCP:127.0.0.1:$port")"
check "exactly-once across transports (udp's last seq repeated over tcp)" \
	"$(printf 'u2 2 OK\nu2 3 OK hello')" "$(tcp "u2 2 SET s other" "u2 3 GET s")"
check "tcp lower seq" "t1 0 ERR stale" "$(tcp "t1 0 GET a")"

# Concurrent TCP clients, each pipelining its INCRs on one connection.
nc=16 per=25 clients=()
for j in $(seq $nc); do
	(
		for i in $(seq $per); do echo "tc$j $i INCR ctr"; done |
			socat -t 10 - "TCP:127.0.0.1:$port" >"$tmp/tc$j.out"
	) &
	clients+=($!)
done
wait "${clients[@]}"
bad=0
for j in $(seq $nc); do
	[ "$(grep -c "^tc$j [0-9]* OK [0-9]*\$" "$tmp/tc$j.out")" = $per ] || bad=$((bad + 1))
done
check "concurrent tcp clients: every reply OK, in count" 0 "$bad"
check "concurrent tcp INCRs all applied once" "OK $((nc * per))" "$(udp u1 10 GET ctr)"
# Exactly-once under UDP load, with its own lost/duplicate accounting.
if "$KV" --server="127.0.0.1:$port" --timeout-ms=5000 load --clients=8 --keys=4 --ops=100 --prefix=L1 >"$tmp/load.out" 2>&1; then
	pass=$((pass + 1))
else
	fail=$((fail + 1))
	echo "linux-kvstore: FAIL udp load (exactly-once check):" >&2
	cat "$tmp/load.out" >&2
fi

# --- errors -----------------------------------------------------------------
truncate -s 1M "$tmp/disk2"
"$SRV" --disk="$tmp/disk2" --bind=127.0.0.1 --port="$port" >"$tmp/err.log" 2>&1 && rc=0 || rc=$?
check "port in use: exit status" 1 "$rc"
check_grep "port in use: message" "port $port on 127.0.0.1 is in use" "$tmp/err.log"
"$SRV" --disk="$disk" --bind=127.0.0.1 --port="$((port + 1))" >"$tmp/err.log" 2>&1 && rc=0 || rc=$?
check "disk in use: exit status" 1 "$rc"
check_grep "disk in use: message" "in use by another kemari-kvstore" "$tmp/err.log"
"$SRV" --disk="$tmp/nonexistent" --port="$((port + 1))" >"$tmp/err.log" 2>&1 && rc=0 || rc=$?
check "disk missing: exit status" 1 "$rc"
check_grep "disk missing: message" "nonexistent: No such file or directory" "$tmp/err.log"
head -c 65536 /dev/urandom >"$tmp/foreign"
"$SRV" --disk="$tmp/foreign" --port="$((port + 1))" >"$tmp/err.log" 2>&1 && rc=0 || rc=$?
check "foreign disk refused: exit status" 1 "$rc"
check_grep "foreign disk refused: message" "something other than a kvstore log" "$tmp/err.log"
check "probe of a running server" "OK PONG" "$("$SRV" --ping --bind=127.0.0.1 --port="$port")"

# --- durability: kill -9, restart on the same file --------------------------
check "last update before the kill" "OK 1" "$(udp x1 1 INCR once)"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
pid=
"$SRV" --ping --bind=127.0.0.1 --port="$port" --timeout-ms=300 >/dev/null 2>&1 && rc=0 || rc=$?
check "probe of a dead server fails" 1 "$rc"
start
check_grep "ready line replays the log" "^kvstore: ready, [1-9][0-9]* records replayed, [1-9][0-9]* keys" "$tmp/srv.log"
check "after kill -9: udp value" "OK 7" "$(udp u1 11 GET a)"
check "after kill -9: tcp value" "t4 1 OK world" "$(tcp "t4 1 GET w")"
check "after kill -9: counter" "OK $((nc * per))" "$(udp u1 12 GET ctr)"
check "after kill -9: exactly-once table kept (a repeated INCR)" "OK 1" "$(udp x1 1 INCR once)"
check "after kill -9: ... and not re-applied" "OK 1" "$(udp x1 2 GET once)"
check "after kill -9: stale seqs stay stale" "ERR stale" "$(udp u2 1 GET a)"

# --- clean stop -------------------------------------------------------------
kill -TERM "$pid"
wait "$pid" && rc=0 || rc=$?
pid=
check "SIGTERM: exit status 0" 0 "$rc"

echo "linux-kvstore: $pass passed, $fail failed"
[ "$fail" = 0 ]
