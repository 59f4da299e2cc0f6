"""ssmkit.timeseries: see DESIGN.md. Needs the `timeseries` extra."""
from ssmkit.extras import require_extra

require_extra("timeseries", ["sklearn","pandas","matplotlib"])
