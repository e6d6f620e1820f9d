#!/usr/bin/env bash
# Every CUDA check in one call, for a lent GPU machine (15 minutes per session, so each step has its own timeout).
#
#   bash benchmarks/gpu_session.sh            # on the GPU machine; logs to $OUT (or /tmp/gpu-session)
#   SMALL=1 DEVICE=cpu bash benchmarks/gpu_session.sh   # a quick dry run of the same steps on a CPU box
#
# Steps, most important first: (1) full-model training epochs on a 3M-interaction synthetic graph, then the
# suite's tests marked gpu; (2) the whole CLI chain (synth -> split -> encode with CLIP on the GPU -> build -> train -> evaluate -> recommend);
# (3) CLIP image-encoding throughput, graphrec vs bare open_clip; (4) training epochs at 20M interactions.
# open_clip is not on the GPU image: its wheels travel in .whl/ (see BENCHMARKS.md "GPU").
set -u
OUT=${OUT:-/tmp/gpu-session}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
if [ -n "${SMALL:-}" ]; then
  G1="--users 2000 --items 1000 --interactions 50000 --batch-size 8192"; G2="$G1 --epochs 1"
  SY="--users 200 --items 150 --interactions 6000"; EN="--n 64 --batch-size 32 --workers 2 --repeats 1"
else
  G1="--users 100000 --items 50000 --interactions 3000000"
  G2="--users 1000000 --items 200000 --interactions 20000000 --epochs 2"
  SY="--users 20000 --items 8000 --interactions 1000000"; EN="--n 4096 --batch-size 256 --workers 12 --repeats 2"
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, print wall time and status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 12 "$OUT/$name.log"
  echo "=== $name: rc=$rc, $((SECONDS - t0)) s"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, torch_geometric, open_clip; print('torch', torch.__version__, 'pyg', torch_geometric.__version__, 'open_clip', open_clip.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.log"

step train_3M 100 python3 benchmarks/gpu_check.py --device "$DEVICE" $G1
# the suite's CUDA tests (marked gpu; skipped on CPU machines): CUDA training equals CPU training
step pytest_gpu 90 python3 -m pytest -q -o addopts="" -m gpu -p no:cacheprovider tests/test_gpu.py

WS=/tmp/gpu-ws; rm -rf "$WS"
chain() {
  set -e
  python3 cli.py data synth --out "$WS" $SY --seed 1
  python3 cli.py data split "$WS" --cold-items 0.2 --cold-users 0.1 --cold-user-context 3 --seed 1
  python3 cli.py encode "$WS" --modalities image,text,lexical --clip-model ViT-B-32 --clip-pretrained none \
    --device "$DEVICE" --batch-size 256
  python3 cli.py build "$WS"
  python3 cli.py train "$WS" --device "$DEVICE" --epochs 30
  python3 cli.py evaluate "$WS"
  python3 cli.py recommend "$WS" --users all --k 20 --out "$WS/top20.parquet"
  python3 -c "import pandas as pd; t = pd.read_parquet('$WS/top20.parquet'); print('recommend rows', len(t), 'users', t.user_id.nunique())"
}
export -f chain; export WS SY DEVICE
step cli_chain 180 bash -c chain
cp "$WS"/eval/metrics.json "$OUT/chain_metrics.json" 2>/dev/null

step encode_vitb32 80 python3 benchmarks/encode_throughput.py --model ViT-B-32 --device "$DEVICE" $EN
step train_20M 120 python3 benchmarks/gpu_check.py --device "$DEVICE" $G2
