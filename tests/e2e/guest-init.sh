#!/bin/sh
# /init of the second-level guest (the Debian kernel booted by microvm).
#
# First thing: tell the VMM's boot timer that the guest reached userspace, by
# writing 123 to the first byte at 0xC000_0000 through /dev/mem. microvm then
# logs "Guest-boot-time = ..." on stderr; the harness reports that time.
# Then exec the checks.
PATH=/bin
export PATH
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
if devmem 0xc0000000 8 123; then
    echo "E2E-INFO boot-timer: wrote 123 to 0xc0000000"
else
    echo "E2E-INFO boot-timer: devmem write to 0xc0000000 failed"
fi
exec /checks.sh
