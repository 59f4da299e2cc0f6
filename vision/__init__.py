"""ssmkit.vision: see DESIGN.md. Needs the `vision` extra."""
from ssmkit.extras import require_extra

require_extra("vision", ["timm","torchvision"])
