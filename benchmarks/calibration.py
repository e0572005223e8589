"""Benchmark of auq.calibration (run: ``python benchmarks/calibration.py``; ~1-2 minutes).

Prints, on 10^7 predictions, ECE (equal-width, 15 bins) and the Brier decomposition, and
``auq.estimators.decompose`` on 10^6 pairs x 8 members, each as the median over repeats with its
ratio to a numpy one-pass baseline (sum of the inputs) measured in the same run; the ratio of
torchmetrics' functional ``binary_calibration_error`` and netcal's ``ECE`` to ours on the same
inputs (10^6, and 10^7 for torchmetrics); and the peak traced memory of ``StreamingECE`` fed in
chunks of 10^5 at 10^6 vs 10^7 predictions.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from auq.calibration import StreamingECE, brier_decomposition, expected_calibration_error  # noqa: E402


def median_time(fn, repeats=5):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def ms(t):
    return f"{t * 1e3:8.2f} ms"


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    y = (rng.uniform(size=n) < p**1.2).astype(np.float64)
    return p, y


def main():
    n = 10**7
    p, y = data(n)
    base = median_time(lambda: p.sum() + y.sum(), 7)
    print(f"n = {n:.0e} predictions; numpy one-pass baseline (p.sum() + y.sum()): {ms(base)}")
    t_ece = median_time(lambda: expected_calibration_error(p, y), 7)
    print(f"ECE (uniform, 15 bins, l1)  = {expected_calibration_error(p, y):.6f}: {ms(t_ece)}"
          f"  ratio to baseline {t_ece / base:5.1f}x")
    t_ece2 = median_time(lambda: expected_calibration_error(p, y, norm="l2"), 3)
    print(f"ECE (uniform, 15 bins, l2):                {ms(t_ece2)}  ratio {t_ece2 / base:5.1f}x")
    t_bd = median_time(lambda: brier_decomposition(p, y), 3)
    d = brier_decomposition(p, y)
    print(f"Brier decomposition: brier={d.brier:.6f} rel={d.reliability:.6f} res={d.resolution:.6f} "
          f"unc={d.uncertainty:.6f} wbv={d.within_bin_variance:.2e}: {ms(t_bd)}  ratio {t_bd / base:5.1f}x")

    # decompose on 10^6 pairs x 8 members (estimators branch; may not be merged yet)
    try:
        from auq.estimators import decompose
    except ImportError:
        print("decompose (10^6 x 8): skipped (auq.estimators.decompose not available on this branch)")
    else:
        m = np.random.default_rng(1).normal(size=(10**6, 8))
        bm = median_time(lambda: m.sum(), 5)
        td = median_time(lambda: decompose(m), 3)
        print(f"decompose (10^6 pairs x 8): {ms(td)}  baseline m.sum() {ms(bm)}  ratio {td / bm:5.1f}x")

    # references at 10^6 (and 10^7 for torchmetrics)
    for nn in (10**6, 10**7):
        pp, yy = p[:nn], y[:nn]
        bb = median_time(lambda pp=pp, yy=yy: pp.sum() + yy.sum(), 7)
        ours = median_time(lambda pp=pp, yy=yy: expected_calibration_error(pp, yy), 7)
        line = f"n={nn:.0e}: ours {ms(ours)} (baseline {ms(bb)}, {ours / bb:4.1f}x)"
        try:
            import torch
            from torchmetrics.functional.classification import binary_calibration_error

            tp, ty = torch.from_numpy(pp), torch.from_numpy(yy).long()
            tt = median_time(
                lambda tp=tp, ty=ty: binary_calibration_error(tp, ty, n_bins=15), 3 if nn > 10**6 else 5)
            line += f" | torchmetrics {ms(tt)} = {tt / ours:5.1f}x ours"
        except ImportError:
            line += " | torchmetrics not installed"
        if nn <= 10**6:
            try:
                from netcal.metrics import ECE

                yi = yy.astype(np.int64)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tn = median_time(lambda pp=pp, yi=yi: ECE(bins=15).measure(pp, yi), 3)
                line += f" | netcal {ms(tn)} = {tn / ours:5.1f}x ours"
            except ImportError:
                line += " | netcal not installed"
        print(line)

    # streaming memory at 10^6 vs 10^7, fed in chunks of 10^5 (data generated per chunk)
    chunk = 10**5
    cp, cy = data(chunk, seed=3)
    for total in (10**6, 10**7):
        acc = StreamingECE(15)
        tracemalloc.start()
        for _ in range(total // chunk):
            acc.update(cp, cy)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"StreamingECE over {total:.0e} predictions in chunks of {chunk:.0e}: "
              f"peak traced memory {peak / 2**20:.2f} MiB, ECE {acc.compute():.6f}")


if __name__ == "__main__":
    main()
