#!/bin/sh
# SPDX-License-Identifier: MIT
# Fail if a guest image contains SSE/AVX/x87 instructions: they fault in the
# guests on the machines we run on, so gcc must never have emitted any.
#   guest/check-nosse.sh [ELF...]   (default: build/guests/*.elf)
set -u

[ $# -gt 0 ] || set -- build/guests/*.elf
status=0
for elf in "$@"; do
	if [ ! -f "$elf" ]; then
		echo "check-nosse: $elf: no such file" >&2
		status=1
		continue
	fi
	# Instruction lines only (they hold a tab): symbol names may contain
	# anything. Registers first, then the x87 mnemonics that need none.
	x87='f(ld|st|ild|ist|xsave|xrstor|nstenv|ldenv|init|ninit)'
	bad=$(objdump -d --no-show-raw-insn "$elf" |
		awk -F'\t' 'NF >= 2' |
		grep -E "xmm|ymm|zmm|%st|[[:space:]]$x87")
	if [ -n "$bad" ]; then
		echo "check-nosse: $elf uses SSE/x87:" >&2
		echo "$bad" >&2
		status=1
	fi
done
exit $status
