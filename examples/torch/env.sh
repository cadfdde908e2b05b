# Sourced by the scripts that JIT-build the PyTorch binding on a machine with
# a GPU (examples/torch/run_on_gpu.sh, bench/run_triton_peer.sh): the build
# environment, $OUT and $py set, and the versions found printed.
#   TORCH_CUDA_ARCH_LIST  default 9.0a (the Hopper wgmma/TMA path); set it for another GPU
#   FP8MOE_TORCH_BUILD    where the extension is built and cached
#   OUT                   where logs go (default /tmp/fp8moe-out)
export PATH=/usr/local/cuda/bin:$PATH
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
export FP8MOE_TORCH_BUILD=${FP8MOE_TORCH_BUILD:-/tmp/fp8moe-torch-build}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/fp8moe-out}
mkdir -p "$OUT"
py=${PYTHON:-python3}
"$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "|",
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' 2>&1 | tee "$OUT/torch-env.txt"
echo "nvcc: $(command -v nvcc || echo missing) $(nvcc --version 2>/dev/null | tail -1)"
echo "ninja: $(command -v ninja || "$py" -c 'import ninja; print(ninja.BIN_DIR)' 2>/dev/null || echo missing)"
