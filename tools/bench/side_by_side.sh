#!/usr/bin/env bash
# Issue 14's side-by-side figures in one run (docs/PERFORMANCE.md): training and sampling of the
# tiny preset and the CLIP / FID Inception networks, flowlens and PyTorch alternating (ROUNDS,
# default 2), 2 threads each. Needs a release build and the PyTorch venv of tools/fixtures (torch,
# transformers, diffusers, torchvision, pytorch-fid: see the pip lines of tools/fixtures/make_*.py):
#   cargo build --release -p flowlens-experiments
#   cargo bench -p flowlens-core --bench real_networks --no-run
#   PY=/tmp/pyref/bin/python bash tools/bench/side_by_side.sh > side_by_side.md
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-2}
PY=${PY:-/tmp/pyref/bin/python}
export OPENBLAS_NUM_THREADS=1
BIN=${FLOWLENS_BIN:-target/release/flowlens}
NET=${FLOWLENS_NET_BENCH:-$(ls -t target/release/deps/real_networks-* | grep -v '\.d$' | head -1)}
echo "# side by side, $(date -u +%F\ %H:%M) UTC, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for r in $(seq 1 "$ROUNDS"); do
  echo; echo "## round $r"
  echo; echo "### training, flowlens"; FLOWLENS_BIN=$BIN bash tools/bench/train_tiny.sh 16
  echo; echo "### training, PyTorch"; "$PY" tools/bench/flow_tiny_torch.py --train 16 2>/dev/null | grep '^|'
  echo; echo "### sampling, flowlens"; FLOWLENS_BIN=$BIN bash tools/bench/sample_tiny.sh 8
  echo; echo "### sampling, PyTorch"; "$PY" tools/bench/flow_tiny_torch.py --sample 8 2>/dev/null | grep '^|'
  echo; echo "### CLIP and Inception, PyTorch"
  FLOWLENS_BENCH_ONLY=clip,inception "$PY" tools/bench/real_networks_torch.py 2>/dev/null | grep '^|'
  echo; echo "### CLIP and Inception, flowlens"
  FLOWLENS_BENCH_ONLY=clip,inception "$NET" | grep '^|'
done
