#!/usr/bin/env bash
# A/B of two builds of the layer benchmark: which setting of a compile-time
# knob (include/fp8moe/tunables.h), or which revision, is faster on this GPU.
#
#   scripts/ab-bench.sh build DIR A B [ARCH]
#       builds DIR/bench_moe_{a,b} and DIR/bench_digest_{a,b}; A and B are
#       each nvcc arguments ("-DFP8MOE_MMA_CLAIMED=0", "" for the defaults),
#       optionally led by @REV to build the headers of git revision REV
#       ("@HEAD~1", "@main -DFP8MOE_SM90_HALF_TILES=2"; the benchmark's own
#       sources are the working tree's either way). ARCH: 90a default.
#       With GEMM=1 also DIR/bench_gemm_{a,b} (the grouped GEMM alone).
#       Needs no GPU: the binaries can be copied to a machine that has one.
#   scripts/ab-bench.sh run DIR [ROUNDS] [-- bench_moe arguments]
#       on a machine with a GPU: both digests (same bits or not), then ROUNDS
#       (default 4) runs of each build, alternating a, b, a, b, ..., with the
#       same arguments (default: --load both --no-peer --seed 7); prints,
#       per (config, T, mode), the median time of each build, the median
#       ratio b / a and the range of the per-round ratios. CSVs stay in DIR.
#   scripts/ab-bench.sh run-gemm DIR [ROUNDS] [-- bench_gemm arguments]
#       the same with bench_gemm (default arguments: --rows 512,2048 --skip
#       portable,cublaslt,cluster,192,128,64), per (GEMM, rows, variant).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
cmd=${1:-}
dir=${2:?usage: scripts/ab-bench.sh build DIR A B [ARCH] | run DIR [ROUNDS] [-- args]}
case "$cmd" in
build)
  [ $# -ge 4 ] || { echo "usage: scripts/ab-bench.sh build DIR A B [ARCH]" >&2; exit 2; }
  arch=${5:-90a}
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  build_one() { # tag spec
    local tag=$1 spec=$2 inc=include flags
    if [[ "$spec" == @* ]]; then
      local rev=${spec%% *}
      rev=${rev#@}
      flags=${spec#"@$rev"}
      mkdir -p "$tmp/$tag"
      git archive "$rev" include | tar -x -C "$tmp/$tag"
      inc=$tmp/$tag/include
    else
      flags=$spec
    fi
    local f=(-std=c++17 -O3 -I"$inc" -gencode "arch=compute_$arch,code=sm_$arch")
    # shellcheck disable=SC2206 # the knob arguments split on spaces
    f+=($flags)
    local objs=() pids=() src pid
    for src in bench/bench_moe.cu bench/bench_cfg_*.cu; do
      nvcc "${f[@]}" -c "$src" -o "$tmp/$tag-$(basename "$src" .cu).o" &
      pids+=($!)
      objs+=("$tmp/$tag-$(basename "$src" .cu).o")
    done
    nvcc "${f[@]}" bench/bench_digest.cu -o "$dir/bench_digest_$tag" &
    pids+=($!)
    if [ "${GEMM:-0}" = 1 ]; then
      nvcc "${f[@]}" bench/bench_gemm.cu -lcublasLt -o "$dir/bench_gemm_$tag" &
      pids+=($!)
    fi
    for pid in "${pids[@]}"; do wait "$pid"; done # a failed compile stops the script
    nvcc "${f[@]}" "${objs[@]}" -lcublasLt -o "$dir/bench_moe_$tag"
    echo "ab-bench: built $tag (${spec:-defaults})"
  }
  build_one a "$3"
  build_one b "$4"
  ;;
run | run-gemm)
  prog=bench_moe keys=config,T,mode
  [ "$cmd" = run-gemm ] && prog=bench_gemm keys=gemm,rows_per_group,variant
  rounds=4
  shift 2
  if [ $# -gt 0 ] && [ "$1" != -- ]; then rounds=$1; shift; fi
  [ "${1:-}" = -- ] && shift
  args=("$@")
  if [ ${#args[@]} -eq 0 ]; then
    if [ "$prog" = bench_moe ]; then
      args=(--load both --no-peer --seed 7)
    else
      args=(--rows "512,2048" --skip "portable,cublaslt,cluster,192,128,64")
    fi
  fi
  # same bits or not (compare-builds.sh; its whole output in DIR/digests.txt)
  TMPDIR=$dir bash scripts/compare-builds.sh --run "$dir/bench_digest_a" "$dir/bench_digest_b" >"$dir/digests.txt" || true
  echo "$(tail -n 1 "$dir/digests.txt") [$dir/digests.txt]"
  rm -f "$dir"/ab_[ab]_*.csv
  for r in $(seq 1 "$rounds"); do
    for t in a b; do
      "$dir/${prog}_$t" "${args[@]}" --csv "$dir/ab_${t}_$r.csv" >/dev/null 2>"$dir/ab_$t.log" ||
        { echo "ab-bench: ${prog}_$t failed (see $dir/ab_$t.log)" >&2; exit 1; }
    done
  done
  grep -m1 '^#' "$dir/ab_a_1.csv" | cut -c1-160
  python3 - "$dir" "$rounds" "$keys" <<'EOF'
import csv, statistics, sys
d, rounds, keys = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
def load(t):
    rows = {}
    for r in range(1, rounds + 1):
        with open(f"{d}/ab_{t}_{r}.csv") as f:
            for row in csv.DictReader(l for l in f if not l.startswith("#")):
                k = (row[keys[0]], int(row[keys[1]]), row[keys[2]])
                rows.setdefault(k, []).append(float(row["time_us"]))
    return rows
a, b = load("a"), load("b")
print(f"{keys[0]:8} {keys[1][:6]:>6} {keys[2]:14} {'a_us':>10} {'b_us':>10} {'b/a':>7}  per-round b/a")
for k in sorted(a):
    if k not in b:
        continue
    ratios = sorted(y / x for x, y in zip(a[k], b[k]))
    print(f"{k[0]:8} {k[1]:6d} {k[2]:14} {statistics.median(a[k]):10.1f} {statistics.median(b[k]):10.1f} "
          f"{statistics.median(ratios):7.3f}  {ratios[0]:.3f}-{ratios[-1]:.3f}")
EOF
  ;;
*)
  echo "usage: scripts/ab-bench.sh build DIR A B [ARCH] | run|run-gemm DIR [ROUNDS] [-- arguments]" >&2
  exit 2
  ;;
esac
