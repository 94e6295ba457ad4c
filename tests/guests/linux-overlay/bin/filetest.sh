#!/bin/busybox sh
# filetest.sh write|read: 1 MiB of random bytes onto /dev/vda (write), then
# the MD5 of the first MiB of /dev/vda as the guest reads it back.
if [ "$1" = write ]; then
	dd if=/dev/urandom of=/tmp/f bs=1048576 count=1 2>/dev/null || exit 1
	dd if=/tmp/f of=/dev/vda bs=1048576 count=1 conv=fsync 2>/dev/null || exit 1
	echo 3 >/proc/sys/vm/drop_caches
fi
sum=$(dd if=/dev/vda bs=1048576 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
echo "filetest: $1 md5 $sum"
exit 0
