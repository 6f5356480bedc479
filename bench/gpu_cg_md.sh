#!/usr/bin/env bash
# Issue 16's GPU measurement in one command: OpenMM CUDA against the CG engine (the inference
# form on CUDA, torch ops) at 512 and 4096 beads, batch 1 and 32. Sized to fit in ten minutes
# of device time. Two steps:
#
#   here (a machine that reaches PyPI), once:   bash bench/gpu_cg_md.sh prepare MODEL.pt
#   on the lent GPU machine (device tool's run, carry [".whl", ".gpu-model"]):
#                                               bash bench/gpu_cg_md.sh run
#
# "prepare" downloads the Python 3.12 wheels the device machine lacks (DEPENDENCIES.md, "The lent
# GPU machine"; vesin-torch for the neighbour lists) into .whl/ and copies the model to
# .gpu-model/model.pt (both ignored by git through .git/info/exclude). "run" installs them with
# --no-deps into /tmp/site, puts src/ on PYTHONPATH, points LD_LIBRARY_PATH at the machine's
# nvidia/*/lib (OpenMM's CUDA plugin needs the CUDA 13 runtime, NVRTC and cuFFT), and writes the
# tables to $OUT (the device tool's output folder) or bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    model=${2:?usage: bash bench/gpu_cg_md.sh prepare MODEL.pt}
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.gpu-model/' .git/info/exclude 2>/dev/null || echo '/.gpu-model/' >> .git/info/exclude
    mkdir -p .whl .gpu-model
    cp "$model" .gpu-model/model.pt
    plat=""
    for n in 34 28 27 24 17; do plat="$plat --platform manylinux_2_${n}_x86_64"; done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $plat --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
        openmm==8.6.1 openmm-cuda-13==8.6.1 hippynn==0.1.3 freud-analysis rowan parsnip-cif pydantic \
        pydantic-core annotated-types typing-inspection 'typing_extensions>=4.16' ase vesin-torch==0.6.2
    du -sh .whl
    ;;
run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src
    sp=$(python3 -c 'import site; print(site.getsitepackages()[0])')
    export LD_LIBRARY_PATH="$(ls -d "$sp"/nvidia/*/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}"
    out=${OUT:-bench/out}
    mkdir -p "$out"
    python3 -c 'import openmm; print("OpenMM plugin failures:", openmm.Platform.getPluginLoadFailures())'
    nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
    m=.gpu-model/model.pt
    timeout 200 python3 bench/cg_md.py --model $m --device cuda --n-molecules 512 --batch 1 32 --kernels \
        --steps 100 --rounds 3 | tee "$out/cg_md_512_cuda.txt"
    timeout 300 python3 bench/cg_md.py --model $m --device cuda --n-molecules 4096 --batch 1 32 --kernels \
        --steps 20 --rounds 3 --aa-steps 500 | tee "$out/cg_md_4096_cuda.txt"
    ;;
*)
    echo "usage: bash bench/gpu_cg_md.sh prepare MODEL.pt | run" >&2
    exit 2
    ;;
esac
