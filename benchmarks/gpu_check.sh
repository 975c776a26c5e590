#!/usr/bin/env bash
# The GPU check, in one script (issue 16): on a CUDA machine, the CUDA checks and the three
# benchmarks, under 8 minutes in all, printing their figures; on a machine without CUDA, a dry
# run: each CUDA-only step is printed as "SKIP (no CUDA): ..." and the CPU-safe quick variants
# run instead, so that the script itself is exercised.
#
#     bash benchmarks/gpu_check.sh          # PYTHON=... to use another interpreter than .venv/bin/python
#
# Steps (each under its own time limit; a failing step is reported and the others still run;
# the exit status is 1 when any step failed):
#   1. the environment (torch, CUDA device, load average);
#   2. tests: those named for CUDA (`pytest -k cuda`: resolve_device's; every other test pins
#      train.device=cpu), then the device equivalences (batched GETAM = the
#      paper's loop, fast PAMR = the reference, label rule on the device = on the CPU) on a
#      tiny ViT; without CUDA the equivalences run on the CPU;
#   3. bench_pseudo_labels.py --device cuda --amp (48 images, 8 paper images); without CUDA --quick;
#   4. bench_getam.py and 5. bench_train_step.py --device cuda --amp: on the GPU (timings
#      synchronise it; the memory columns are the GPU's torch.cuda.max_memory_allocated, not host
#      RSS), the slow paper loops timed twice so that first-use kernel set-up is not counted;
#      without CUDA, a small CPU variant (batch 1, one repeat, no memory children) with --amp.
# Mixed precision (--amp, wsss.precision; each benchmark prints which precision actually ran):
# bench_pseudo_labels: cam.amp for ours and the floor (bfloat16 maps where native), the paper's
# procedure float32; bench_getam: every procedure under the same bfloat16 autocast
# (bfloat16_autocast_dtype, as cam.amp); bench_train_step: both ways with the trainers'
# mixed_precision (bfloat16, or float16 + GradScaler on a GPU without bfloat16). Without a native
# bfloat16 (an older GPU's maps, a CPU without AVX512-BF16/AMX) they run float32 and say so.
# The float32 figures on the GPU: rerun a step without --amp.

set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
START=$SECONDS
FAILED=()

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    CUDA=1
else
    CUDA=0
fi

step() {  # step NAME LIMIT_S COMMAND...: run COMMAND under a time limit, report its status and time
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo
    echo "=== $name (limit ${limit} s): $*"
    timeout "$limit" "$@"
    rc=$?
    echo "--- $name: rc $rc in $((SECONDS - t0)) s$([ "$rc" = 124 ] && echo ' (time limit)')"
    [ "$rc" = 0 ] || FAILED+=("$name (rc $rc)")
}

skip() {
    echo
    echo "=== SKIP (no CUDA): $*"
}

echo "=== environment"
"$PY" - <<'EOF'
import os, torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}" if torch.cuda.is_available() else ""))
print(f"{os.cpu_count()} CPUs, load avg {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
EOF

# --- 2. tests -----------------------------------------------------------------------------------
# the tests whose names say cuda (collected, not run, so none of them is missed or run twice)
CUDA_TESTS=$("$PY" -m pytest -q --collect-only -k cuda tests 2>/dev/null | grep '::' || true)
if [ "$CUDA" = 1 ]; then
    if [ -n "$CUDA_TESTS" ]; then
        step "pytest -k cuda" 45 "$PY" -m pytest -q $CUDA_TESTS
    else
        echo
        echo "=== pytest -k cuda: no test in tests/ is named for CUDA (all pin train.device=cpu); the device equivalences follow"
    fi
    DEVICE=cuda
else
    skip "pytest -q -k cuda: $(echo $CUDA_TESTS | wc -w) test(s) named for CUDA: ${CUDA_TESTS:-none}"
    skip "the device equivalences on cuda; running them on the CPU"
    DEVICE=cpu
fi
step "device equivalences on $DEVICE" 45 "$PY" - "$DEVICE" <<'EOF'
"""Batched GETAM = the paper's loop, fast PAMR = the reference, the label rule = its CPU run, on DEVICE."""
import sys

import timm
import torch

from wsss import getam
from tests.reference.getam import getam_reference
from wsss.refine.label_rule import pseudo_labels
from wsss.refine.pamr import pamr
from tests.reference.pamr import pamr_reference

device = torch.device(sys.argv[1])
torch.manual_seed(0)
model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, depth=4, img_size=64,
                          dynamic_img_size=True).eval().to(device)
x = torch.randn(3, 3, 48, 80, device=device)  # B×3×H×W
tags = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 1, 1, 1, 0]], dtype=torch.float32, device=device)
ref, out = getam_reference(model, x, tags), getam(model, x, tags)  # B×C×H×W
getam_err = float((out - ref).abs().max() / ref.abs().max())
image = torch.rand(3, 3, 48, 80, device=device) * 255
maps = torch.rand(3, 5, 48, 80, device=device) * (tags > 0)[:, :, None, None]  # B×C×H×W in [0, 1]
pamr_err = float((pamr(image, maps) - pamr_reference(image, maps)).abs().max())
labels = pseudo_labels(maps, tags, None)  # B×H×W
same = bool(torch.equal(labels.cpu(), pseudo_labels(maps.cpu(), tags.cpu(), None)))
print(f"{device}: GETAM batched vs loop rel. err {getam_err:.2e} (≤ 1e-4), PAMR fast vs reference max err "
      f"{pamr_err:.2e} (≤ 1e-5), label rule equal to the CPU's: {same}")
sys.exit(0 if getam_err <= 1e-4 and pamr_err <= 1e-5 and same else 1)
EOF

# --- 3.-5. benchmarks ---------------------------------------------------------------------------
THREADS=$(nproc)
if [ "$CUDA" = 1 ]; then
    step "bench_pseudo_labels.py on cuda" 150 "$PY" benchmarks/bench_pseudo_labels.py --device cuda --amp --images 48 --paper-images 8
    step "bench_getam.py on cuda" 120 "$PY" benchmarks/bench_getam.py --device cuda --amp --batch-sizes 1 8 --loop-repeats 2 \
        --threads "$THREADS"
    step "bench_train_step.py on cuda" 100 "$PY" benchmarks/bench_train_step.py --device cuda --amp --paper-repeats 2 \
        --threads "$THREADS"
else
    skip "bench_pseudo_labels.py --device cuda --amp --images 48 --paper-images 8; running --quick on the CPU"
    step "bench_pseudo_labels.py --quick --amp" 120 "$PY" benchmarks/bench_pseudo_labels.py --quick --amp --threads 1
    skip "bench_getam.py and bench_train_step.py --device cuda --amp; small CPU variants with --amp instead (bfloat16 where this CPU has it natively)"
    step "bench_getam.py (small, --amp)" 120 "$PY" benchmarks/bench_getam.py --batch-sizes 1 --repeats 1 --no-memory --threads 1 --amp
    step "bench_train_step.py (small, --amp)" 150 "$PY" benchmarks/bench_train_step.py --batch 1 --repeats 1 --no-memory --threads 1 \
        --amp
fi

echo
echo "=== gpu_check: $((SECONDS - START)) s in all, CUDA $([ "$CUDA" = 1 ] && echo yes || echo 'no (dry run)'), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "all steps passed"
