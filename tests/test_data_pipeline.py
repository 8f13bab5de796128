import multiprocessing as mp

import numpy as np
import torch

from diffseg.data import AugmentConfig, BatchSampler, PrepConfig, load_dataset
from diffseg.data.splits import make_splits
from diffseg.data.synthetic import generate


def test_synthetic_sets_are_seeded_and_have_their_fingerprint():
    a_img, a_m = generate("blob", 20, 64, seed=1)
    b_img, b_m = generate("blob", 20, 64, seed=1)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_m, b_m)
    assert not np.array_equal(generate("blob", 20, 64, seed=2)[1], a_m)
    _, nuc = generate("nuclei", 20, 64)
    _, clu = generate("clusters", 40, 64)
    from scipy import ndimage

    objs = lambda ms: [ndimage.label(m)[1] for m in ms]  # noqa: E731
    assert max(objs(a_m)) == 1 and min(objs(a_m)) == 1
    assert np.median(objs(nuc)) >= 15
    assert any(m.sum() == 0 for m in clu) and 0.005 < clu.mean() < 0.08
    # any resolution, same layout
    assert generate("nuclei", 2, 128)[1].shape == (2, 128, 128)


def test_images_carry_the_mask_signal():
    img, m = generate("clusters", 30, 64)
    r, b = img[..., 0].astype(float), img[..., 2].astype(float)
    # brown positives are red-over-blue; blue negatives (background class) are not
    assert (r - b)[m].mean() > (r - b)[~m].mean() + 15


def test_splits_deterministic_case_level_and_retrain():
    ids = [f"tile{i // 4}" for i in range(80)]  # 20 tiles x 4 patches
    s1 = make_splits(ids, [None] * 80, seed=3)
    s2 = make_splits(ids, [None] * 80, seed=3)
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    groups = {k: {ids[i] for i in v} for k, v in s1.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert len(groups["test"]) == 4 and len(groups["val"]) == 3 and len(groups["train"]) == 13
    r = make_splits(ids, [None] * 80, seed=3, retrain=True)
    assert set(r["train"]) == set(s1["train"]) | set(s1["val"]) and np.array_equal(r["test"], s1["test"])
    off = make_splits(ids, ["test" if i < 8 else "train" for i in range(80)], seed=0)
    assert set(off["test"]) == set(range(8))


def test_batch_sampler_augmentation_and_resume():
    ds = load_dataset("synthetic-blob", PrepConfig(32))
    idx = ds.splits()["train"]
    s = BatchSampler(ds, idx, 8, seed=0, augment_cfg=AugmentConfig(enabled=True))
    img, m = s.next()
    assert img.shape == (8, 3, 32, 32) and m.shape == (8, 1, 32, 32)
    assert set(m.unique().tolist()) <= {-1.0, 1.0} and img.min() >= -1 and img.max() <= 1
    state = s.state()
    a = [s.next()[1] for _ in range(3)]
    s.load_state(state)
    b = [s.next()[1] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # foreground area is preserved by flips/rotations
    plain = BatchSampler(ds, idx, len(idx), seed=0)
    aug = BatchSampler(ds, idx, len(idx), seed=0, augment_cfg=AugmentConfig(enabled=True, colour_jitter=0))
    assert (plain.next()[1] > 0).sum() == (aug.next()[1] > 0).sum()


def _build(args):
    root, cache, res = args
    ds = load_dataset(f"folder:{root}", PrepConfig(res), cache_dir=cache)
    return str(ds.path), ds.cache_key


def test_cache_concurrent_builds_and_identity(tmp_path):
    from PIL import Image

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((rng.random((48, 48)) > 0.5).astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    cache = tmp_path / "cache"
    with mp.get_context("spawn").Pool(3) as pool:
        out = pool.map(_build, [(root, cache, 16)] * 3)
    assert len(set(out)) == 1
    built = [p for p in cache.iterdir() if p.is_dir() and p.name != ".locks"]
    assert len(built) == 1 and not any(".tmp-" in p.name for p in cache.iterdir())
    a = load_dataset(f"folder:{root}", PrepConfig(16), cache_dir=cache)
    assert isinstance(a.masks, np.memmap)
    b = load_dataset(f"folder:{root}", PrepConfig(24), cache_dir=cache)
    assert a.dataset_hash == b.dataset_hash and a.cache_key != b.cache_key
    # changing a file's content changes the dataset identity
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "masks" / "0.png")
    c = load_dataset(f"folder:{root}", PrepConfig(16), cache_dir=cache)
    assert c.dataset_hash != a.dataset_hash
