#!/usr/bin/env bash
# tests/vm/by-test.sh NAME CMD... [--filter GLOB] [ARGS...]: inside the
# emulated test VM (tests/run-kvm.sh starts it there), run a Criterion
# program one test at a time, each through tests/run-suite.sh, and record
# every test that passed in $KEMARI_VM_JOB/passed. When the emulated
# machine itself panics or freezes, tests/vm/vm.sh boots a fresh one and
# runs the job again: the tests already recorded are not run again (one
# such panic in CI stop 20 cost a 20-minute stage its whole run).
#
# CMD is the program with its leading words (env VAR=... PROGRAM); the
# tests are those `CMD --list` names whose "suite/name" matches --filter
# (Criterion's own glob syntax, extglob: !(...), @(a|b)). Exit status: 0
# when every test passed, else 1 after running all of them.
set -uo pipefail
shopt -s extglob
here=$(cd "$(dirname "$0")/.." && pwd)
name=$1
shift
filter='*'
cmd=()
while [ $# -gt 0 ]; do
	case $1 in
	--filter)
		filter=$2
		shift 2
		;;
	--filter=*)
		filter=${1#--filter=}
		shift
		;;
	*)
		cmd+=("$1")
		shift
		;;
	esac
done
ledger=${KEMARI_VM_JOB:+$KEMARI_VM_JOB/passed}
# KEMARI_VM_LEAVE_OUT=GLOB: tests not run in the emulated VM (each named in
# a line; the caller says why and where they run instead).
leave_out=${KEMARI_VM_LEAVE_OUT:-}

# Criterion's --list: "suite: N tests", then one "|-- name" or "`-- name"
# per test; that is its plain form, which LC_ALL=C asks for (under a UTF-8
# locale it draws "├── name": the test VM has no locale set, this host had
# one, and a make check of 2026-12-03 found no test inside the VM so).
tests=()
left=()
suite=
while IFS= read -r line; do
	case $line in
	*": "[0-9]*" test"*) suite=${line%%:*} ;;
	"|-- "* | '`-- '*)
		t="$suite/${line:4}"
		# shellcheck disable=SC2053 # the filter is a glob on purpose
		[[ $t == $filter ]] || continue
		# shellcheck disable=SC2053
		if [ -n "$leave_out" ] && [[ $t == $leave_out ]]; then
			left+=("$t")
			continue
		fi
		tests+=("$t")
		;;
	esac
done < <(LC_ALL=C "${cmd[@]}" --list 2>&1)
for t in "${left[@]}"; do
	echo "by-test: $name: $t LEFT OUT in the emulated VM (KEMARI_VM_LEAVE_OUT='$leave_out')"
done
if [ ${#tests[@]} -eq 0 ]; then
	echo "by-test: $name: no test matches '$filter' in ${cmd[*]}"
	exit 1
fi

failed=()
for t in "${tests[@]}"; do
	if [ -n "$ledger" ] && grep -qxF "$t" "$ledger" 2>/dev/null; then
		echo "by-test: $name: $t passed in an earlier boot of the emulated machine: not run again"
		continue
	fi
	if "$here/run-suite.sh" "$name: $t" "${cmd[@]}" --filter "$t"; then
		[ -n "$ledger" ] && echo "$t" >>"$ledger"
	else
		failed+=("$t")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "by-test: $name: ${#failed[@]} of ${#tests[@]} tests failed: ${failed[*]}${left:+; ${#left[@]} left out: ${left[*]}}"
	exit 1
fi
echo "by-test: $name: ${#tests[@]} of ${#tests[@]} tests passed${left:+; ${#left[@]} left out: ${left[*]}}"
