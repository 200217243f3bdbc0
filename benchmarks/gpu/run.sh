#!/usr/bin/env bash
# The GPU piece (issue 19, item 7), run on the device machine from the repository root:
#   python benchmarks/gpu/pack.py --prepared prepared/ferplus --out .gpu     # here, once (.gpu ignored by git)
#   device run: command "bash benchmarks/gpu/run.sh", carry [".gpu"], timeout_s 600
# It installs the carried wheels and dlib's weights, unpacks the faces, runs the `gpu` suite under a
# limit that ends the whole command within BUDGET seconds (8 minutes), and leaves results.jsonl,
# summary.md, summary.csv, suite.json and log.txt in $OUT (whatever runs finished, if the limit cut in).
# On a machine that has the packages already (a CPU check at a tiny size), the installs are skipped:
#   OUT=/tmp/gpu-check SUITE=/tmp/gpu-tiny.yaml bash benchmarks/gpu/run.sh
set -uo pipefail
START=$(date +%s)
BUDGET=${BUDGET:-480}
OUT=${OUT:-/tmp/gpu-out}
SUITE=${SUITE:-benchmarks/suites/gpu.yaml}
WORK=${WORK:-/tmp/gpu-piece}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1  # no update check: the machine is offline
mkdir -p "$OUT" "$WORK"

piece() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    if ! "$PY" -c "import albumentations" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
            .gpu/whl/*.whl || return 1
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
            --target "$WORK/site" . || return 1
        export PYTHONPATH="$WORK/site"
        "$PY" -c "import albumentations, occlusion_distill.cli" || return 1
    fi
    if ! "$PY" -c "from occlusion_distill.models.dlib_resnet import installed_weights as w; w()" 2>/dev/null; then
        # the faces extra's weights file alone: the package is found by its folder (a namespace package)
        local dir="$WORK/weights/face_recognition_models/models"
        mkdir -p "$dir"
        "$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
            .gpu/dlib_face_recognition_resnet_model_v1.dat.xz "$dir/dlib_face_recognition_resnet_model_v1.dat" \
            || return 1
        export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$WORK/weights"
    fi
    "$PY" benchmarks/gpu/unpack.py .gpu/ferplus.npz "$WORK/prepared/ferplus" || return 1
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    local left=$((BUDGET - ($(date +%s) - START) - 25))
    echo "setup took $(($(date +%s) - START)) s; the suite gets ${left} s"
    if [ "$left" -lt 30 ]; then echo "too little time left for the suite"; return 1; fi
    timeout --signal=INT --kill-after=15 "$left" "$PY" -m occlusion_distill bench run --suite "$SUITE" \
        --data-root "$WORK/prepared" --out "$WORK/results" --cache-dir "$WORK/cache" --quiet --resume
    echo "bench run exit $? after $(($(date +%s) - START)) s"
    if [ -f "$WORK/results/results.jsonl" ]; then
        "$PY" -m occlusion_distill bench report "$WORK/results" >/dev/null 2>&1 || echo "report failed"
        cp "$WORK/results"/{results.jsonl,summary.md,summary.csv,suite.json} "$OUT"/ 2>/dev/null
    fi
    echo "done in $(($(date +%s) - START)) s"
}

piece 2>&1 | tee "$OUT/log.txt"
