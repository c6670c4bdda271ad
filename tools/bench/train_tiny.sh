#!/usr/bin/env bash
# Training throughput of the tiny preset (samples/s), flowlens side of tools/bench/flow_tiny_torch.py
# --train B. For each variant: 25 optimiser steps at batch B (default 16), no evaluation or sample
# grids, stage 2 (or stage 1 with STAGE=1); prints the median samples/s of steps 5-24.
#   cargo build --release && bash tools/bench/train_tiny.sh [B]
set -euo pipefail
B=${1:-16}
STAGE=${STAGE:-2}
BIN=${FLOWLENS_BIN:-target/release/flowlens}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stage1=$([ "$STAGE" = 1 ] && echo 1000 || echo 0)
cat > "$tmp/config.toml" <<TOML
stage1_steps = $stage1
sample_every = 0
eval_every = 0
checkpoint_every = 1000
TOML
echo "| variant | flowlens samples/s (batch $B, stage $STAGE) |"
echo "|---|---|"
for v in baseline decoder-only encoder-only both uvit; do
  "$BIN" train --preset tiny --variant "$v" --config "$tmp/config.toml" --steps 25 \
    --batch-size "$B" --run "$tmp/$v" --quiet 2>/dev/null
  python3 - "$tmp/$v/metrics.jsonl" "$v" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = [r["samples_per_s"] for r in rows if "event" not in r and r["step"] >= 5]
print(f"| {sys.argv[2]} | {statistics.median(s):.1f} |")
PY
done
