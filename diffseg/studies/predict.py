"""``python studies/predict.py --model URI_OR_RUN_ID --images DIR --out DIR``: segment a folder of images with a
model a study logged to MLflow (the training preprocessing; original sizes restored).

Writes per image ``<stem>_mask.png`` (8-bit, 0/255), ``<stem>_prob.png`` (16-bit: mean foreground probability x
65535) and ``<stem>_std.png`` (16-bit: ensemble std of the member probabilities x 65535), all at the image's
original size, and one ``predictions.parquet`` row per image (image, height, width, foreground_fraction,
mean_uncertainty, members, steps, sampler, runtime_s). Exit 0 all written; 1 some images were unreadable (listed,
skipped, the others written); 2 bad input (model, folder, or an existing --out without --overwrite).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..data.io import ReadError, read_image
from ..data.readers import IMAGE_EXTS
from ..diffusion import SAMPLERS
from ..experiments.predictor import IncompatibleModel, Predictor
from ..files import atomic_path
from ..folder import StudyFolder
from ..process import exit_now
from .logged_models import MODEL_NAME, read_model_folder
from .tracking import store_for

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
COLUMNS = ["image", "height", "width", "foreground_fraction", "mean_uncertainty", "members", "steps", "sampler",
           "runtime_s"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="studies/predict.py", description=__doc__.split("\n\n")[0],
                                epilog="exit codes: 0 all written; 1 unreadable images were skipped; 2 bad input",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="an MLflow model URI (models:/NAME/VERSION, runs:/ID/model, "
                                                  "models:/m-...) or the run id of a study trial")
    p.add_argument("--images", required=True, help="a folder of images (png, jpg, tif, bmp)")
    p.add_argument("--out", required=True, help="the folder the masks, maps and predictions.parquet go to")
    p.add_argument("--ensemble", type=int, default=None, help="members (default: the trial's evaluation setting)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the trial's)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="sampler (default: the trial's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the members' noise")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the --runs folder's own store)")
    p.add_argument("--runs", default="runs", help="the study folder whose own MLflow store holds the model (when no "
                                                  "tracking URI is given; re-pointed if the folder was moved)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out that already holds files")
    return p


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def load_predictor(model: str, tracking_uri: str, device: str) -> Predictor:
    """The model's files downloaded (nothing deserialised) and read by ``logged_models.read_model_folder``: a
    model that is not recognisably diffseg is refused before any of its files is unpickled."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    uri = f"runs:/{model}/{MODEL_NAME}" if RUN_ID.match(model) else model
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="diffseg-model-") as tmp:
        try:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except (MlflowException, OSError) as exc:
            raise IncompatibleModel(f"cannot load model {uri!r}: {str(exc).splitlines()[0]}") from None
        try:
            return read_model_folder(folder, device)
        except IncompatibleModel as exc:
            raise IncompatibleModel(f"{uri!r}: {str(exc).split(': ', 1)[-1]}") from None


def device_problem(name: str) -> str | None:
    """Why ``--device`` cannot be used here (checked before the model loads), or None."""
    import torch

    if name == "auto":
        return None
    try:
        dev = torch.device(name)
    except RuntimeError:
        return f"--device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {name!r}: this machine has no CUDA device (use auto or cpu)"
    return None


def output_stems(files: list[Path]) -> dict[Path, str]:
    """Each input's output name stem: its stem, or its whole file name where two inputs share a stem (``x.png``,
    ``x.jpg``), so that no two inputs write the same outputs."""
    count: dict[str, int] = {}
    for f in files:
        count[f.stem] = count.get(f.stem, 0) + 1
    return {f: f.stem if count[f.stem] == 1 else f.name for f in files}


def save_maps(out: Path, stem: str, probability: np.ndarray, std: np.ndarray, mask: np.ndarray) -> None:
    """The three maps as PNGs, with one float32 temporary (4 bytes per pixel) at a time."""
    Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(out / f"{stem}_mask.png")
    for name, a in (("prob", probability), ("std", std)):
        q = np.clip(a, 0, 1, dtype=np.float32)
        q *= 65535
        Image.fromarray(np.rint(q, out=q).astype(np.uint16)).save(out / f"{stem}_{name}.png")
        del q


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    images_dir, out = Path(args.images), Path(args.out)
    if not images_dir.is_dir():
        return _fail(f"--images {images_dir}: not a folder")
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        return _fail(f"--images {images_dir}: no image files ({', '.join(IMAGE_EXTS)})")
    src, dst = images_dir.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        return _fail(f"--out {out} is, holds or is inside --images {images_dir}: outputs never go where inputs are "
                     "(choose an --out outside the image folder)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        return _fail(f"--out {out} already exists and is not empty: choose another folder or pass --overwrite")
    for flag in ("ensemble", "steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            return _fail(f"--{flag} must be a positive integer")
    problem = device_problem(args.device)
    if problem:
        return _fail(problem)
    try:
        store = store_for(StudyFolder(Path(args.runs)), args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        pred = load_predictor(args.model, store, args.device)
    except (IncompatibleModel, ValueError) as exc:
        return _fail(str(exc))
    if args.steps is not None and args.steps > pred.cfg.diffusion.T:
        return _fail(f"--steps {args.steps}: the model's diffusion has T = {pred.cfg.diffusion.T} steps")
    if args.overwrite and out.is_file():
        out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    rows, unreadable = [], []
    stems = output_stems(files)
    for path in tqdm(files, desc="predict", unit="image", disable=len(files) < 5 or not sys.stderr.isatty()):
        try:
            image = read_image(path)
        except ReadError as exc:
            unreadable.append(str(exc))
            continue
        t0 = time.perf_counter()
        r = pred.predict(image, args.ensemble, args.steps, args.sampler, args.seed)
        runtime = time.perf_counter() - t0
        save_maps(out, stems[path], r.probability, r.std, r.mask)
        rows.append({"image": path.name, "height": image.shape[0], "width": image.shape[1],
                     "foreground_fraction": float(r.mask.mean()), "mean_uncertainty": float(r.std.mean()),
                     "members": r.members, "steps": args.steps or pred.cfg.eval.steps,
                     "sampler": args.sampler or pred.cfg.eval.sampler, "runtime_s": runtime})
    with atomic_path(out / "predictions.parquet") as tmp:
        pd.DataFrame(rows, columns=COLUMNS).to_parquet(tmp, index=False)
    print(f"{len(rows)} image(s) segmented into {out} ({np.mean([r['runtime_s'] for r in rows]) if rows else 0:.2f} "
          f"s per image)")
    if unreadable:
        print(f"error: {len(unreadable)} unreadable image(s) skipped:\n  " + "\n  ".join(unreadable), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    exit_now(main())
