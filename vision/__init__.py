"""ssmkit.vision: see docs/DESIGN.md. Needs the `vision` extra. Importing it registers the models in timm."""
from ssmkit.extras import require_extra

require_extra("vision", ["timm","torchvision"])

from . import models  # noqa: E402  (registers the timm entrypoints)
from .data import DigitsDataModule, ImageFolderDataModule, MNISTDataModule, read_idx  # noqa: E402
from .task import ImageClassificationTask  # noqa: E402
