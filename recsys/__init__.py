"""ssmkit.recsys: see DESIGN.md. Needs the `recsys` extra."""
from ssmkit.extras import require_extra

require_extra("recsys", ["pandas"])
