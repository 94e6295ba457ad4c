#!/usr/bin/env bash
# tests/run-suite.sh judged by itself on made-up suites (make check-run):
#   1. a suite whose test crashed its guest, with a log long enough that a
#      grep -q would stop before the writer ends (CI stop 20: with
#      pipefail, the writer's SIGPIPE hid a line): the test is named with
#      its crash, nothing is run again, the suite fails;
#   2. a failure without a guest crash: named, nothing run again, fails;
#   3. a suite that fails with no failing test named: one line says so;
# and tests/vm/by-test.sh (the emulated VM's one-test-at-a-time runner):
#   4. a test its ledger ($KEMARI_VM_JOB/passed) holds is not run again, a
#      test that passes is added to it, one that fails is not, and the
#      exit status says whether all passed;
#   5. a test KEMARI_VM_LEAVE_OUT names is not run, and a line says so;
# and, back to tests/run-suite.sh:
#   6. a parameterized test run three times, the second run failing: after
#      the names, its "why" section shows that run's assertion and the end
#      of its output, and nothing of the runs that passed (CI stop 22
#      showed only the failing test's name).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d /tmp/kemari-runner-selftest.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/suite" <<'SUITE'
#!/usr/bin/env bash
# suite CRASH(0/1) NAMED(0/1) [criterion args]: a made-up Criterion suite;
# a run of one test (--filter) leaves a mark: nothing may run it again.
crash=$1 named=$2
shift 2
for a in "$@"; do [ "$a" = --filter ] && { touch "$(dirname "$0")/rerun"; exit 0; }; done
seq 1 200000
echo "[RUN ] a::b"
[ "$crash" = 1 ] && echo "kemari-run[secondary]: error: guest stopped: triple fault on vCPU 0"
[ "$named" = 1 ] && echo "[FAIL] a::b: (1.0s)"
exit 1
SUITE
chmod +x "$dir/suite"
fails=0
expect() { # WANT-LINE ARGS...
	local line=$1 rc out
	shift
	rm -f "$dir/rerun"
	out=$("$here/run-suite.sh" selftest "$dir/suite" "$@" 2>&1)
	rc=$?
	if [ "$rc" -ne 1 ] || ! grep -q -- "$line" <<<"$out" || [ -e "$dir/rerun" ]; then
		echo "runner-selftest: FAIL suite $*: exit $rc (want 1), line '$line' $(grep -q -- "$line" <<<"$out" && echo present || echo absent), $([ -e "$dir/rerun" ] && echo "run again" || echo "not run again"):"
		grep -v '^[0-9]' <<<"$out" | tail -n 8
		fails=$((fails + 1))
	fi
}
expect "FAILED TEST: a::b (its guest crashed: kemari-run\[secondary\]: error: guest stopped: triple fault" 1 1
expect "FAILED TEST: a::b$" 0 1
expect "no test failed by name" 0 0

# 4. A suite of two tests, s/x and s/y; s/y fails while $dir/y-fails exists.
cat >"$dir/two" <<'SUITE'
#!/usr/bin/env bash
d=$(dirname "$0")
for a in "$@"; do
	# Criterion's list: drawn in UTF-8 unless the locale is C.
	if [ "$a" = --list ] && [ "${LC_ALL:-}" = C ]; then
		printf 's: 2 tests\n|-- x\n`-- y\n'
		exit 0
	fi
	[ "$a" = --list ] && { printf 's: 2 tests\n├── x\n└── y\n'; exit 0; }
done
t=
while [ $# -gt 0 ]; do [ "$1" = --filter ] && t=$2; shift; done
echo "$t" >>"$d/ran"
echo "[RUN ] ${t/\//::}"
if [ "$t" = s/y ] && [ -e "$d/y-fails" ]; then echo "[FAIL] s::y: (1.0s)"; exit 1; fi
echo "[PASS] ${t/\//::}: (1.0s)"
SUITE
chmod +x "$dir/two"
mkdir "$dir/job"
echo s/x >"$dir/job/passed"
touch "$dir/y-fails"
KEMARI_VM_JOB=$dir/job KEMARI_EMULATED_VM=1 "$here/vm/by-test.sh" selftest "$dir/two" --filter 's/*' >"$dir/out" 2>&1
rc=$?
if [ $rc -ne 1 ] || [ "$(cat "$dir/ran")" != s/y ] || [ "$(cat "$dir/job/passed")" != s/x ]; then
	echo "runner-selftest: FAIL by-test with s/x in its ledger and s/y failing: exit $rc, ran '$(cat "$dir/ran")', ledger '$(cat "$dir/job/passed")'"
	fails=$((fails + 1))
fi
rm -f "$dir/y-fails" "$dir/ran"
KEMARI_VM_JOB=$dir/job KEMARI_EMULATED_VM=1 "$here/vm/by-test.sh" selftest "$dir/two" --filter 's/*' >"$dir/out" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ "$(cat "$dir/ran")" != s/y ] || [ "$(tr '\n' ' ' <"$dir/job/passed")" != "s/x s/y " ]; then
	echo "runner-selftest: FAIL by-test after s/y is fixed: exit $rc, ran '$(cat "$dir/ran")', ledger '$(tr '\n' ' ' <"$dir/job/passed")'"
	fails=$((fails + 1))
fi
# 5. KEMARI_VM_LEAVE_OUT: s/x is not run, and a line says so.
rm -f "$dir/ran" "$dir/job/passed"
KEMARI_VM_JOB=$dir/job KEMARI_EMULATED_VM=1 KEMARI_VM_LEAVE_OUT='s/x' \
	"$here/vm/by-test.sh" selftest "$dir/two" --filter 's/*' >"$dir/out" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ "$(cat "$dir/ran")" != s/y ] ||
	! grep -q "s/x LEFT OUT in the emulated VM" "$dir/out"; then
	echo "runner-selftest: FAIL by-test with s/x left out: exit $rc, ran '$(cat "$dir/ran")'"
	fails=$((fails + 1))
fi
# 6. Three runs of p::q, the second failing.
cat >"$dir/param" <<'SUITE'
#!/usr/bin/env bash
for r in 1 2 3; do
	echo "[RUN ] p::q"
	echo "[----] t.c:5: note of run $r"
	seq 1 50 | sed "s/^/run $r output /"
	if [ $r = 2 ]; then
		echo "[----] t.c:9: Assertion Failed"
		echo "[FAIL] p::q: (1.0s)"
	else
		echo "[PASS] p::q: (1.0s)"
	fi
done
exit 1
SUITE
chmod +x "$dir/param"
"$here/run-suite.sh" selftest "$dir/param" >"$dir/out" 2>&1
rc=$?
why=$(sed -n '/^==== why p::q failed/,/^====$/p' "$dir/out")
if [ $rc -ne 1 ] || ! grep -q "t.c:9: Assertion Failed" <<<"$why" ||
	! grep -q "t.c:5: note of run 2" <<<"$why" ||
	! grep -q "^run 2 output 50$" <<<"$why" ||
	grep -q "^run 2 output 20$" <<<"$why" ||
	grep -qE "run [13]" <<<"$why"; then
	echo "runner-selftest: FAIL why-section of a parameterized test's second run: exit $rc, section:"
	head -n 40 <<<"$why"
	fails=$((fails + 1))
fi
[ $fails -eq 0 ] && echo "runner-selftest: 6 of 6 passed"
[ $fails -eq 0 ]
