"""Deterministic case-level splits (patches of one tile never straddle splits).

Protocol (the analysis paper's): the official test part where the release has one (MoNuSeg), else a seeded
``test_fraction`` of cases; the rest split 80/20 (``val_fraction``) into train / val to choose the number of
training steps; ``retrain=True`` then trains on train + val (val is kept for monitoring only). The test split is
never used for model selection. The split seed is separate from the training seed so repeats share splits.
"""

from __future__ import annotations

import numpy as np


def make_splits(case_ids: list[str], official: list[str | None], seed: int = 0, val_fraction: float = 0.2,
                test_fraction: float = 0.2, retrain: bool = False) -> dict[str, np.ndarray]:
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise ValueError("val_fraction and test_fraction must be in [0, 1)")
    cases = sorted(set(case_ids))
    off = {c: s for c, s in zip(case_ids, official, strict=True)}
    rng = np.random.default_rng(seed)
    test = {c for c in cases if off[c] == "test"}
    val = {c for c in cases if off[c] == "val"}
    rest = [c for c in cases if c not in test and c not in val]
    order = [rest[i] for i in rng.permutation(len(rest))]
    if not test and test_fraction > 0:
        n_test = max(1, round(test_fraction * len(cases)))
        test, order = set(order[:n_test]), order[n_test:]
    if not val and val_fraction > 0:
        n_val = max(1, round(val_fraction * len(order)))
        val, order = set(order[:n_val]), order[n_val:]
    train = set(order)
    if retrain:
        train |= val
    ids = np.asarray(case_ids)
    return {name: np.flatnonzero(np.isin(ids, sorted(group))) for name, group in
            (("train", train), ("val", val), ("test", test))}


def spread_subset(idx: np.ndarray, case_ids: list[str], limit: int | None, seed: int = 0) -> np.ndarray:
    """At most ``limit`` of the samples ``idx``, spread over all their cases: cases in a seeded random order, one
    sample of each case per round (a random one of its patches) until ``limit`` is reached; sorted. Never the
    first N sorted samples, which for patched tiles are the patches of the first few tiles. ``limit=None`` or
    ``limit >= len(idx)``: all of ``idx``."""
    idx = np.asarray(idx)
    if limit is None or limit >= len(idx):
        return idx
    rng = np.random.default_rng(seed)
    by_case: dict[str, list[int]] = {}
    for i in idx.tolist():
        by_case.setdefault(case_ids[i], []).append(i)
    queues = [list(rng.permutation(by_case[c])) for c in sorted(by_case)]
    queues = [queues[j] for j in rng.permutation(len(queues))]
    out: list[int] = []
    while len(out) < limit:
        for q in queues:
            if q and len(out) < limit:
                out.append(int(q.pop()))
    return np.asarray(sorted(out), dtype=idx.dtype)
