#!/usr/bin/env bash
# Install, idempotently and only what is missing, every Debian package the
# project needs (build, tests, the emulated test VM, plots).
set -euo pipefail

PKGS=(
	build-essential pkg-config clang-format libssl-dev
	libcriterion-dev
	libibverbs-dev librdmacm-dev libfabric-dev libxen-dev
	rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest libfabric-bin
	qemu-system-x86 busybox-static kmod cpio socat
	iproute2 gnuplot-nox
	scdoc man-db libmicrohttpd-dev python3-prometheus-client
	clang libclang-rt-14-dev
	gdb
)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages: ${missing[*]}; run 'make deps' as root (or: sudo apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq -o Acquire::Retries=3 >/dev/null 2>&1 ||
	echo "deps: apt-get update reported errors (continuing with the cached lists)" >&2
apt-get install -y -qq --no-install-recommends -o Acquire::Retries=3 "${missing[@]}" >/dev/null ||
	{ echo "deps: apt-get install failed for: ${missing[*]}" >&2; exit 1; }
