#!/usr/bin/env bash
# The GPU check, one script: on a CUDA machine it installs what it needs and, in under 8 minutes,
# runs the batching benchmark (GE2E and ECAPA, batched against one at a time) and a load test
# (concurrent real-time calls against `authsvc serve --device cuda`), writing their results
# files. Without CUDA the same steps run on the CPU path, shortened (a check that the script and
# both benchmarks work here; its figures are not the GPU's).
#
#   bench/gpu.sh [OUT_DIR]     default bench/results/gpu-<device>; AUTHSVC_DATA: the speech data
#                              (default ../shared/data); AUTHSVC_NO_INSTALL=1 uses .venv as it is;
#                              AUTHSVC_PYTHON=python3 uses that interpreter (a lent GPU box's own
#                              torch, the repository on PYTHONPATH) and installs nothing
#
# Each step has its own time limit inside the 8 minutes; the summary prints what each wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
# A machine without a package index (a lent GPU box) brings its environment: skip the install.
if [ -n "${AUTHSVC_PYTHON:-}" ]; then
    PY=$AUTHSVC_PYTHON
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    [ -n "${AUTHSVC_NO_INSTALL:-}" ] || scripts/setup-venv bench
    PY=.venv/bin/python
fi
device=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
out="${1:-bench/results/gpu-$device}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu",
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$out/device.txt"

if [ "$device" = cuda ]; then
    # 512 closed-loop requesters is where a GPU batch fills; the load levels go past one CPU's.
    batching=(--device cuda --levels 1,8,32,128,512 --window-s 6 --no-sweep)
    load=(--levels 100,250,500,1000 --bisect-steps 1 --speech-s 40 --ramp-s 20 --drain-s 10
        --budget-s 230 --clients 4 --quiet-wait-s 5 --server-arg=--device=cuda --server-arg=--max-batch=64)
    limits=(180 270)
else
    batching=(--device cpu --encoders ge2e --levels 1,8 --window-s 3 --no-sweep --pool 40)
    load=(--levels 10 --bisect-steps 0 --speech-s 20 --ramp-s 5 --drain-s 10 --budget-s 150 --quiet-wait-s 5)
    limits=(150 200)
fi

status=0
echo "== batching benchmark ($device)"
timeout "${limits[0]}" "$PY" bench/batching.py "${batching[@]}" --out "$out/batching.json" || status=$?
echo "== load test ($device)"
timeout "${limits[1]}" "$PY" bench/load.py "${load[@]}" --out "$out/load.json" || status=$?

echo "== done in $(( $(date +%s) - started )) s on $device (exit $status); results:"
ls -l "$out"
exit "$status"
