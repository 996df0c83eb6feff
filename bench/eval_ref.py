#!/usr/bin/python3
"""Reference side of bench/eval.ts: the same features (hash streams) → np.cov, FID through SciPy's sqrtm of
Σ1Σ2 (pytorch-fid / clean-fid) and through numpy's symmetric eigh route, and the FID Inception v3 (the
module tree of scripts/fixtures/inception_ref.py at full width) forward at 299×299 in PyTorch. Prints one
JSON object {torch, numpy, scipy, rows, fid}. Run: /usr/bin/python3 bench/eval_ref.py --dim 2048
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import scipy
import torch
from scipy import linalg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts", "fixtures"))
from hash_values import hash_uniform  # noqa: E402
from inception_ref import FIDInception  # noqa: E402
from metrics_ref import fid_symmetric_thresholded as fid_eigh  # noqa: E402


def features(name, n, d):
    u = hash_uniform(name, n * d).reshape(n, d)
    x = np.maximum(0.0, u - 0.5 + 0.5 * (np.roll(u, -1, axis=1) - 0.5)) + 0.001 * (np.arange(d) % 13)
    return x.astype(np.float32)


def fid_sqrtm(mu1, s1, mu2, s2):
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_bench(d, n, rows, fids):
    a = features("bench-fid-a", n, d)
    b = features("bench-fid-b", n, d) * np.float32(1.05) + np.float32(0.01)
    t = time.perf_counter()
    f1, f2 = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    rows.append(dict(name=f"numpy stats mean+cov 2×{n}×{d}", value=(time.perf_counter() - t) * 1e3, unit="ms"))
    t = time.perf_counter()
    v = fid_sqrtm(mu1, s1, mu2, s2)
    rows.append(dict(name=f"scipy sqrtm fid linalg d={d}", value=(time.perf_counter() - t) * 1e3, unit="ms", note=f"FID {v:.9f} (pytorch-fid's path)"))
    fids[f"sqrtm d={d}"] = v
    t = time.perf_counter()
    v = fid_eigh(mu1, s1, mu2, s2)
    rows.append(dict(name=f"numpy eigh fid linalg d={d}", value=(time.perf_counter() - t) * 1e3, unit="ms", note=f"FID {v:.9f} (symmetric route)"))
    fids[f"eigh d={d}"] = v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--js-dim", type=int, default=2048)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, fids = [], {}
    fid_bench(args.dim, args.samples, rows, fids)
    if args.js_dim != args.dim:
        fid_bench(args.js_dim, args.samples, rows, fids)
    model = FIDInception(1).eval()
    x = torch.from_numpy(hash_uniform("bench-inception-images", args.images * 299 * 299 * 3).astype(np.float32).reshape(args.images, 299, 299, 3)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        model(x[:1])
        t = time.perf_counter()
        model(x)
        ms = (time.perf_counter() - t) * 1e3
    rows.append(dict(name="torch inception 299px", value=args.images * 1000 / ms, unit="img/s", note=f"batch {args.images}, {ms / args.images:.0f} ms/img, {args.threads} threads"))
    print(json.dumps(dict(torch=torch.__version__, numpy=np.__version__, scipy=scipy.__version__, rows=rows, fid=fids)))


if __name__ == "__main__":
    main()
