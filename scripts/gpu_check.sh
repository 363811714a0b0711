#!/usr/bin/env bash
# The GPU check of the kernel path, as ONE command for a lent H100/H200 (Python 3.12, torch cu130, offline):
# build mamba-ssm for sm_90, then run tests/test_gpu.py (+ tests/test_ops_kernels.py) and benchmarks/gpu_forward.py.
# Every step is time-boxed inside BUDGET_S (default 570 s, under the device tool's 600 s per command).
#
# ../shared does not travel to the device machine, so first, here, in the repository root:
#     cp -r ../shared/gpu .gpu          (.gpu/ is git-ignored)
# then call the device tool with:  command "bash scripts/gpu_check.sh", carry [".gpu"], timeout_s 600.
#
# Env: CAUSAL=1   also build causal-conv1d (about 3-4 more minutes; enables its conv kernel and mamba_inner_fn).
#      BUDGET_S   wall-clock budget of the whole script in seconds.
# Logs (in $OUT, at most 8 files): check.log, env.txt, build.log, build_mamba.log [, build_causal.log],
# pytest.log, bench.log, bench.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-570}
T0=$(date +%s)
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/check.log"; }
# The smaller of $1 seconds and what is left of the budget once $2 seconds are kept for the later steps.
step_timeout() {
    local t=$(( BUDGET_S - ($(date +%s) - T0) - $2 ))
    (( t > $1 )) && t=$1
    (( t < 10 )) && t=10
    echo "$t"
}

if [ ! -d .gpu ] && [ -d ../shared/gpu ]; then
    cp -r ../shared/gpu .gpu
fi
if [ ! -f .gpu/gpu_build.sh ]; then
    log "no build kit in .gpu/: run 'cp -r ../shared/gpu .gpu' in the repository root and pass carry=[\".gpu\"]"
    exit 2
fi
PKGS=mamba
[ "${CAUSAL:-0}" = 1 ] && PKGS="mamba causal"
# /tmp/site: where gpu_build.sh installs the kernels; the working tree itself provides caduceus_hf (no pip needed).
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# 1. Build (skipped on a warm machine that already has it). timeout signals the whole process group: no stray nvcc.
if python3 -c "import mamba_ssm" 2>/dev/null && { [ "$PKGS" = mamba ] || python3 -c "import causal_conv1d" 2>/dev/null; }; then
    log "build: skipped, kernels already importable"
else
    t=$(step_timeout 420 170)
    log "build: PKGS='$PKGS', timeout ${t}s"
    OUT="$OUT" PKGS="$PKGS" timeout "$t" bash .gpu/gpu_build.sh > "$OUT/build.log" 2>&1
    rc=$?
    log "build: rc=$rc (124 = timed out)"
    if (( rc != 0 )); then
        tail -n 20 "$OUT"/build*.log
    fi
fi

# 2. Versions.
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 - <<'EOF'
import importlib, torch, transformers
print(f"python torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")
print(f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
for name in ("mamba_ssm", "causal_conv1d"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as err:
        print(f"{name}: not importable ({type(err).__name__}: {err})")
from caduceus_hf import backends
from caduceus_hf.ops import kernels
print(f"caduceus_hf kernels: {kernels.load()}")
if torch.cuda.is_available():
    print(f"caduceus_hf backend 'auto' on cuda: {backends.resolve('auto', torch.device('cuda')).name}")
EOF
} 2>&1 | tee "$OUT/env.txt"

# 3. Tests.
t=$(step_timeout 200 100)
log "pytest: timeout ${t}s"
timeout "$t" python3 -m pytest tests/test_gpu.py tests/test_ops_kernels.py -v -rs -p no:cacheprovider \
    > "$OUT/pytest.log" 2>&1
rc_tests=$?
tail -n 25 "$OUT/pytest.log"
log "pytest: rc=$rc_tests"

# 4. Benchmark: whatever is left, less a margin for the files to be written.
t=$(step_timeout 300 0)
log "benchmark: timeout ${t}s"
timeout "$t" python3 benchmarks/gpu_forward.py --budget-s $(( t > 60 ? t - 40 : 20 )) --json "$OUT/bench.json" \
    2>&1 | tee "$OUT/bench.log"
log "benchmark: rc=${PIPESTATUS[0]}; total $(( $(date +%s) - T0 ))s"
exit "$rc_tests"
