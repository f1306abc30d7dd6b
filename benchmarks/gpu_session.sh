#!/usr/bin/env bash
# The GPU checks of issue 16 in one device call (7.3 minutes on an H200, 2026-11-29), run from a folder
# holding app/, benchmarks/ and .whl/ (transformers 5.24.0 and peft 0.21.2 wheels; the device image
# has transformers 5.17): see docs/benchmarks.md "Running the GPU checks". Writes to $OUT, most
# needed first, since a session has 15 minutes of device time in all:
#   gpu_parity.json      graph replay against the eager forward, layer by layer, bf16 and fp8 (every
#                        layer must be equal since the graphs keep their masks alive, 2026-11-28)
#   gpu_fused.json       each fused kernel (layer, attention heads, gated GELU, softcap, experts'
#                        sort, fp8 rows) against what it replaced: equal bit for bit, and both
#                        sides' milliseconds
#   gpu_real_shape.json  every mode, fp8 with Triton experts (to time before it is the default), the Whisper peers, then compiled layers while the budget lasts;
#                        the floor, a kernel profile, and the graph check by one step's logits
#   gpu_kernels.json     an int8/int4 linear (never timed alone before), each quantized expert
#                        product's accuracy, the routed epilogue bit for bit, the Triton kernel on
#                        fp8 codes and on bf16 weights (as Ada/Blackwell and A100/RTX GPUs run
#                        them) against torch's, and the Triton tile sweep (int4: 8 warps, nibbles
#                        by float bits)
set -uo pipefail
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv  # printed, not saved: 8 files come back at most
timeout 80 python3 benchmarks/gpu_diagnose.py --parity bf16,fp8 --out "$OUT/gpu_parity.json" > "$OUT/gpu_parity.log" 2>&1
echo "gpu_diagnose parity: exit $?"
timeout 60 python3 benchmarks/gpu_fused_check.py --out "$OUT/gpu_fused.json" > "$OUT/gpu_fused.log" 2>&1
echo "gpu_fused_check: exit $?"
timeout 330 python3 benchmarks/gpu_real_shape.py --json --out "$OUT/gpu_real_shape.json" --runs 5 --budget-s 200 --batches 4 \
  --parts bf16,fp8,fp8+triton-experts,int8,int4,whisper-small,whisper-large-v3-turbo,fp8+compile,int4+compile,int8+compile,bf16+compile,whisper-small+static-compile,whisper-large-v3-turbo+static-compile \
  > "$OUT/gpu_real_shape.log" 2>&1
echo "gpu_real_shape: exit $?"
timeout 100 python3 benchmarks/gpu_diagnose.py --kernels-only --out "$OUT/gpu_kernels.json" > "$OUT/gpu_kernels.log" 2>&1
echo "gpu_diagnose kernels: exit $?"
tail -n 5 "$OUT"/*.log
