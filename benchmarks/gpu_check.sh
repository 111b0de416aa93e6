#!/usr/bin/env bash
# The CUDA measurements that issues 11 and 12 ask for, as one command for a session that is
# lent a GPU (the `device` tool: a fresh machine with CUDA PyTorch, no network). Nothing of
# the library or its tests depends on it.
#
# Before the call, here (the peers are pure-Python wheels; the script runs without them):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl \
#       torch-optimizer==0.3.0 pytorch-optimizer pytorch-ranger
# The call:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# It writes to $OUT (what comes back): the GPU's name, step_time.py's table and JSON for the
# layer-wise family against torch's fused Adam on W1 (each step synchronized, wall clock),
# and precision.py's compiled step times of fp32, bf16 + stochastic rounding and 8-bit state
# (with bitsandbytes and torchao where they import there). Each stage has its own time limit,
# so the script ends inside the device tool's 10 minutes even when a stage is cut short; a cut
# stage still leaves the rows it printed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, optimkit; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$OUT/gpu.txt" || exit 1

# issue 11: compile=True against fused Adam, the eager and flat steps against the peers
timeout 330 python3 benchmarks/step_time.py --device cuda -w W1 \
    -o adam lamb ralamb rangerlars lars larc novograd diffgrad deepmemory \
    --modes eager flat flat+compile --warmup 5 --repeat 30 \
    --json "$OUT/step_time_cuda.json" 2>&1 | tee "$OUT/step_time_cuda.md"

# issue 12: the compiled 8-bit step against the fp32 compiled step (timing only, no training)
timeout 200 python3 benchmarks/precision.py --device cuda --seeds 0 \
    -o adam adamw lamb ranger --configs fp32 bf16+stochastic fp32+8bit \
    --big 16777216 --rounds 3 --repeats 20 \
    --json "$OUT/precision_cuda.json" 2>&1 | tee "$OUT/precision_cuda.md"
