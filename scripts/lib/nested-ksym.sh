#!/bin/sh
# Names the first level's kernel symbols at the addresses given, for the
# NESTED-CPU lines of a first level that scripts/nested-run.sh stopped
# (the first level boots with nokaslr, so every boot of the same kernel has
# the same addresses):
#
#   scripts/nested-run.sh --script scripts/lib/nested-ksym.sh -- ffffffff81a17a0b ...
#
# prints `<address> <symbol> at <symbol address>` for each (a POSIX sh
# script, for the first level's busybox).
sort /proc/kallsyms > /tmp/kallsyms
for a in "$@"; do
    awk -v a="$a" '($1 "") <= (a "") { s = $3; at = $1 } END { print a, s, "at", at }' /tmp/kallsyms
done
