#!/usr/bin/env python3
"""PyTorch side of the flow-model benchmark at the `tiny` preset (docs/PERFORMANCE.md); the Rust
side is `cargo bench -p flowlens-core --bench flow_tiny`.

The same architecture as flowlens' FlowModel at the tiny preset, built from the reference pieces:
transformers' LlamaModel (eager attention), JanusFlow's ConvNeXt block (the port in
tools/fixtures/make_heads_fixtures.py), diffusers' JointTransformerBlock, and straightforward
PyTorch parallel (single-stream) and U-ViT blocks. float32, 2 threads, batch 8, median of 7 runs
after a warm-up; milliseconds per sample.

    OPENBLAS_NUM_THREADS=1 /tmp/pyref/bin/python tools/bench/flow_tiny_torch.py
    OPENBLAS_NUM_THREADS=1 /tmp/pyref/bin/python tools/bench/flow_tiny_torch.py --train 16

`--sample B` measures sampling as `flowlens sample` runs it: B prompts, 30 Euler steps with CFG 2
(a batch of 2B rows per step: conditional and unconditional), with no taps and with all taps
(every encoder stream, every LLM hidden state mean-pooled over text and over image positions, the
decoder input; pooled per step and written as .npy at the end); seconds per image over 3 runs.

`--train B` measures whole training steps at batch B instead, as `flowlens train` runs them
(stage 2): logit-normal t, z_t = t x + (1 - t) z0, 10 % text dropout, velocity MSE, backward,
global gradient-norm clipping at 1.0, AdamW (0.9, 0.95, wd 0), EMA 0.99; samples/s over 20
steps after 3 warm-up steps.
"""

import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.attention import JointTransformerBlock
from transformers import LlamaConfig, LlamaModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from make_heads_fixtures import ConvNextBlock, RMSNorm  # noqa: E402

torch.set_num_threads(2)
LLM = dict(vocab_size=512, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
# The tiny preset: 32x32 RGB images as 12x16x16 pixel-patch latents (space-to-depth by 2).
D_LLM, C, S, P, T, W, HEADS = 128, 12, 16, 2, 16, 128, 4
G = S // P
N = G * G


def timestep(t, ch):
    half = ch // 2
    f = torch.exp(-math.log(10000) * torch.arange(half) / half)
    a = 1000 * t[:, None] * f[None]
    return torch.cat([a.cos(), a.sin()], 1)


def key_bias(mask):
    # [b, s] (1 = real) -> additive [b, 1, 1, s]
    return torch.where(mask[:, None, None, :] > 0, 0.0, torch.finfo(torch.float32).min)


class Attn(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.nq, self.nk, self.h = nn.RMSNorm(d // heads, eps=1e-6), nn.RMSNorm(d // heads, eps=1e-6), heads

    def forward(self, x, bias):
        b, s, d = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(self.nq(q), self.nk(k), v, attn_mask=bias)
        return o.transpose(1, 2).reshape(b, s, d)


class Parallel(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.mod, self.attn = nn.Linear(d, 3 * d), Attn(d, heads)
        self.mlp_in, self.out = nn.Linear(d, 4 * d), nn.Linear(5 * d, d)

    def forward(self, x, c, bias):
        sh, sc, g = self.mod(F.silu(c)).chunk(3, 1)
        h = F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + sc[:, None]) + sh[:, None]
        return x + g[:, None] * self.out(torch.cat([self.attn(h, bias), F.gelu(self.mlp_in(h), approximate="tanh")], -1))


class UBlock(nn.Module):
    def __init__(self, d, heads, skip):
        super().__init__()
        self.skip = nn.Linear(2 * d, d) if skip else None
        self.n1, self.attn, self.o = nn.LayerNorm(d, eps=1e-6), Attn(d, heads), nn.Linear(d, d)
        self.n2, self.mlp = nn.LayerNorm(d, eps=1e-6), nn.Sequential(nn.Linear(d, 4 * d), nn.GELU("tanh"), nn.Linear(4 * d, d))

    def forward(self, x, skip, bias):
        if self.skip is not None:
            x = self.skip(torch.cat([x, skip], -1))
        x = x + self.o(self.attn(self.n1(x), bias))
        return x + self.mlp(self.n2(x))


def unpatchify(x):
    b = x.shape[0]
    return x.reshape(b, G, G, P, P, C).permute(0, 5, 1, 3, 2, 4).reshape(b, C, S, S)


class Flow(nn.Module):
    def __init__(self, variant):
        super().__init__()
        self.v = variant
        self.llm = LlamaModel(LlamaConfig(**LLM, attn_implementation="eager"))
        self.t1, self.t2 = nn.Linear(W, D_LLM), nn.Linear(D_LLM, D_LLM)
        dual, single = variant in ("encoder-only", "both"), variant in ("decoder-only", "both")
        if variant == "uvit":
            self.tp, self.xp, self.pe = nn.Linear(D_LLM, W), nn.Linear(D_LLM, W), nn.Conv2d(C, W, P, P)
            self.ins = nn.ModuleList([UBlock(W, HEADS, False)])
            self.mid, self.outs = UBlock(W, HEADS, False), nn.ModuleList([UBlock(W, HEADS, True)])
            self.no, self.po = nn.LayerNorm(W, eps=1e-6), nn.Linear(W, P * P * C)
            return
        if dual:
            self.pe, self.te, self.ce = nn.Conv2d(C, W, P, P), nn.Linear(D_LLM, W), nn.Linear(D_LLM, W)
            self.joint = nn.ModuleList([JointTransformerBlock(dim=W, num_attention_heads=HEADS, attention_head_dim=W // HEADS, context_pre_only=False, qk_norm="rms_norm") for _ in range(2)])
            self.nno, self.npo = nn.LayerNorm(W, eps=1e-6), nn.Linear(W, D_LLM)
            self.tno, self.tpo = nn.LayerNorm(W, eps=1e-6), nn.Linear(W, D_LLM)
        else:
            self.ic = nn.Conv2d(C, W, P, P)
            self.eb = nn.ModuleList([ConvNextBlock(W, 1e-6, D_LLM) for _ in range(2)])
            self.ea = nn.Linear(W, D_LLM)
        if single:
            self.ni, self.pi, self.sp, self.cd = RMSNorm(D_LLM, 1e-5), nn.Linear(D_LLM, W), nn.Linear(W, W), nn.Linear(D_LLM, W)
            self.par = nn.ModuleList([Parallel(W, HEADS) for _ in range(2)])
            self.nom, self.pout = nn.Linear(W, 2 * W), nn.Linear(W, P * P * C)
        else:
            self.dan, self.da, self.din = RMSNorm(D_LLM, 1e-5), nn.Linear(D_LLM, W), RMSNorm(W, 1e-6)
            self.db = nn.ModuleList([ConvNextBlock(2 * W, 1e-6, D_LLM) for _ in range(2)])
            self.don, self.doc = RMSNorm(2 * W, 1e-6), nn.Conv2d(2 * W, C * P * P, 1)
        self.dual, self.single = dual, single

    def forward(self, z, t, ids, mask, taps=None):
        b = z.shape[0]
        temb = self.t2(F.silu(self.t1(timestep(t, W))))
        emb = self.llm.embed_tokens(ids)
        ones = torch.ones(b, N, dtype=mask.dtype)
        if self.v == "uvit":
            text = self.llm(inputs_embeds=emb, attention_mask=mask).last_hidden_state
            x = torch.cat([self.tp(temb)[:, None], self.xp(text), self.pe(z).flatten(2).transpose(1, 2)], 1)
            bias = key_bias(torch.cat([torch.ones(b, 1, dtype=mask.dtype), mask, ones], 1))
            skips = []
            for blk in self.ins:
                x = blk(x, None, bias)
                skips.append(x)
            x = self.mid(x, None, bias)
            for blk in self.outs:
                x = blk(x, skips.pop(), bias)
            return unpatchify(self.po(self.no(x[:, 1 + T:])))
        if self.dual:
            x, ctx, c = self.pe(z).flatten(2).transpose(1, 2), self.te(F.layer_norm(emb, (D_LLM,), eps=1e-6)), self.ce(temb)
            for blk in self.joint:
                ctx, x = blk(hidden_states=x, encoder_hidden_states=ctx, temb=c)
            img, skip, emb = self.npo(self.nno(x)), x.transpose(1, 2).reshape(b, W, G, G), emb + self.tpo(self.tno(ctx))
            if taps is not None:
                taps["enc.image"], taps["enc.text"] = x.mean(1), ctx.mean(1)
        else:
            x = self.ic(z)
            for blk in self.eb:
                x = blk(x, temb)
            img, skip = self.ea(x.flatten(2).transpose(1, 2)), x
            if taps is not None:
                taps["enc.image"] = x.mean((2, 3))
        seq = torch.cat([emb, temb[:, None], img], 1)
        llm_mask = torch.cat([mask, torch.ones(b, 1 + N, dtype=mask.dtype)], 1)
        out = self.llm(inputs_embeds=seq, attention_mask=llm_mask, output_hidden_states=taps is not None)
        h = out.last_hidden_state
        if taps is not None:
            m = mask[:, :, None].to(h.dtype)
            for i, hs in enumerate(out.hidden_states):
                taps[f"llm.h{i}.text"] = (hs[:, :T] * m).sum(1) / m.sum(1)
                taps[f"llm.h{i}.image"] = hs[:, T + 1:].mean(1)
        if self.single:
            u = self.pi(self.ni(h))
            if taps is not None:
                taps["dec.input"] = u[:, T + 1:].mean(1)
            u = torch.cat([u[:, :T + 1], u[:, T + 1:] + self.sp(skip.flatten(2).transpose(1, 2))], 1)
            c, bias = self.cd(temb), key_bias(llm_mask)
            for blk in self.par:
                u = blk(u, c, bias)
            sc, sh = self.nom(F.silu(c)).chunk(2, 1)
            o = F.layer_norm(u[:, T + 1:], (W,), eps=1e-6) * (1 + sc[:, None]) + sh[:, None]
            return unpatchify(self.pout(o))
        x = self.din(self.da(self.dan(h[:, T + 1:]))).transpose(1, 2).reshape(b, W, G, G)
        x = torch.cat([x, skip], 1)
        if taps is not None:
            taps["dec.input"] = x.mean((2, 3))
        for blk in self.db:
            x = blk(x, temb)
        x = self.don(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return F.pixel_shuffle(self.doc(x), P)


def median_ms(f, reps=7):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def train_steps(variant, b, steps=20, warmup=3):
    torch.manual_seed(0)
    m = Flow(variant)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0)
    ema = [p.detach().clone() for p in m.parameters()]
    ids = (torch.arange(b * T).reshape(b, T) * 7 + 3) % 500
    ids[:, 0] = 1
    mask = (torch.arange(T)[None] < 10).long().expand(b, T).contiguous()

    def step():
        x = torch.rand(b, C, S, S) * 2 - 1
        t = torch.sigmoid(torch.randn(b))
        z0 = torch.randn_like(x)
        zt = t[:, None, None, None] * x + (1 - t[:, None, None, None]) * z0
        drop = torch.rand(b) < 0.1
        i = torch.where(drop[:, None], torch.full_like(ids, 2), ids)
        i[:, 0] = 1
        mk = torch.where(drop[:, None], torch.zeros_like(mask), mask)
        mk[:, 0] = 1
        loss = F.mse_loss(m(zt, t, i, mk), x - z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, m.parameters()):
                e.lerp_(p, 0.01)
        return loss.item()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * b / (time.perf_counter() - start)


def sample_seconds(variant, b, with_taps, steps=30, cfg=2.0):
    """Seconds for one sampling run of b prompts (the loop only, the model built beforehand)."""
    torch.manual_seed(0)
    m = Flow(variant).eval()
    ids = (torch.arange(b * T).reshape(b, T) * 7 + 3) % 500
    ids[:, 0] = 1
    mask = (torch.arange(T)[None] < 10).long().expand(b, T).contiguous()
    null_ids, null_mask = torch.full_like(ids, 2), torch.zeros_like(mask)
    null_ids[:, 0], null_mask[:, 0] = 1, 1
    all_ids, all_mask = torch.cat([ids, null_ids]), torch.cat([mask, null_mask])
    start = time.perf_counter()
    with torch.no_grad():
        z = torch.randn(b, C, S, S)
        pooled = {}
        for k in range(steps):
            t = torch.full((2 * b,), k / steps)
            taps = {} if with_taps else None
            v = m(torch.cat([z, z]), t, all_ids, all_mask, taps)
            vc, vu = v[:b], v[b:]
            z = z + (vu + cfg * (vc - vu)) / steps
            if with_taps:
                for name, x in taps.items():
                    pooled.setdefault(name, []).append(x[:b].numpy().copy())
        if with_taps:
            import tempfile
            import numpy as np
            with tempfile.TemporaryDirectory() as d:
                for name, xs in pooled.items():
                    for k, x in enumerate(xs):
                        np.save(f"{d}/{name}_{k}.npy", x)
    return time.perf_counter() - start


def main():
    if "--sample" in sys.argv:
        b = int(sys.argv[sys.argv.index("--sample") + 1])
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {b} prompts, 30 Euler steps, CFG 2")
        print("| variant | s per image, no taps | s per image, all taps | taps overhead |")
        print("|---|---|---|---|")
        for v in ("baseline", "decoder-only", "encoder-only", "both", "uvit"):
            sample_seconds(v, b, False, steps=2)
            plain = statistics.median(sample_seconds(v, b, False) for _ in range(3)) / b
            tapped = statistics.median(sample_seconds(v, b, True) for _ in range(3)) / b
            print(f"| {v} | {plain:.3f} | {tapped:.3f} | {100 * (tapped / plain - 1):+.1f} % |")
        return
    if "--train" in sys.argv:
        b = int(sys.argv[sys.argv.index("--train") + 1])
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {b}; training samples/s")
        print("| variant | samples/s |")
        print("|---|---|")
        for v in ("baseline", "decoder-only", "encoder-only", "both", "uvit"):
            print(f"| {v} | {train_steps(v, b):.1f} |")
        return
    b = 8
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {b}; ms per sample")
    print("| variant | forward | forward + backward |")
    print("|---|---|---|")
    for v in ("baseline", "decoder-only", "encoder-only", "both", "uvit"):
        m = Flow(v)
        z, t = torch.randn(b, C, S, S), torch.full((b,), 0.5)
        ids = (torch.arange(b * T).reshape(b, T) * 7 + 3) % 500
        ids[:, 0] = 1
        mask = (torch.arange(T)[None] < 10).long().expand(b, T).contiguous()

        def fwd():
            with torch.no_grad():
                m(z, t, ids, mask).sum().item()

        def train():
            m.zero_grad(set_to_none=True)
            m(z, t, ids, mask).square().mean().backward()

        print(f"| {v} | {median_ms(fwd) / b:.2f} | {median_ms(train) / b:.2f} |")


if __name__ == "__main__":
    main()
