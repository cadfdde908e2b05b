#!/usr/bin/env bash
# Sum the results of a meson test log (Criterion programs run with --verbose):
# one line per Criterion program, one line for the other programs (header
# checks, c11_header_check: each counts as one test, passed on exit 0,
# skipped on 77, failed otherwise; a Criterion program that died before its
# summary counts there too, as failed), then
# "tests: N passed, N failed, N skipped".
log=${1:?usage: criterion-summary.sh meson-logs/testlog.txt}
awk '
  function other() {
    if (name == "" || criterion) return
    if (result ~ /exit status 0$/) op++; else if (result ~ /exit status 77$/) os++; else of++
  }
  /^==+ [0-9]+\/[0-9]+ =+$/ { other(); name = ""; criterion = 0; result = ""; next }
  /^test:/ { name = $0; sub(/^test:[ \t]*/, "", name); sub(/^[^ ]+ \/ /, "", name) }
  /^result:/ { result = $0 }
  /\[SKIP\]/ { skip[name]++; tskip++ }
  /Synthesis: Tested:/ {
    criterion = 1
    for (i = 1; i <= NF; i++) {
      if ($i == "Passing:") p = $(i + 1) + 0
      if ($i == "Failing:") f = $(i + 1) + 0
      if ($i == "Crashing:") c = $(i + 1) + 0
    }
    pass += p; fail += f + c
    printf "  %-28s passed %4d  failed %3d  skipped %3d\n", name, p, f + c, skip[name] + 0
  }
  END {
    other()
    printf "  %-28s passed %4d  failed %3d  skipped %3d\n", "(other programs)", op, of, os
    printf "tests: %d passed, %d failed, %d skipped\n", pass + op, fail + of, tskip + os
  }
' "$log"
