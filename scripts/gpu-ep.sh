#!/usr/bin/env bash
# Runs on a machine with >= 2 GPUs, from the repository root: builds the two
# expert-parallel examples against the NCCL found there and runs them on a
# DeepSeek-V3 layer, each compared with the whole layer on GPU 0:
#   examples/ep_alltoall.cu  each GPU its own T tokens and E/N experts,
#                            all-to-all dispatch and combine
#   examples/ep_nccl.cu      every GPU all N*T tokens, its E/N experts, an
#                            all-reduce of the partial outputs
# and ep_alltoall once more with one rank on GPU 0. The last lines are a
# summary.
#
#   usage: bash scripts/gpu-ep.sh                  # all GPUs, T = 128 1024 8192 per GPU
#          NGPUS=2 TOKENS="512" bash scripts/gpu-ep.sh
#
# NCCL is looked for in $NCCL_HOME, /usr/local/cuda, the system paths, then
# the nvidia-nccl wheel of the Python that has PyTorch. Binaries built
# elsewhere and put in .bundle-ep/ (build lines in the examples' top
# comments) run with the libnccl found; without them the script builds.
# NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE=0.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
OUT=${OUT:-/tmp/fp8moe-out}
mkdir -p "$OUT"
NGPUS=${NGPUS:-$(nvidia-smi -L | wc -l)}
TOKENS=${TOKENS:-128 1024 8192}

nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "$OUT/ep-gpus.txt"
nvidia-smi topo -m >"$OUT/ep-topo.txt" 2>&1 || true

# --- find NCCL: a directory with include/nccl.h and one with libnccl.so* ---
inc="" lib=""
candidates=("${NCCL_HOME:-/nonexistent}" /usr/local/cuda /usr/local/nccl /usr)
py=$(command -v python3 || true)
if [ -n "$py" ]; then
  wheel=$("$py" -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
  [ -n "$wheel" ] && candidates+=("$wheel")
fi
for d in "${candidates[@]}"; do
  [ -z "$inc" ] && [ -f "$d/include/nccl.h" ] && inc=$d/include
  if [ -z "$lib" ]; then
    for l in "$d/lib64" "$d/lib" "$d/lib/x86_64-linux-gnu"; do
      if ls "$l"/libnccl.so* >/dev/null 2>&1; then lib=$l; break; fi
    done
  fi
done
[ -z "$lib" ] && lib=$(dirname "$(ldconfig -p 2>/dev/null | awk '/libnccl\.so/ {print $NF; exit}')" 2>/dev/null)
echo "NCCL: include ${inc:-(not found)}, library ${lib:-(not found)}"
[ -n "$lib" ] || { echo "gpu-ep: no libnccl found (set NCCL_HOME)"; exit 1; }
export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}

# --- build (or take the carried binaries) ---
dir=.bundle-ep
if ! { [ -x $dir/ep_alltoall ] && [ -x $dir/ep_nccl ]; } && [ -n "$inc" ] && command -v nvcc >/dev/null; then
  mkdir -p build-ep
  dir=build-ep
  # link the unversioned name if there is one, else the soname the wheel ships
  if [ -e "$lib/libnccl.so" ]; then link=-lnccl; else link=-l:libnccl.so.2; fi
  echo "building the EP examples ($(nvcc --version | tail -1))"
  start=$SECONDS
  for ex in ep_alltoall ep_nccl; do
    nvcc -std=c++17 -O3 -Iinclude -I"$inc" -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_89,code=sm_89 \
      examples/$ex.cu -o build-ep/$ex -L"$lib" $link -Xlinker -rpath="$lib" >"$OUT/ep-build-$ex.log" 2>&1 &
  done
  wait
  echo "built in $((SECONDS - start)) s"
fi
for ex in ep_alltoall ep_nccl; do
  [ -x "$dir/$ex" ] || { echo "gpu-ep: no $dir/$ex (no nccl.h or nvcc here, or the build failed)"; cat "$OUT/ep-build-$ex.log" 2>/dev/null; exit 1; }
done

summary=()
rc_all=0
run() { # name log args...
  local name=$1 log=$2
  shift 2
  local start=$SECONDS
  "$dir/$name" "$@" >"$log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || rc_all=1
  cat "$log"
  summary+=("$(printf '%-11s %-12s rc=%s %3ss' "$name" "$*" "$rc" $((SECONDS - start)))")
  while IFS= read -r line; do summary+=("    $line"); done < <(grep -a -E '^(single GPU|EP |bf16 vs|ep_(nccl|alltoall): (PASS|FAIL))' "$log")
}
for T in $TOKENS; do
  run ep_alltoall "$OUT/ep-alltoall-T$T.log" "$T" "$NGPUS"
  run ep_nccl "$OUT/ep-nccl-T$T.log" $((T * NGPUS)) "$NGPUS"
done
run ep_alltoall "$OUT/ep-alltoall-one-rank.log" "$(echo $TOKENS | awk '{print $1}')" 1
echo "==== summary: expert parallelism on $NGPUS GPU(s), $(head -1 "$OUT/ep-gpus.txt" | cut -d, -f2) ===="
printf '%s\n' "${summary[@]}"
exit $rc_all
