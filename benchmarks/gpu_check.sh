#!/usr/bin/env bash
# The GPU check, for a lent GPU machine with no network and no vLLM (this project's device
# tool: torch, transformers, accelerate and peft are there; TRL, datasets and math-verify
# travel as wheels).  What it runs, each step logged to $OUT (or /tmp/gpu-check):
#
#   1. configs/gpu-smoke.toml end to end with launcher = "local" (no Ray there) and the
#      HF answering backend (no vLLM there): TRL's GRPOTrainer on CUDA in bfloat16 with
#      gradient checkpointing, two micro-batches per generation batch, the base placed by
#      the GPU budget, transformers' device pointed at the training GPU (train_on_gpu),
#      adapters saved, answered on CUDA, voted, fitted, reported;
#   0. whether the GPU's SDPA kernels give NaN on a fully masked (left-padded) row;
#   2. the population trainer on CUDA against the TRL path (bench_train.py --device cuda,
#      N = 16 first, then 4, on the random ~0.5B model, 3 steps): the GPU row issue 14
#      left open.
#
# vLLM's paths (TRL's colocated engine and its weight sync, multi-LoRA serving, tensor
# parallelism) need a machine with vLLM installed: `ensemble run configs/gpu-smoke.toml`.
#
# Here, where pip reaches PyPI (once; .whl/ is ignored by git through .git/info/exclude):
#     bash benchmarks/gpu_check.sh --fetch
# There (the device tool: carry [".whl"], timeout ~540 s):
#     bash benchmarks/gpu_check.sh
# Anywhere with the project's own environment, no install (a dry run of the steps):
#     GPU_CHECK_PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --no-install
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(trl==1.16.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
        math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2)

if [[ "${1:-}" == "--fetch" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    # The device's Python is 3.12 (multiprocess ships one wheel per Python version).
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    ls -l .whl
    exit 0
fi

PY=${GPU_CHECK_PYTHON:-python3}
if [[ "${1:-}" != "--no-install" ]]; then
    ls .whl/*.whl > /dev/null || { echo "no .whl/: run 'bash benchmarks/gpu_check.sh --fetch' where pip reaches PyPI, and carry .whl"; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export ENSEMBLE_CACHE=${ENSEMBLE_CACHE:-/tmp/gpu-check-cache}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
work=$(mktemp -d)

{ nvidia-smi || echo "no nvidia-smi"; "$PY" -c "import torch, transformers, peft, trl; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'); \
print('transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__)" \
  || echo "an import failed: the steps below say which"; } 2>&1 | tee "$OUT/versions.txt"

echo "== 0. SDPA on a fully masked (left-padded) row, bf16, forward and backward" | tee "$OUT/sdpa.log"
# Both trainers left-pad; some CUDA SDPA kernels give NaN for a row with nothing to attend
# to (the population trainer then stops with FloatingPointError; TRL's sampler raises).
"$PY" - <<'PYEOF' 2>&1 | tee -a "$OUT/sdpa.log" || true
import torch, torch.nn.functional as F
if not torch.cuda.is_available():
    print("no CUDA: skipped"); raise SystemExit
from torch.nn.attention import SDPBackend, sdpa_kernel
q = torch.randn(2, 4, 8, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
mask = torch.ones(2, 1, 8, 8, dtype=torch.bool, device="cuda").tril()
mask[0, :, :3, :3] = False  # row 0: three pad positions attend to nothing
for name, kernels in (("default", None), ("efficient", [SDPBackend.EFFICIENT_ATTENTION]),
                      ("cudnn", [SDPBackend.CUDNN_ATTENTION]), ("math", [SDPBackend.MATH])):
    try:
        ctx = sdpa_kernel(kernels) if kernels else torch.enable_grad()
        with ctx:
            out = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
            out.float().sum().backward()
        print(f"{name}: forward finite {bool(out.isfinite().all())}, "
              f"backward finite {bool(q.grad.isfinite().all())}")
        q.grad = None
    except Exception as exc:  # a kernel that refuses this shape or mask
        print(f"{name}: not run ({type(exc).__name__}: {str(exc)[:80]})")
PYEOF

echo "== 1. the smoke config, local launcher, HF answering" | tee "$OUT/smoke.log"
sed -e 's/^launcher = "ray".*/launcher = "local"/' -e 's/^backend = "auto".*/backend = "hf"/' \
    -e "s|^out = .*|out = \"$work/smoke\"|" configs/gpu-smoke.toml > "$work/smoke.toml"
start=$(date +%s)
# A failed step is reported and the next one still runs: one lease, every answer.
rc=0; "$PY" -m ensemble.cli run "$work/smoke.toml" 2>&1 | tee -a "$OUT/smoke.log" || rc=$?
echo "smoke: rc=$rc, $(( $(date +%s) - start )) s" | tee -a "$OUT/smoke.log"
cp "$work/smoke/variants/train.json" "$OUT/smoke-train.json" 2>/dev/null || true
cp "$work/smoke/variants/v000/variant.json" "$OUT/smoke-v000.json" 2>/dev/null || true
cp "$work/smoke/report.md" "$OUT/smoke-report.md" 2>/dev/null || true

echo "== 2. population trainer vs TRL on CUDA" | tee "$OUT/bench_train.log"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    rc=0; "$PY" benchmarks/bench_train.py --device cuda --n 16,4 --steps 3 2>&1 \
        | tee -a "$OUT/bench_train.log" || rc=$?
    echo "bench_train: rc=$rc" | tee -a "$OUT/bench_train.log"
else
    echo "no CUDA here: skipped (the CPU rows are bench_train.py's default)" | tee -a "$OUT/bench_train.log"
fi
rm -rf "$work"
