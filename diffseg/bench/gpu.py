"""``python -m diffseg.bench gpu [--json]`` (``make gpu-check``): the GPU path, for the day a GPU is lent.

On a machine with CUDA (under 5 minutes): a tiny study of two E2 trials sharing one GPU (``--gpus-per-trial
0.5``) with bf16 autocast, run by ``run_study`` on the embedded Ray; checks that both trials ran on the device at
the same time (their MLflow runs' start-end intervals overlap) and on CUDA (the trials' ``hardware``), and
prints each architecture's training steps/s and MFU against the card's data-sheet dense bf16 peak
(``bench.models``). Exit 0 only if all of that held. Without CUDA it says so and exits 0 without running."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """description: the GPU check's tiny study (two E2 trials on one GPU)
experiment: e2
fixed: {model.architecture: ensemdiff, data.resolution: 64, train.bf16: true, train.device: cuda}
grid:
  weighting:
    - {label: uniform, diffusion.weighting: uniform}
    - {label: min_snr, diffusion.weighting: min_snr, diffusion.weighting_params: {gamma: 5}}
seeds: [0]
datasets: [synthetic-blob]
budgets:
  smoke: {train.steps: 300, train.val_every: 150, eval.test_max_images: 8, eval.ensemble: 4, eval.steps: 10}
"""


def run() -> dict:
    import pandas as pd
    import torch

    if not torch.cuda.is_available():
        print("gpu check: no CUDA device on this machine; nothing run", file=sys.stderr)
        return {"cuda": False, "passed": True}
    from ..folder import StudyFolder
    from . import models

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="diffseg-gpu-") as tmp:
        spec = Path(tmp) / "gpu_check.yaml"
        spec.write_text(STUDY)
        out = Path(tmp) / "runs"
        proc = subprocess.run([sys.executable, "-m", "diffseg.studies", "--study", str(spec), "--out", str(out),
                               "--gpus-per-trial", "0.5", "--cpus-per-trial", "1", "--no-models"],
                              capture_output=True, text=True, timeout=420)
        trials = pd.read_parquet(StudyFolder(out).export_table(spec.stem, "trials")) if proc.returncode == 0 \
            else pd.DataFrame()
    study_s = time.monotonic() - t0
    overlap = False
    if len(trials) == 2:
        (a0, a1), (b0, b1) = trials[["start_time", "end_time"]].itertuples(index=False)
        overlap = max(a0, b0) < min(a1, b1)
    on_cuda = len(trials) == 2 and all("cuda" in str(h).lower() or "nvidia" in str(h).lower()
                                       or torch.cuda.get_device_name(0) in str(h) for h in trials.hardware)
    bench = models.run(sizes=("small",), steps=5)
    mfu = {k: {"steps_per_s": m["steps_per_s"], "mfu_of_datasheet": m["achieved_flops"] / bench["theoretical"]
               ["flops"] if bench["theoretical"]["flops"] else None} for k, m in bench["models"].items()}
    ok = proc.returncode == 0 and (trials.status == "ok").all() and overlap and on_cuda
    return {"cuda": True, "device": torch.cuda.get_device_name(0), "study_rc": proc.returncode,
            "study_s": study_s, "trials": len(trials), "concurrent": bool(overlap), "on_cuda": bool(on_cuda),
            "models": mfu, "datasheet_bf16_peak": bench["theoretical"]["flops"], "passed": bool(ok),
            **({"log": (proc.stdout + proc.stderr)[-3000:]} if not ok else {})}


def table(r: dict) -> str:
    if not r["cuda"]:
        return "gpu check: no CUDA device here (exit 0, nothing run)"
    lines = [f"gpu check on {r['device']}: study exit {r['study_rc']} in {r['study_s']:.0f} s, {r['trials']} "
             f"trials, concurrent on one GPU: {r['concurrent']}, on CUDA: {r['on_cuda']} -> "
             f"{'PASSED' if r['passed'] else 'FAILED'}"]
    for k, m in r["models"].items():
        mfu = f"{100 * m['mfu_of_datasheet']:.1f} %" if m["mfu_of_datasheet"] is not None else "?"
        lines.append(f"  {k:28s} {m['steps_per_s']:8.2f} steps/s  MFU {mfu} of the bf16 data-sheet peak")
    return "\n".join(lines)
