#!/usr/bin/env bash
# CKA, whole process: flowlens vs NumPy on the same .npy files (docs/PERFORMANCE.md, "CKA").
#
#   bash tools/bench/cka_whole_process.sh [ROUNDS] [DIR]      # defaults: 3, /tmp/flowlens-cka-bench
#
# Once: a synthetic run with a feature store of the paper's grid size, written by the repository's
# own store writer (experiments/examples/grid_store.rs: 5 solver steps x 25 taps, 2000 prompts x
# 2048 features, f32, 2 GB), and one pair X, Y (2000 x 2048, f64) written by NumPy. Then ROUNDS
# times, alternating flowlens and NumPy (A B A B):
#   grid:     flowlens grid --store probes-bench --a enc.text,enc.noise --b 'llm.h*.image'
#             vs tools/bench/cka_numpy.py --store (each tap's Gram computed once per step)
#   one pair: flowlens cka X Y vs tools/bench/cka_numpy.py --pair X Y (the Gram form)
# Both sides on 2 threads (OPENBLAS_NUM_THREADS=2 for NumPy; flowlens uses one thread per core).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
dir=${2:-/tmp/flowlens-cka-bench}
py=${PYTHON:-/tmp/pyref/bin/python}
export OPENBLAS_NUM_THREADS=2
cargo build --release -p flowlens-experiments --bin flowlens --example grid_store
if [ ! -f "$dir/run/probes-bench/manifest.json" ]; then
  rm -rf "$dir/run"
  target/release/examples/grid_store "$dir/run"
fi
if [ ! -f "$dir/y.npy" ]; then
  "$py" -c "
import numpy as np
rng = np.random.default_rng(0)
x = rng.random((2000, 2048)) - 0.5
np.save('$dir/x.npy', x)
np.save('$dir/y.npy', 0.5 * x + rng.random((2000, 2048)) - 0.5)"
fi
t() { /usr/bin/time -f "  $1: %e s wall, %U s user, %S s sys, peak RSS %M KB" "${@:2}"; }
for r in $(seq "$rounds"); do
  echo "round $r"
  t "flowlens grid" target/release/flowlens grid --run "$dir/run" --store probes-bench \
    --a enc.text,enc.noise --b 'llm.h*.image' --seeds 0 --out "$dir/out" --quiet
  t "NumPy grid" "$py" tools/bench/cka_numpy.py --store "$dir/run/probes-bench"
  t "flowlens cka" target/release/flowlens cka "$dir/x.npy" "$dir/y.npy"
  t "NumPy pair" "$py" tools/bench/cka_numpy.py --pair "$dir/x.npy" "$dir/y.npy"
done
