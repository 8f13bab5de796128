"""diffseg: a study platform for diffusion-based medical image segmentation."""

__version__ = "0.1.0"
