"""Vision backbones; importing this module registers every preset in timm."""
from . import vim
from .vim import VisionMamba
from . import vssd
from .vssd import VSSD
from . import spatial_mamba
from .spatial_mamba import SpatialMamba
