#!/usr/bin/python3
"""PyTorch reference for bench/kernels.ts: the same kernel shapes and the same NSP stage
architecture (configs/nsp-pixel-tiny.yaml), timed the same way (best of N after one warm-up),
printed as JSON rows {name, value, unit} with the torch version and CPU model.
Run: <python with torch> bench/torch_ref.py [--threads 2] [--part kernels|steps|all] [--autocast bf16];
`npm run bench` finds the interpreter (bench/torch_python.ts: --torch-python, SCALEFORGE_TORCH_PYTHON,
python3 on PATH, Debian's /usr/bin/python3).
The DiT-S/2 LoRA step and the DiT pretraining step reuse the fixtures' torch DiT (scripts/fixtures/dit_reference.py).

Differences from the TypeScript model, kept small on purpose: attention omits the 2-D rotary
embedding (an elementwise rotation, a few % of the attention block) and the text encoder is
replaced by a random pooled text vector in both benches.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The NSP model of the default recipe (configs/nsp-pixel-tiny.yaml). bench/steps.ts passes the
# configuration it builds its own step from (--nsp-config), so both sides time the same model; these
# defaults are that recipe's values for a run by hand.
CFG = dict(sizes=[16, 32, 64], channels=[48, 32, 32], cross_attention=True, blocks=2, dense_layers=3, growth=16, beta=0.2, attn_max=32, heads=4,
           kv_heads=1, token_size=8, cond_dim=64, text_dim=64, groups=8, image_channels=3, coord=True, pos_embed=True)
BATCH = 16


def best_ms(fn, repeats):
    fn()
    best = float('inf')
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t) * 1e3)
    return best


def gflops(flop, ms):
    return flop / ms / 1e6


def conv_rows(repeats, dtype, prefix):
    """The NSP dense block's 3x3 convolutions (forward, dx, dW) on `dtype` tensors."""
    rows = []
    for name, xs, ws in [('64x64 32->16', [16, 64, 64, 32], [3, 3, 32, 16]), ('64x64 64->16', [16, 64, 64, 64], [3, 3, 64, 16]),
                         ('16x16 48->16', [16, 16, 16, 48], [3, 3, 48, 16])]:
        n, h, w, c = xs
        o = ws[3]
        # channels_last matches tfjs's NHWC and lets PyTorch pick its oneDNN NHWC kernels.
        x = torch.randn(n, c, h, w).to(memory_format=torch.channels_last, dtype=dtype)
        wt = torch.randn(o, c, 3, 3).to(dtype)
        dy = torch.randn(n, o, h, w).to(memory_format=torch.channels_last, dtype=dtype)
        flop = 2 * n * h * w * o * 9 * c
        fwd = lambda: F.conv2d(x, wt, padding=1)
        dx = lambda: torch.nn.grad.conv2d_input(x.shape, wt, dy, padding=1)
        dw = lambda: torch.nn.grad.conv2d_weight(x, wt.shape, dy, padding=1)
        for pname, fn in [('fwd', fwd), ('dx', dx), ('dW', dw)]:
            rows.append(dict(name=f'torch {prefix}conv3x3 {name} {pname}', value=gflops(flop, best_ms(fn, repeats)), unit='GFLOP/s'))
    return rows


def kernel_rows(repeats):
    rows = []
    for n in [256, 512, 1024, 2048]:
        a, b = torch.randn(n, n), torch.randn(n, n)
        ms = best_ms(lambda: a @ b, max(2, repeats // 2) if n >= 1024 else repeats)
        rows.append(dict(name=f'torch matmul {n}', value=gflops(2 * n ** 3, ms), unit='GFLOP/s'))
    for name, ash, bsh, tb in [
        ('attn QK^T [16,1,256,8]x[16,1,64,8]^T', [16, 1, 256, 8], [16, 1, 64, 8], True),
        ('attn PV [16,1,256,64]x[16,1,64,8]', [16, 1, 256, 64], [16, 1, 64, 8], False),
        ('attn QK^T [16,1,1024,8]x[16,1,256,8]^T', [16, 1, 1024, 8], [16, 1, 256, 8], True),
        ('attn PV [16,1,1024,256]x[16,1,256,8]', [16, 1, 1024, 256], [16, 1, 256, 8], False),
    ]:
        a, b = torch.randn(*ash), torch.randn(*bsh)
        n = bsh[2] if tb else bsh[3]
        ms = best_ms(lambda: a @ (b.transpose(-1, -2) if tb else b), repeats)
        rows.append(dict(name=f'torch {name}', value=gflops(2 * ash[0] * ash[2] * ash[3] * n, ms), unit='GFLOP/s'))
    rows += conv_rows(repeats, torch.float32, '')
    # bf16 products as autocast runs them (bench/kernels.ts's `native bf16` rows): matmul of fp32
    # tensors under autocast (the cast is inside), convolutions on the bf16 tensors autocast saves.
    with torch.autocast('cpu', dtype=torch.bfloat16):
        for n in [512, 1024]:
            a, b = torch.randn(n, n), torch.randn(n, n)
            rows.append(dict(name=f'torch bf16 matmul {n}', value=gflops(2 * n ** 3, best_ms(lambda: a @ b, repeats)), unit='GFLOP/s'))
    rows += conv_rows(repeats, torch.bfloat16, 'bf16 ')
    # Same rows as kernels.ts's elementwise ones (shape names in tfjs's NHWC order).
    shape = [16, 64, 64, 32]
    act, act_dy = torch.randn(*shape), torch.randn(*shape)
    shape_name = '[' + ','.join(map(str, shape)) + ']'
    rows.append(dict(name=f'torch sigmoid {shape_name}', value=8 * act.numel() / best_ms(lambda: torch.sigmoid(act), repeats) / 1e6, unit='GB/s'))
    channels = act.shape[-1]
    rows.append(dict(name=f'torch sum over channels {shape_name}', value=(4 * act.numel() + 4 * act.numel() / channels) / best_ms(lambda: act.sum(-1), repeats) / 1e6, unit='GB/s'))
    rows.append(dict(name=f'torch sum over positions {shape_name}', value=(4 * act.numel() + 4 * channels) / best_ms(lambda: act.sum(dim=(0, 1, 2)), repeats) / 1e6, unit='GB/s'))
    leaky_backward = lambda: torch.ops.aten.leaky_relu_backward(act_dy, act, 0.2, False)
    rows.append(dict(name=f'torch leakyRelu backward {shape_name}', value=best_ms(leaky_backward, repeats), unit='ms'))
    return rows


class GroupNormNoAffine(nn.GroupNorm):
    def __init__(self, groups, channels, affine=True):
        super().__init__(groups, channels, eps=1e-5, affine=affine)


class FiLM(nn.Module):
    def __init__(self, cond, ch):
        super().__init__()
        self.linear = nn.Linear(cond, 2 * ch)

    def forward(self, x, cond):  # x [B, C, ...]
        scale, shift = self.linear(cond).chunk(2, -1)
        shape = [x.shape[0], -1] + [1] * (x.dim() - 2)
        return x * (1 + scale.view(shape)) + shift.view(shape)


class RDB(nn.Module):
    def __init__(self, ch, growth, layers, beta):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(ch + i * growth, growth, 3, padding=1) for i in range(layers)])
        self.fuse = nn.Conv2d(ch + layers * growth, ch, 1)
        self.beta = beta

    def forward(self, x):
        feats = [x]
        for conv in self.convs:
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return self.fuse(torch.cat(feats, 1)) * self.beta


class DenseBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = GroupNormNoAffine(CFG['groups'], c, affine=False)
        self.film = FiLM(CFG['cond_dim'], c)
        self.rdb = RDB(c, CFG['growth'], CFG['dense_layers'], CFG['beta'])

    def forward(self, x, cond):
        return x + self.rdb(self.film(self.norm(x), cond))


class AttentionBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c, eps=1e-6, elementwise_affine=False)
        self.film = FiLM(CFG['cond_dim'], c)
        self.heads, self.kv, self.d = CFG['heads'], CFG['kv_heads'], c // CFG['heads']
        self.q = nn.Linear(c, c)
        self.kv_proj = nn.Linear(c, 2 * self.kv * self.d)
        self.out = nn.Linear(c, c)

    def forward(self, x, cond):
        b, c, h, w = x.shape
        t = CFG['token_size']
        pooled = F.avg_pool2d(x, h // t) if t and h > t else x
        th, tw = pooled.shape[2:]
        tokens = pooled.flatten(2).transpose(1, 2)
        mod = self.film(self.norm(tokens).transpose(1, 2), cond).transpose(1, 2)
        q = self.q(mod).view(b, th * tw, self.kv, self.heads // self.kv, self.d).permute(0, 2, 3, 1, 4).reshape(b, self.kv, -1, self.d)
        k, v = self.kv_proj(mod).view(b, th * tw, 2, self.kv, self.d).permute(2, 0, 3, 1, 4)
        p = torch.softmax(q @ k.transpose(-1, -2) / self.d ** 0.5, -1)
        o = (p @ v).view(b, self.kv, self.heads // self.kv, th * tw, self.d).permute(0, 3, 1, 2, 4).reshape(b, th * tw, c)
        o = self.out(o).transpose(1, 2).reshape(b, c, th, tw)
        if (th, tw) != (h, w):
            o = F.interpolate(o, size=(h, w), mode='bilinear', align_corners=False)
        return x + o


class CrossAttentionBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c, eps=1e-6, elementwise_affine=False)
        self.heads, self.kv, self.d = CFG['heads'], CFG['kv_heads'], c // CFG['heads']
        self.to_q = nn.Linear(c, c, bias=False)
        self.to_kv = nn.Linear(CFG['text_dim'], 2 * self.kv * self.d, bias=False)
        self.to_out = nn.Linear(c, c)

    def forward(self, x, tokens):
        b, c, h, w = x.shape
        q = self.to_q(self.norm(x.flatten(2).transpose(1, 2)))
        q = q.view(b, h * w, self.kv, self.heads // self.kv, self.d).permute(0, 2, 3, 1, 4).reshape(b, self.kv, -1, self.d)
        k, v = self.to_kv(tokens).view(b, tokens.shape[1], 2, self.kv, self.d).permute(2, 0, 3, 1, 4)
        p = torch.softmax(q @ k.transpose(-1, -2) / self.d ** 0.5, -1)
        o = (p @ v).view(b, self.kv, self.heads // self.kv, h * w, self.d).permute(0, 3, 1, 2, 4).reshape(b, h * w, c)
        return x + self.to_out(o).transpose(1, 2).reshape(b, c, h, w)


class ScalePredictor(nn.Module):
    def __init__(self, stage):
        super().__init__()
        c, size = CFG['channels'][stage], CFG['sizes'][stage]
        self.cond_mlp = nn.ModuleList([nn.Linear(CFG['text_dim'] + CFG['cond_dim'], CFG['cond_dim']), nn.Linear(CFG['cond_dim'], CFG['cond_dim'])])
        self.conv_in = nn.Conv2d(CFG['image_channels'] + (2 if CFG['coord'] else 0), c, 3, padding=1)
        # ViT-style learned position embedding of the base stage, added after conv_in.
        self.pos_embed = nn.Parameter(torch.randn(1, c, size, size) * 0.02) if stage == 0 and CFG['pos_embed'] else None
        blocks = []
        for i in range(CFG['blocks']):
            blocks.append(DenseBlock(c))
            if size <= CFG['attn_max'] and i >= min(1, CFG['blocks'] - 1):
                blocks.append(AttentionBlock(c))
            if size <= CFG['attn_max'] and CFG['cross_attention']:
                blocks.append(CrossAttentionBlock(c))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(CFG['groups'], c, eps=1e-5, affine=False)
        self.film_out = FiLM(CFG['cond_dim'], c)
        self.conv_out = nn.Conv2d(c, CFG['image_channels'], 3, padding=1)

    def forward(self, x, text, emb, tokens):
        b, _, h, w = x.shape
        cond = self.cond_mlp[1](F.silu(self.cond_mlp[0](torch.cat([text, emb.expand(b, -1)], 1))))
        ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(b, 1, h, w)
        hdn = self.conv_in(torch.cat([x, ys, xs], 1))
        if self.pos_embed is not None:
            hdn = hdn + self.pos_embed
        for blk in self.blocks:
            hdn = blk(hdn, tokens) if isinstance(blk, CrossAttentionBlock) else blk(hdn, cond)
        return self.conv_out(F.silu(self.film_out(self.norm_out(hdn), cond)))


def nsp_steps():
    """{row name: one optimizer step} for each NSP stage at batch 16."""
    steps = {}
    sizes = CFG['sizes']
    emb = nn.Embedding(len(sizes), CFG['cond_dim'])
    for k, s in enumerate(sizes):
        model = ScalePredictor(k)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ps = s if k == 0 else sizes[k - 1]
        prev = torch.randn(BATCH, 3, ps, ps)
        target = torch.randn(BATCH, 3, s, s)
        text = torch.randn(BATCH, CFG['text_dim'])
        tokens = torch.randn(BATCH, 16, CFG['text_dim'])

        def step(k=k, s=s, model=model, opt=opt, prev=prev, target=target, text=text, tokens=tokens):
            inp = prev if k == 0 else F.interpolate(prev, size=(s, s), mode='bilinear', align_corners=False)
            out = model(inp, text, emb(torch.tensor([k])).detach(), tokens)
            pred = out if k == 0 else inp + out
            d = pred - target
            loss = d.abs().mean() + d.square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[f'nsp train step stage {k} ({s}x{s}, batch {BATCH})'] = step
    return steps


def nsp_rows(repeats):
    return [dict(name=f'torch {name}', value=best_ms(step, repeats), unit='ms') for name, step in nsp_steps().items()]


# Keep in step with bench/dit_lora.ts (DIT_BENCH).
DIT = dict(batch=1, rank=16, alpha=16, lr=1e-4, steps=1000, targets=['attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'])


def dit_lora_steps(batch=None):
    """One LoRA step of DiT-S/2 at 32x32x4 latents (256 tokens): the fixtures' hand-written torch DiT
    (scripts/fixtures/dit_reference.py, the official models.py), rank-16 LoRA done by hand on
    qkv/proj/fc1/fc2, frozen base, AdamW on the adapters, MSE on the eps half at random t/labels."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scripts', 'fixtures'))
    from dit_reference import DiT, inject_lora
    b = batch or DIT['batch']
    model = DiT(input_size=32, patch_size=2, in_channels=4, hidden_size=384, depth=12, num_heads=6, mlp_ratio=4.0,
                class_dropout_prob=0.1, num_classes=1000, learn_sigma=True).train()
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = inject_lora(model, DIT['rank'], DIT['alpha'], DIT['targets'])
    params = [w for a in adapters.values() for w in (a.lora_A.weight, a.lora_B.weight)]
    opt = torch.optim.AdamW(params, lr=DIT['lr'], weight_decay=0)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, DIT['steps'], dtype=torch.float64), 0)

    def step():
        t = torch.randint(0, DIT['steps'], (b,))
        y = torch.randint(0, 1000, (b,))
        x0 = torch.randn(b, 4, 32, 32)
        eps = torch.randn_like(x0)
        a = abar[t].float().view(b, 1, 1, 1)
        out = model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, y)
        loss = (out[:, :4] - eps).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return {f'dit-s/2 lora step (256 tokens, batch {b})': step}


def dit_lora_rows(repeats, batch=None):
    return [dict(name=f'torch {name}', value=best_ms(step, repeats), unit='ms') for name, step in dit_lora_steps(batch).items()]


def serve(args, ctx):
    """Interleaved timing for bench/steps.ts: reads one JSON request per line, {"row": name, "n": runs},
    runs that step n times and answers {"ms": [...]}; the first line out lists the rows."""
    steps = {**nsp_steps(), **dit_lora_steps(args.dit_batch), **dit_pretrain_steps()}
    print(json.dumps(dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_model(), autocast=args.autocast,
                          rows=list(steps))), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        step = steps[req['row']]
        times = []
        with ctx():
            for _ in range(int(req.get('n', 1))):
                t = time.perf_counter()
                step()
                times.append((time.perf_counter() - t) * 1e3)
        print(json.dumps(dict(ms=times)), flush=True)


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or 'unknown'


# Keep in step with bench/dit_pretrain.ts (DIT_PRETRAIN_BENCH).
DIT_PRETRAIN = dict(input_size=32, patch_size=4, channels=3, hidden=128, depth=4, heads=4, classes=10, batch=32, lr=1e-3)


def dit_pretrain_steps():
    """One full pretraining step of the default dit recipe's trunk (class-conditioned): the fixtures' torch DiT,
    AdamW on every parameter, rectified-flow velocity MSE at logit-normal t (the network sees t * 1000)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scripts', 'fixtures'))
    from dit_reference import DiT
    c = DIT_PRETRAIN
    b, s, ch = c['batch'], c['input_size'], c['channels']
    model = DiT(input_size=s, patch_size=c['patch_size'], in_channels=ch, hidden_size=c['hidden'], depth=c['depth'],
                num_heads=c['heads'], mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=c['classes'], learn_sigma=False).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=c['lr'], weight_decay=0)

    def step():
        t = torch.sigmoid(torch.randn(b))
        y = torch.randint(0, c['classes'], (b,))
        x0 = torch.randn(b, ch, s, s)
        eps = torch.randn_like(x0)
        tt = t.view(b, 1, 1, 1)
        out = model((1 - tt) * x0 + tt * eps, t * 1000, y)
        loss = (out - (eps - x0)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return {f'dit pretrain step (32px, patch 4, 4×128, batch {b})': step}


def dit_pretrain_rows(repeats):
    return [dict(name=f'torch {name}', value=best_ms(step, repeats), unit='ms') for name, step in dit_pretrain_steps().items()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--part', choices=['kernels', 'steps', 'nsp', 'dit', 'all'], default='all',
                    help='kernels: matmul/conv/elementwise rows; steps: the NSP and DiT LoRA training steps')
    ap.add_argument('--only-dit', action='store_true', help='just the DiT-S/2 LoRA step (same as --part dit)')
    ap.add_argument('--dit-batch', type=int, default=DIT['batch'])
    ap.add_argument('--autocast', choices=['none', 'bf16'], default='none',
                    help="bf16: the training steps under torch.autocast('cpu', dtype=torch.bfloat16)")
    ap.add_argument('--serve', action='store_true', help='answer timing requests on stdin (bench/steps.ts)')
    ap.add_argument('--nsp-config', help='JSON: the NSP model settings (CFG keys) to time, as bench/steps.ts builds its own step')
    args = ap.parse_args()
    if args.nsp_config:
        given = json.loads(args.nsp_config)
        unknown = sorted(set(given) - set(CFG))
        if unknown:
            ap.error(f'--nsp-config: unknown keys {unknown}; expected some of {sorted(CFG)}')
        CFG.update(given)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import contextlib
    ctx = (lambda: torch.autocast('cpu', dtype=torch.bfloat16)) if args.autocast == 'bf16' else contextlib.nullcontext
    if args.serve:
        return serve(args, ctx)
    part = 'dit' if args.only_dit else args.part
    rows = []
    if part in ('kernels', 'all'):
        rows += kernel_rows(args.repeats)
    with ctx():
        if part in ('steps', 'nsp', 'all'):
            rows += nsp_rows(args.repeats)
        if part in ('steps', 'dit', 'all'):
            rows += dit_lora_rows(args.repeats, args.dit_batch) + dit_pretrain_rows(args.repeats)
    print(json.dumps(dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_model(), autocast=args.autocast,
                          mkldnn_bf16=bool(getattr(torch.backends.mkldnn, 'is_available', lambda: False)()), rows=rows), indent=2))


if __name__ == '__main__':
    main()
