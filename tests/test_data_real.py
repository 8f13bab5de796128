"""Every real sample set read through the registry, checked against SOURCES.md."""

import numpy as np
from scipy import ndimage

from diffseg.data import PrepConfig, load_dataset
from diffseg.data.check import check_dataset
from diffseg.data.io import rasterise_polygons, read_image, read_xml_polygons


def test_isic2016_counts_encoding_and_foreground(shared_data):
    s = check_dataset("isic2016")
    assert s["cases"] == 21 and s["splits"] == {"train": 21}
    assert s["mask_encoding"] == "binary255"
    assert 0.015 <= s["foreground_fraction"]["min"] and s["foreground_fraction"]["max"] <= 0.50
    assert s["objects_per_mask"]["max"] == 1 and s["objects_per_mask"]["min"] == 1
    assert "767x576" in s["image_sizes"] and "3072x2304" in s["image_sizes"]


def test_monuseg_counts_parts_and_nuclei(shared_data):
    s = check_dataset("monuseg")
    assert s["cases"] == 44 and s["splits"] == {"train": 30, "test": 14}
    assert s["image_sizes"] == {"1000x1000": 44}
    assert s["annotations"] == {"png": 30, "xml": 14}
    assert 0.10 <= s["foreground_fraction"]["min"] and s["foreground_fraction"]["max"] <= 0.41
    assert 150 <= s["objects_per_mask"]["min"] and s["objects_per_mask"]["max"] <= 1300


def test_ihc_folder_of_pairs(shared_data):
    s = check_dataset("ihc_her2like")
    assert s["cases"] == 4 and s["image_sizes"] == {"512x512": 4}
    assert 0.003 <= s["foreground_fraction"]["min"] and s["foreground_fraction"]["max"] <= 0.056
    assert 1 <= s["objects_per_mask"]["min"] and s["objects_per_mask"]["max"] <= 22
    # the registry entry cuts each 512 px tile into 16 patches of 128 px (patches keep their tile as case id);
    # the same folder through folder:PATH reads whole tiles, a different dataset identity
    a = load_dataset("ihc_her2like", PrepConfig(32))
    b = load_dataset(f"folder:{shared_data / 'ihc_her2like'}", PrepConfig(32))
    assert len(a) == 64 and len(set(a.case_ids)) == 4 and len(b) == 4
    assert a.dataset_hash != b.dataset_hash
    assert abs(a.masks.mean() - b.masks.mean()) < 0.01  # same foreground, other scale


def _shoelace(p):
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_monuseg_xml_rasterisation_agrees_with_polygons(shared_data):
    tests = sorted((shared_data / "monuseg" / "MoNuSegTestData").glob("*.xml"))
    assert len(tests) == 14
    for xml in tests[:4]:
        polys = read_xml_polygons(xml)
        h, w = read_image(xml.with_suffix(".tif")).shape[:2]
        mask = rasterise_polygons(polys, h, w)
        # each polygon alone: pixel count close to its area (boundary pixels count as inside)
        for p in polys[:25]:
            single = rasterise_polygons([p], h, w).sum()
            area = _shoelace(p)
            assert abs(single - area) <= 0.2 * area + 0.6 * len(p) + 4
        # union: no more than the summed areas plus boundaries; components close to the region count
        total = sum(_shoelace(p) for p in polys)
        assert 0.8 * total <= mask.sum() <= 1.25 * total
        # touching nuclei merge into one component in dense tiles, never split
        n_obj = ndimage.label(mask)[1]
        assert 0.6 * len(polys) <= n_obj <= len(polys)


def test_monuseg_patches_keep_physical_scale(shared_data):
    ds = load_dataset("monuseg", PrepConfig(64))
    # 1000 px tiles cut into round(64 um / 0.2527 um/px) = 253 px patches: 4 x 4 per tile
    assert len(ds) == 44 * 16 and ds.masks.shape[1:] == (64, 64) and ds.images.shape[1:] == (64, 64, 3)
    sp = ds.splits(seed=0)
    test_cases = {ds.case_ids[i] for i in sp["test"]}
    assert len(test_cases) == 14  # the official test part
    assert not ({ds.case_ids[i] for i in sp["train"]} & {ds.case_ids[i] for i in sp["val"]})
    assert 0.10 <= ds.masks.mean() <= 0.35
