#!/usr/bin/env bash
# The GPU check of issue 16, on one NVIDIA GPU, in under 8 minutes, with a flowlens binary built
# here with `--features cuda` (no CUDA toolkit needed to build; the driver and, for NCCL,
# libnccl.so.2 are needed to run). Random weights, nothing downloaded. Prints one table and
# writes it to $OUT (default gpu_check.md).
#
#   cargo build --release --features cuda -p flowlens-experiments && strip target/release/flowlens
#   FLOWLENS_BIN=target/release/flowlens bash tools/gpu/check.sh
#
# Rows: the paper preset's `both` at f32 and mixed precision (training samples/s, model FLOPs
# utilisation against the dense bf16 peak, peak GPU memory against `model-info --memory`);
# sampling 30 Euler steps with CFG and all taps (images/s, tap cost); two burn-collective peers
# on one GPU against one device, and NCCL with one rank against one device (tiny preset, 20
# steps, the largest relative loss difference); `--device cuda:N` beyond the GPUs (the error).
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${FLOWLENS_BIN:-target/release/flowlens}
OUT=${OUT:-gpu_check.md}
LIMIT=${LIMIT:-60}                         # seconds per row (7 rows: under 8 minutes)
BATCH=${BATCH:-8}
PRESET=${PRESET:-paper}                    # PRESET=tiny DEVICE=cpu: a dry run of this script
DEV=${DEVICE:-cuda:0}
PEERS=${PEERS:-$DEV,$DEV}
work=$(mktemp -d)
trap 'kill $smi 2>/dev/null; rm -rf "$work"' EXIT
export FLOWLENS_CACHE="$work/cache"
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)
case "$gpu" in
  *H100*|*H200*|*GH200*) peak=${PEAK_TFLOPS:-989} ;;
  *A100*) peak=${PEAK_TFLOPS:-312} ;;
  *L40S*) peak=${PEAK_TFLOPS:-362} ;;
  *) peak=${PEAK_TFLOPS:-} ;;
esac
peak_arg=(); [ -n "$peak" ] && peak_arg=(--peak-tflops "$peak")
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$work/mem.log" 2>/dev/null &
smi=$!
mark() { wc -l < "$work/mem.log"; }
peak_since() { tail -n +"$(( $1 + 1 ))" "$work/mem.log" | sort -n | tail -1; }
rows=()
row() { rows+=("| $1 | $2 | $3 |"); echo "| $1 | $2 | $3 |" >&2; }
run() { timeout "$LIMIT" "$@" 2>"$work/err.log"; }
why() { tail -c 300 "$work/err.log" | tr '\n|' '  '; }

nccl=$(ldconfig -p 2>/dev/null | grep -o 'libnccl.so[.0-9]*' | head -1)
row "libnccl" "${nccl:-not found by ldconfig (set LD_LIBRARY_PATH to a folder with libnccl.so.2)}" ""

for p in f32 mixed; do
  m=$(mark)
  if out=$(run "$BIN" bench train --preset "$PRESET" --variant both --batch-size "$BATCH" --steps 3 \
      --precision "$p" --device "$DEV" "${peak_arg[@]}" --json); then
    used=$(peak_since "$m")
    plan=$("$BIN" model-info --preset "$PRESET" --variant both --memory --batch-size "$BATCH" \
      --precision "$p" --on cuda --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["memory"]["total"]/2**20))')
    row "train $PRESET/both batch $BATCH, $p" \
      "$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); m=d["mfu"]; print("%.2f samples/s, %.3f s/step, MFU %s" % (d["samples_per_s"], d["seconds_per_step"], "%.1f %%" % (100*m) if m else "n/a (set PEAK_TFLOPS)"))')" \
      "peak ${used:-?} MiB used (plan ${plan} MiB)"
  else
    row "train $PRESET/both batch $BATCH, $p" "FAILED (exit $?)" "$(why)"
  fi
done

m=$(mark)
if out=$(run "$BIN" bench sample --preset "$PRESET" --variant both --batch-size "$BATCH" --steps 2 \
    --solver-steps 30 --device "$DEV" --json); then
  row "sample $PRESET/both batch $BATCH, 30 Euler steps, CFG 2" \
    "$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f images/s, %.2f with every tap (%+.1f %%)" % (d["images_per_s"], d["images_per_s_all_taps"], 100*d["tap_cost"]))')" \
    "peak $(peak_since "$m") MiB used"
else
  row "sample $PRESET/both" "FAILED (exit $?)" "$(why)"
fi

# Equivalence on the tiny preset: losses of 20 steps against one device.
cfg="$work/tiny.toml"
printf 'sample_every = 0\neval_every = 0\nstage1_steps = 10\nbatch_size = 8\ncheckpoint_every = 100\n' > "$cfg"
train() { run "$BIN" train --preset tiny --variant both --steps 20 --config "$cfg" --quiet --run "$work/$1" "${@:2}"; }
compare() {
  python3 - "$work/$1" "$work/$2" <<'PY'
import json, sys
def losses(r):
    out = {}
    for l in open(r + "/metrics.jsonl"):
        v = json.loads(l)
        if "event" not in v: out[v["step"]] = v["loss"]
    return out
a, b = losses(sys.argv[1]), losses(sys.argv[2])
print(f"max relative loss difference over {len(a)} steps: {max(abs(a[k]-b[k])/abs(a[k]) for k in a):.2e}")
PY
}
if train one --device "$DEV"; then
  if FLOWLENS_EXCHANGE=collective train peers --devices "$PEERS" --check-replicas 1; then
    row "two burn-collective peers ($PEERS) vs one device" "$(compare one peers)" "replicas bit-identical after every step"
  else
    row "two burn-collective peers ($PEERS)" "FAILED" "$(why)"
  fi
  if train nccl --devices "$DEV" --check-replicas 1; then
    row "NCCL with one rank ($DEV) vs one device" "$(compare one nccl)" ""
  else
    row "NCCL with one rank" "FAILED" "$(why)"
  fi
else
  row "tiny training on $DEV" "FAILED" "$(why)"
fi

n=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
if run "$BIN" train --preset tiny --steps 1 --run "$work/bad" --device "cuda:$n" --quiet; then
  row "--device cuda:$n (beyond the $n GPU(s))" "ran: expected an error" ""
else
  row "--device cuda:$n (beyond the $n GPU(s))" "refused" "$(why)"
fi

{
  echo "# flowlens GPU check, $(date -u +%F\ %H:%M) UTC"
  echo
  echo "GPU: $gpu; binary: $BIN ($("$BIN" --version 2>/dev/null || echo flowlens)); dense bf16 peak for MFU: ${peak:-unknown} TFLOP/s"
  echo
  echo "| check | result | notes |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT"
