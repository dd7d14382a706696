#!/usr/bin/env bash
# The first run on a GPU, prepared (benchmarks/gpu_smoke.py says what each step checks): every method through
# the CLI in fp32, bf16 and fp16-pure, ViT-B/16 at the published batch sizes, the gpu-marked tests, a resume
# after SIGTERM, torchrun with nccl, bench_speed.py at published sizes; one summary, OUT/gpu_smoke.md.
#
# On a lent device machine (torch there, open_clip and ftfy not, no network):
#   1. here, once:              benchmarks/gpu_smoke.sh --prepare     (wheels into .whl/, which git ignores)
#   2. there, with .whl carried: benchmarks/gpu_smoke.sh               (about 5 minutes on one H200)
#      through the device tool: run(command="bash benchmarks/gpu_smoke.sh", carry=[".whl"], timeout_s=480)
#   3. paste OUT/gpu_smoke.md and OUT/bench_speed.txt into docs/performance.md.
# On any machine with CUDA and the project installed, step 2 alone. Without a GPU:
#   benchmarks/gpu_smoke.sh --dry-run   (the CPU-runnable steps; the tests run this)
# Other arguments go to gpu_smoke.py (--out DIR, --only STEP ...; --help).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
    # The device's Python is 3.12 on manylinux x86_64; the project's dependencies it lacks, pinned.
    rm -rf .whl && mkdir -p .whl
    "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    ls -l .whl
    exit 0
fi

if compgen -G ".whl/*.whl" > /dev/null; then
    site=${TMPDIR:-/tmp}/metaprompt-gpu-smoke-site
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The project from this checkout, whether or not it is installed.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$python" benchmarks/gpu_smoke.py "$@"
