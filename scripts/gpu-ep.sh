#!/usr/bin/env bash
# Runs on a machine with >= 2 GPUs, from the repository root: builds
# examples/ep_nccl.cu against the NCCL found there and runs it (expert
# parallelism: each GPU its shard of a DeepSeek-V3 layer, NCCL all-reduce,
# compared with the whole layer on GPU 0). The last lines are a summary.
#
#   usage: bash scripts/gpu-ep.sh                # 2 GPUs, T = 16 128 512 4096
#          NGPUS=4 TOKENS="512" bash scripts/gpu-ep.sh
#
# NCCL is looked for in $NCCL_HOME, /usr/local/cuda, the system paths, then
# the nvidia-nccl wheel of the Python that has PyTorch. Where no nccl.h is
# found but a binary built elsewhere sits at .bundle-ep/ep_nccl (build line
# in the example's top comment), that binary runs with the libnccl found.
# NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE=0.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
OUT=${OUT:-/tmp/fp8moe-out}
mkdir -p "$OUT"
NGPUS=${NGPUS:-2}
TOKENS=${TOKENS:-16 128 512 4096}

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

# --- build (or take the carried binary) ---
bin=.bundle-ep/ep_nccl
if [ -n "$inc" ] && command -v nvcc >/dev/null; then
  mkdir -p build-ep
  # link the unversioned name if there is one, else the soname the wheel ships
  if [ -e "$lib/libnccl.so" ]; then link=-lnccl; else link=-l:libnccl.so.2; fi
  echo "building examples/ep_nccl.cu ($(nvcc --version | tail -1))"
  start=$SECONDS
  nvcc -std=c++17 -O3 -Iinclude -I"$inc" -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_89,code=sm_89 \
    examples/ep_nccl.cu -o build-ep/ep_nccl -L"$lib" $link -Xlinker -rpath="$lib" 2>&1 | tee "$OUT/ep-build.log" ||
    { echo "gpu-ep: build failed"; exit 1; }
  [ -x build-ep/ep_nccl ] || { echo "gpu-ep: build failed"; exit 1; }
  echo "built in $((SECONDS - start)) s"
  bin=build-ep/ep_nccl
elif [ ! -x "$bin" ]; then
  echo "gpu-ep: no nccl.h or nvcc here, and no carried $bin"
  exit 1
fi

summary=()
rc_all=0
for T in $TOKENS; do
  log=$OUT/ep-T$T.log
  start=$SECONDS
  "$bin" "$T" "$NGPUS" >"$log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || rc_all=1
  cat "$log"
  summary+=("$(printf 'T=%-5s rc=%s %3ss' "$T" "$rc" $((SECONDS - start)))")
  while IFS= read -r line; do summary+=("    $line"); done < <(grep -a -E '^(single GPU|EP |bf16 vs|ep_nccl: (PASS|FAIL))' "$log")
done
echo "==== summary: ep_nccl on $NGPUS GPU(s), $(head -1 "$OUT/ep-gpus.txt" | cut -d, -f2) ===="
printf '%s\n' "${summary[@]}"
exit $rc_all
