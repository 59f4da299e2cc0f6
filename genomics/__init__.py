"""ssmkit.genomics: see DESIGN.md. Needs the `genomics` extra."""
from ssmkit.extras import require_extra

require_extra("genomics", ["Bio","zarr"])
