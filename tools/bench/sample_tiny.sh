#!/usr/bin/env bash
# Sampling time of the tiny preset, flowlens side of tools/bench/flow_tiny_torch.py --sample B.
# For each variant: a run trained for one step (the weights do not change the cost), then
# `flowlens sample` of B prompts (default 8), 30 Euler steps, CFG 2, one seed, with no taps and
# with all taps (`--taps "*"`), in alternating rounds (ROUNDS, default 3); prints the median
# seconds per image of the whole process (start-up, loading, sampling, writing images and probes).
#   cargo build --release && bash tools/bench/sample_tiny.sh [B]
set -euo pipefail
B=${1:-8}
ROUNDS=${ROUNDS:-3}
BIN=${FLOWLENS_BIN:-target/release/flowlens}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/config.toml" <<TOML
stage1_steps = 0
sample_every = 0
eval_every = 0
checkpoint_every = 1000
TOML
for i in $(seq 1 "$B"); do echo "a red circle left of a blue square $i"; done > "$tmp/prompts.txt"
echo "| variant | flowlens s per image, no taps | all taps | taps overhead |"
echo "|---|---|---|---|"
for v in baseline decoder-only encoder-only both uvit; do
  "$BIN" train --preset tiny --variant "$v" --config "$tmp/config.toml" --steps 1 \
    --run "$tmp/$v" --quiet 2>/dev/null
  plain=(); tapped=()
  for r in $(seq 1 "$ROUNDS"); do
    # The U-ViT variant has no taps: its row reads the same time twice.
    for mode in plain taps; do
      taps=$([ "$mode" = taps ] && [ "$v" != uvit ] && echo "*" || echo "")
      start=$(date +%s.%N)
      "$BIN" sample --run "$tmp/$v" --prompts "$tmp/prompts.txt" --steps 30 --cfg 2.0 \
        --batch-size "$B" --seeds 0 --taps "$taps" --quiet >/dev/null 2>&1
      secs=$(echo "$(date +%s.%N) - $start" | bc)
      if [ "$mode" = taps ]; then tapped+=("$secs"); else plain+=("$secs"); fi
      rm -rf "$tmp/$v/probes" "$tmp/$v/samples"
    done
  done
  python3 - "$v" "$B" "${plain[*]}" "${tapped[*]}" <<'PY'
import statistics, sys
v, b = sys.argv[1], int(sys.argv[2])
p = statistics.median(map(float, sys.argv[3].split())) / b
t = statistics.median(map(float, sys.argv[4].split())) / b
print(f"| {v} | {p:.3f} | {t:.3f} | {100 * (t / p - 1):+.1f} % |")
PY
done
