#!/usr/bin/env python3
"""PyTorch side of the Llama forward throughput benchmark (docs/PERFORMANCE.md).

Same configs and shapes as `cargo bench -p flowlens-core --features ndarray --bench llama_forward`:
transformers' LlamaModel, random init, float32, eager attention, no grad, 2 threads, median of
several runs after a warm-up.

    OPENBLAS_NUM_THREADS=1 /tmp/pyref/bin/python tools/bench/llama_forward.py
"""

import statistics
import time

import torch
from transformers import LlamaConfig, LlamaModel

torch.set_num_threads(2)

SMALL = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
TINYLLAMA_4 = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                   num_hidden_layers=4, num_attention_heads=32, num_key_value_heads=4,
                   max_position_embeddings=2048)
CASES = [
    ("small_test (d=64, 2 layers)", SMALL, 8, 128, 20),
    ("TinyLlama width, 4 layers", TINYLLAMA_4, 1, 128, 5),
    ("TinyLlama width, 4 layers", TINYLLAMA_4, 4, 128, 3),
]


def main():
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| config | batch x seq | median ms | tokens/s |")
    print("|---|---|---|---|")
    for name, cfg, b, s, reps in CASES:
        model = LlamaModel(LlamaConfig(**cfg, attn_implementation="eager")).eval()
        ids = (torch.arange(b * s).reshape(b, s) * 7919 + 13) % cfg["vocab_size"]
        times = []
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
            for _ in range(reps):
                t = time.perf_counter()
                model(input_ids=ids, use_cache=False).last_hidden_state.sum().item()
                times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"| {name} | {b} x {s} | {med * 1e3:.2f} | {b * s / med:.0f} |")


if __name__ == "__main__":
    main()
