#!/usr/bin/env python3
"""Peer of `scaleforge curate` for bench/curate.ts: img2dataset's resizer plus imagededup's PHash, per file.

Written from the two projects' documented behaviour (see docs/curate.md), not their code, since neither installs
here; run with Debian's python3 (python3-opencv, python3-pil, python3-numpy, python3-scipy):

- img2dataset (resizer.py, border mode, the default): cv2.imdecode(IMREAD_UNCHANGED); grey/alpha to BGR with alpha
  matted on white; longest side to image_size with cv2.resize INTER_AREA when shrinking (LANCZOS4 when enlarging);
  centred cv2.copyMakeBorder with white to image_size²; cv2.imencode('.jpg', quality 95); sha256 of the original
  bytes (its compute_hash default); the encoded image written to the output folder.
- imagededup PHash (methods/hashing.py): PIL open, convert('RGBA').convert('RGB') when not RGB, resize((32, 32),
  LANCZOS) on the colour image, convert('L'), scipy.fftpack.dct along axis 0 then 1, top-left 8×8, threshold =
  median of the 63 non-DC coefficients, bit = coefficient >= threshold, packed to 16 hex characters.

One process per core (multiprocessing.Pool, fork), as both tools run. Prints one JSON line:
{"images": n, "seconds": wall time of the pool.map over all files, "cpu_seconds": CPU time of this process during
the map plus all of the pool processes' (started by fork after the imports, so it is almost all map work),
"startup_seconds": pool start}.
"""
import argparse
import hashlib
import io
import json
import multiprocessing
import os
import resource
import time

import cv2
import numpy as np
from PIL import Image
from scipy.fftpack import dct

cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe the cores

IMAGE_SIZE = 512
OUT_DIR = ''


def img2dataset_border(data: bytes) -> bytes:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError('not decodable')
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    h, w = img.shape[:2]
    scale = IMAGE_SIZE / max(h, w)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    img = cv2.resize(img, (nw, nh), interpolation=interpolation)
    top = (IMAGE_SIZE - nh) // 2
    left = (IMAGE_SIZE - nw) // 2
    img = cv2.copyMakeBorder(img, top, IMAGE_SIZE - nh - top, left, IMAGE_SIZE - nw - left, cv2.BORDER_CONSTANT, value=[255, 255, 255])
    ok, enc = cv2.imencode('.jpg', img, [int(cv2.IMWRITE_JPEG_QUALITY), 95])
    if not ok:
        raise ValueError('encode failed')
    return enc.tobytes()


def imagededup_phash(data: bytes) -> str:
    img = Image.open(io.BytesIO(data))
    if img.mode != 'RGB':
        img = img.convert('RGBA').convert('RGB')
    grey = np.array(img.resize((32, 32), Image.LANCZOS).convert('L'))
    coeffs = dct(dct(grey, axis=0), axis=1)[:8, :8]
    bits = coeffs >= np.median(np.ndarray.flatten(coeffs)[1:])
    return ''.join('%0.2x' % b for b in np.packbits(bits))


def one(path: str) -> str:
    with open(path, 'rb') as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    out = img2dataset_border(data)
    with open(os.path.join(OUT_DIR, digest + '.jpg'), 'wb') as f:
        f.write(out)
    return imagededup_phash(data)


def main() -> None:
    global OUT_DIR, IMAGE_SIZE
    ap = argparse.ArgumentParser()
    ap.add_argument('--dir', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--procs', type=int, default=os.cpu_count())
    ap.add_argument('--size', type=int, default=512)
    args = ap.parse_args()
    OUT_DIR, IMAGE_SIZE = args.out, args.size
    os.makedirs(OUT_DIR, exist_ok=True)
    files = sorted(os.path.join(args.dir, f) for f in os.listdir(args.dir) if f.lower().endswith(('.jpg', '.jpeg', '.png')))
    t0 = time.perf_counter()
    pool = multiprocessing.get_context('fork').Pool(args.procs)
    pool.map(abs, range(args.procs))  # every process started
    t1 = time.perf_counter()
    self_cpu = time.process_time()
    hashes = pool.map(one, files, chunksize=1)
    t2 = time.perf_counter()
    self_cpu = time.process_time() - self_cpu
    pool.close()
    pool.join()  # reaped, so their CPU time is in RUSAGE_CHILDREN
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = self_cpu + kids.ru_utime + kids.ru_stime
    print(json.dumps({'images': len(hashes), 'seconds': t2 - t1, 'cpu_seconds': cpu, 'startup_seconds': t1 - t0, 'procs': args.procs}))


if __name__ == '__main__':
    main()
