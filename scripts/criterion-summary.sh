#!/usr/bin/env bash
# Sum the Criterion results of a meson test log (tests run with --verbose):
# one line per program, then "tests: N passed, N failed, N skipped".
log=${1:?usage: criterion-summary.sh meson-logs/testlog.txt}
awk '
  /^==+ [0-9]+\/[0-9]+ =+$/ { next }
  /^test:/ { name = $2 }
  /\[SKIP\]/ { skip[name]++; tskip++ }
  /Synthesis: Tested:/ {
    for (i = 1; i <= NF; i++) {
      if ($i == "Passing:") p = $(i + 1) + 0
      if ($i == "Failing:") f = $(i + 1) + 0
      if ($i == "Crashing:") c = $(i + 1) + 0
    }
    pass += p; fail += f + c
    printf "  %-24s passed %4d  failed %3d  skipped %3d\n", name, p, f + c, skip[name] + 0
  }
  END { printf "tests: %d passed, %d failed, %d skipped\n", pass, fail, tskip }
' "$log"
