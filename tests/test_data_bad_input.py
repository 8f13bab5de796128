"""Bad input: a clear error naming the file, exit code 2 from the CLI, nothing written."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from diffseg.data import DatasetError, PrepConfig, load_dataset
from diffseg.data.__main__ import main as data_main


def _pair(root, stem, size=(40, 30), mask_values=(0, 255), mask_size=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
    ms = mask_size or size
    m = np.full((ms[1], ms[0]), mask_values[0], np.uint8)
    m[: ms[1] // 2] = mask_values[1]
    Image.fromarray(m).save(root / "masks" / f"{stem}.png")


def _expect(root, *fragments, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError) as info:
        load_dataset(f"folder:{root}", PrepConfig(16), cache_dir=cache)
    text = str(info.value)
    for frag in fragments:
        assert frag in text, text
    written = [p for p in cache.glob("*") if p.is_dir() and not p.name.startswith(".")] if cache.exists() else []
    assert written == [], f"a failed build left {written}"
    return text


def test_valid_folder_loads(tmp_path):
    _pair(tmp_path / "ds", "a")
    _pair(tmp_path / "ds", "b")
    ds = load_dataset(f"folder:{tmp_path / 'ds'}", PrepConfig(16), cache_dir=tmp_path / "cache")
    assert len(ds) == 2 and ds.masks.shape == (2, 16, 16)


def test_missing_mask_and_missing_image(tmp_path):
    root = tmp_path / "ds"
    _pair(root, "a")
    _pair(root, "b")
    (root / "masks" / "a.png").unlink()
    (root / "images" / "b.png").unlink()
    text = _expect(root, str(root / "images" / "a.png"), "has no mask", str(root / "masks" / "b.png"),
                   "has no image", tmp_path=tmp_path)
    assert "2 problem(s)" in text


def test_size_mismatch(tmp_path):
    root = tmp_path / "ds"
    _pair(root, "a", mask_size=(20, 30))
    _expect(root, str(root / "masks" / "a.png"), "differs from image", tmp_path=tmp_path)


def test_mask_values_outside_encoding(tmp_path):
    root = tmp_path / "ds"
    _pair(root, "a", mask_values=(0, 128))
    _expect(root, str(root / "masks" / "a.png"), "mask values [128]", tmp_path=tmp_path)


def test_truncated_image(tmp_path):
    root = tmp_path / "ds"
    _pair(root, "a")
    p = root / "images" / "a.png"
    p.write_bytes(p.read_bytes()[:200])
    _expect(root, str(p), "unreadable or truncated", tmp_path=tmp_path)


def test_empty_and_wrong_root(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir(parents=True)
    _expect(tmp_path / "empty", "no image files found", "images/ and masks/", tmp_path=tmp_path)
    with pytest.raises(DatasetError, match=r"expected ISIC_<id>\.jpg"):
        load_dataset("isic2016", data_root=tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("monuseg", data_root=tmp_path / "nowhere")


def test_xml_without_regions(tmp_path):
    root = tmp_path / "mo" / "MoNuSegTestData"
    root.mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "TCGA-X.tif", compression="tiff_lzw")
    (root / "TCGA-X.xml").write_text("<Annotations><Annotation><Regions></Regions></Annotation></Annotations>")
    with pytest.raises(DatasetError, match=r"TCGA-X\.xml: XML annotation without regions"):
        load_dataset("monuseg", PrepConfig(16), data_root=tmp_path / "mo", cache_dir=tmp_path / "cache")


def test_rgb_colour_key(tmp_path):
    root = tmp_path / "ds"
    _pair(root, "a")
    m = np.zeros((30, 40, 3), np.uint8)
    m[5:10, 5:10] = (255, 0, 0)
    m[20:25, 20:25] = (0, 0, 255)
    Image.fromarray(m).save(root / "masks" / "a.png")
    from diffseg.data.io import read_mask

    assert read_mask(root / "masks" / "a.png", "rgb", (255, 0, 0)).sum() == 25
    with pytest.raises(ValueError, match="colour mask but encoding"):
        read_mask(root / "masks" / "a.png", "auto")


def test_cli_exit_codes(tmp_path, capsys):
    root = tmp_path / "ds"
    _pair(root, "a")
    assert data_main(["check", "--dataset", f"folder:{root}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cases"] == 1 and out["valid"]
    (root / "masks" / "a.png").unlink()
    assert data_main(["check", "--dataset", f"folder:{root}", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert not out["valid"] and "has no mask" in out["problems"][0]
    proc = subprocess.run([sys.executable, "-m", "diffseg.data", "check", "--dataset", "nonsense"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown dataset 'nonsense'" in proc.stderr


@pytest.mark.parametrize("year", [2017, 2018])
def test_isic_2017_2018_layouts_with_official_parts(tmp_path, year):
    rng = np.random.default_rng(0)
    parts = {2017: [("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth", "train"),
                    ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth", "val"),
                    ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", "test")],
             2018: [("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", "train"),
                    ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth", "val"),
                    ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth", "test")]}[year]
    for k, (img_dir, gt_dir, _) in enumerate(parts):
        (tmp_path / img_dir).mkdir()
        (tmp_path / gt_dir).mkdir()
        for i in range(2):
            case = f"ISIC_00{k}000{i}"
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / img_dir / f"{case}.jpg")
            m = np.zeros((30, 40), np.uint8)
            m[5:20, 5:25] = 255
            Image.fromarray(m).save(tmp_path / gt_dir / f"{case}_segmentation.png")
        (tmp_path / img_dir / f"ISIC_00{k}0000_superpixels.png").write_bytes(b"not part of the task")
    ds = load_dataset(f"isic{year}", PrepConfig(16), data_root=tmp_path, cache_dir=tmp_path / "cache")
    assert len(ds) == 6 and sorted(set(ds.official_splits)) == ["test", "train", "val"]
    sp = ds.splits()
    assert [len(sp[k]) for k in ("train", "val", "test")] == [2, 2, 2]


def test_check_lists_every_problem_in_one_pass(tmp_path, capsys):
    """A missing mask does not hide a truncated image beside it (nor a mask of the wrong size)."""
    root = tmp_path / "ds"
    for stem in ("a", "b", "c", "d"):
        _pair(root, stem)
    (root / "masks" / "a.png").unlink()
    truncated = root / "images" / "b.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    _pair(root, "c", mask_size=(20, 30))
    assert data_main(["check", "--dataset", f"folder:{root}", "--json"]) == 2
    problems = json.loads(capsys.readouterr().out)["problems"]
    text = "\n".join(problems)
    assert len(problems) == 3, problems
    assert "has no mask" in text and str(truncated) in text and "differs from image" in text


def _nnunet(root, labels, cases=3, channel_files=1, size=(24, 20)):
    """A small nnU-Net v2 raw dataset of 2-D PNGs, as nnU-Net's dataset conversion scripts write them."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    channel_names = {"0": "R", "1": "G", "2": "B"} if channel_files == 3 else {"0": "RGB"}
    (root / "dataset.json").write_text(json.dumps({"channel_names": channel_names, "labels": labels,
                                                   "numTraining": cases, "file_ending": ".png"}))
    rng = np.random.default_rng(0)
    for i in range(cases):
        name = f"case{i:03d}"
        if channel_files == 3:
            for c in range(3):
                Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(
                    root / "imagesTr" / f"{name}_{c:04d}.png")
        else:
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
                root / "imagesTr" / f"{name}_0000.png")
        lab = np.zeros((size[1], size[0]), np.uint8)
        lab[:8] = 1
        lab[-5:] = max(labels.values())
        Image.fromarray(lab).save(root / "labelsTr" / f"{name}.png")


@pytest.mark.parametrize("channel_files", [1, 3])
def test_nnunet_raw_dataset_reads_as_it_is(tmp_path, capsys, channel_files):
    root = tmp_path / "Dataset001_Toy"
    _nnunet(root, {"background": 0, "lesion": 1}, channel_files=channel_files)
    ds = load_dataset(f"nnunet:{root}", PrepConfig(16), cache_dir=tmp_path / "cache")
    assert len(ds) == 3 and ds.images.shape == (3, 16, 16, 3) and 0 < ds.masks.mean() < 1
    assert data_main(["check", "--dataset", f"nnunet:{root}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == 3


def test_nnunet_multi_label_needs_a_label(tmp_path, capsys):
    root = tmp_path / "Dataset002_Two"
    _nnunet(root, {"background": 0, "liver": 1, "tumour": 2})
    assert data_main(["check", "--dataset", f"nnunet:{root}"]) == 2
    err = capsys.readouterr().err
    assert "2 foreground labels" in err and "'liver': 1" in err and "'tumour': 2" in err and "--label" in err
    assert data_main(["check", "--dataset", f"nnunet:{root}", "--label", "tumour", "--json"]) == 0
    tumour = json.loads(capsys.readouterr().out)["foreground_fraction"]["mean"]
    liver = load_dataset(f"nnunet:{root}?label=liver", PrepConfig(20), cache_dir=tmp_path / "c").masks.mean()
    assert abs(tumour - 5 / 20) < 1e-6 and abs(liver - 8 / 20) < 0.05
    assert data_main(["check", "--dataset", f"nnunet:{root}", "--label", "spleen"]) == 2
    assert "label 'spleen' is not a foreground label" in capsys.readouterr().err
    (root / "labelsTr" / "case001.png").unlink()
    assert data_main(["check", "--dataset", f"nnunet:{root}?label=liver", "--json"]) == 2
    assert "case 'case001' has no label" in json.loads(capsys.readouterr().out)["problems"][0]
