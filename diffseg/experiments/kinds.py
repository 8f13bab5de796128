"""The four experiment kinds of the paper, one ``Experiment`` record each: the one owner of what an experiment is
(torch-free). Modes, config validation, selection, export, the report's labels and the findings derive from it;
``tests/test_contracts.py`` holds every training mode (``experiments.modes.MODES``) to its record.

- E1 feed-forward segmentation (Dice + BCE), E2 diffusion segmentation conditioned on the image, E3 mask
  prediction from the noisy mask alone (the dataset fingerprint), E4 unconditional image generation.
- ``probability``: how an ensemble of the kind's members makes p(foreground): ``VOTE`` (the vote fraction of
  sampled masks, mean [x0 > 0]) or ``SOFT`` (the mean of member probabilities; E1's sigmoid outputs).
- ``selection``: the validation metric a trial is selected on and its mode; ``curve``: the error curve over t
  the trial exports (None: no diffusion).
"""

from __future__ import annotations

from dataclasses import dataclass

from .result import IMAGE_ERROR, MASK_ERROR

VOTE, SOFT = "vote", "soft"  # ensemble probability rules (applied in ``diffseg.masks``)


@dataclass(frozen=True)
class Selection:
    """The validation metric a trial is selected on, and whether larger is better."""

    metric: str
    mode: str  # "max" | "min"

    def better(self, value: float, best: float | None) -> bool:
        return best is None or (value > best if self.mode == "max" else value < best)

    @property
    def ascending(self) -> bool:
        """Sort order that puts the best first."""
        return self.mode == "min"

    def best_index(self, values):
        """The index label of the best value of a pandas Series."""
        return values.idxmin() if self.mode == "min" else values.idxmax()


@dataclass(frozen=True)
class Experiment:
    name: str  # as study files spell it
    label: str  # as tables print it
    task: str
    description: str
    predicts: str  # "mask" | "image"
    segments: bool  # samples an ensemble of masks of an image (test IoU/ECE, a logged model)
    conditioned: bool  # the image conditions the model
    diffusion: bool  # trained as a denoiser over t
    needs_images: bool  # a masks-only dataset cannot train it
    selection: Selection
    curve: str | None  # the error curve over t it exports
    probability: str  # VOTE | SOFT

    def title(self) -> str:
        return f"{self.task} ({self.label})"


_IOU, _X0 = Selection("val_iou", "max"), Selection("val_x0_error", "min")
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("e1", "E1", "feed-forward segmentation",
               "feed-forward training (Dice + BCE), noisy-mask input replaced by fresh noise", "mask",
               segments=True, conditioned=True, diffusion=False, needs_images=True, selection=_IOU, curve=None,
               probability=SOFT),
    Experiment("e2", "E2", "segmentation", "diffusion segmentation conditioned on the image", "mask",
               segments=True, conditioned=True, diffusion=True, needs_images=True, selection=_IOU,
               curve=MASK_ERROR, probability=VOTE),
    Experiment("e3", "E3", "mask only",
               "mask prediction from the noisy mask alone (image nulled): the dataset fingerprint", "mask",
               segments=False, conditioned=False, diffusion=True, needs_images=False, selection=_X0,
               curve=MASK_ERROR, probability=VOTE),
    Experiment("e4", "E4", "image generation", "unconditional image generation (eps prediction on the images)",
               "image", segments=False, conditioned=False, diffusion=True, needs_images=True, selection=_X0,
               curve=IMAGE_ERROR, probability=VOTE),
)}
FEED_FORWARD, SEGMENTATION, MASK_ONLY, GENERATION = "e1", "e2", "e3", "e4"  # the names the code refers to
SELECTION = {k: e.selection for k, e in EXPERIMENTS.items()}
BY_METRIC = {s.metric: s for s in SELECTION.values()}  # selection metric -> its Selection
SEGMENTING = tuple(k for k, e in EXPERIMENTS.items() if e.segments)



def title(name: str) -> str:
    """'segmentation (E2)' for a known kind, else the name itself."""
    return EXPERIMENTS[name].title() if name in EXPERIMENTS else str(name)
