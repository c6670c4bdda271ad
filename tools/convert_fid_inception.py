#!/usr/bin/env python3
"""Converts pytorch-fid's FID Inception weights (the 2015 TensorFlow Inception-v3 ported by
pytorch-fid, pt_inception-2015-12-05-6726825d.pth) to safetensors for flowlens.

    python3 -m venv /tmp/fid && /tmp/fid/bin/pip install torch safetensors
    # The .pth that pytorch-fid downloads on first use (it caches it under
    # ~/.cache/torch/hub/checkpoints/), or fetch it yourself:
    #   https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    /tmp/fid/bin/python tools/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth --out models/fid-inception

writes models/fid-inception/pt_inception-2015-12-05.safetensors: every tensor of the state dict,
F32, with the key names unchanged (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_var`,
...), except the `num_batches_tracked` counters and the 1008-class `fc` layer, which the pool3
features do not use. flowlens reads it with `flowlens_core::inception::FidInception::load`.

The file is loaded with `torch.load(weights_only=True)`: tensors only, no pickled code runs.
"""

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pth", type=Path, help="pt_inception-2015-12-05-6726825d.pth")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    a = ap.parse_args()
    state = torch.load(a.pth, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "Conv2d_1a_3x3.conv.weight" not in state:
        raise SystemExit(f"{a.pth}: not the pytorch-fid Inception state dict (no Conv2d_1a_3x3.conv.weight)")
    tensors = {
        k: v.detach().to(torch.float32).contiguous()
        for k, v in state.items()
        if not k.endswith("num_batches_tracked") and not k.startswith("fc.")
    }
    for key in ("Mixed_5b.branch_pool.conv.weight", "Mixed_7c.branch_pool.bn.running_var"):
        if key not in tensors:
            raise SystemExit(f"{a.pth}: tensor {key} is missing; is this the FID Inception?")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "pt_inception-2015-12-05.safetensors"
    save_file(tensors, str(path), metadata={"source": a.pth.name, "format": "pt"})
    print(f"wrote {len(tensors)} tensors to {path}")


if __name__ == "__main__":
    main()
