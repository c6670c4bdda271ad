#!/usr/bin/env python3
"""PyTorch side of the real-network benchmark (docs/PERFORMANCE.md); the Rust side is
`cargo bench -p flowlens-core --bench real_networks`.

Random weights, float32, 2 threads, median of 3 runs after a warm-up, the same shapes:
diffusers AutoencoderKL with the SDXL-VAE config (encode: posterior mean; decode), transformers
CLIPModel with the ViT-L/14 config (get_image_features at 224, batch 4; get_text_features on 16
prompts of 77 tokens), pytorch-fid InceptionV3([3]) (its weight download replaced by the random
initialisation) at 299, batch 8.

    OPENBLAS_NUM_THREADS=1 /tmp/pyref/bin/python tools/bench/real_networks_torch.py [VAE_SIZE]

`FLOWLENS_BENCH_ONLY=vae,clip,inception` (any of them) as for the Rust side.
"""

import os
import statistics
import sys
import time

import torch
from diffusers import AutoencoderKL
from transformers import CLIPConfig, CLIPModel

import pytorch_fid.inception as pfi

torch.set_num_threads(2)
torch.manual_seed(0)


def bench(what, batch, f, reps=3):
    with torch.no_grad():
        f()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
    s = statistics.median(times)
    print(f"| {what} | {batch} | {s * 1000:.1f} | {batch / s:.3f} |", flush=True)


def wanted(what):
    only = os.environ.get("FLOWLENS_BENCH_ONLY", "")
    return not only or what in [w.strip() for w in only.split(",")]


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    print("median of 3 after a warm-up, random weights, f32, torch threads", torch.get_num_threads())
    print("| network | batch | ms per batch | images/s |")
    print("|---|---|---|---|")
    if wanted("vae"):
        vae_rows(size)
    if wanted("clip"):
        clip_rows()
    if wanted("inception"):
        inception_row()


def vae_rows(size):
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=1024,
        scaling_factor=0.13025,
    ).eval()
    x = torch.rand(1, 3, size, size) * 2 - 1
    bench(f"SDXL-VAE encode {size}x{size}", 1, lambda: vae.encode(x).latent_dist.mean)
    z = torch.randn(1, 4, size // 8, size // 8)
    bench(f"SDXL-VAE decode {size}x{size}", 1, lambda: vae.decode(z).sample)


def clip_rows():
    config = CLIPConfig(
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                         num_hidden_layers=12, max_position_embeddings=77, eos_token_id=2),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                           num_hidden_layers=24, patch_size=14, image_size=224),
        projection_dim=768,
    )
    config._attn_implementation = "eager"
    clip = CLIPModel(config).eval()
    pixels = torch.randn(4, 3, 224, 224)
    bench("CLIP ViT-L/14 image tower 224x224", 4, lambda: clip.get_image_features(pixel_values=pixels))
    ids = torch.randint(3, 40000, (16, 77))
    ids[:, 0], ids[:, -1] = 49406, 49407
    bench("CLIP ViT-L/14 text tower, 77 tokens (prompts/s)", 16, lambda: clip.get_text_features(input_ids=ids))


def inception_row():
    def random_state_dict(url, progress=True):
        net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = pfi.FIDInceptionE_1(1280)
        net.Mixed_7c = pfi.FIDInceptionE_2(2048)
        return net.state_dict()

    pfi.load_state_dict_from_url = random_state_dict
    inception = pfi.InceptionV3([3]).eval()
    images = torch.rand(8, 3, 299, 299)
    bench("FID Inception-v3 pool3 299x299", 8, lambda: inception(images)[0])


if __name__ == "__main__":
    main()
