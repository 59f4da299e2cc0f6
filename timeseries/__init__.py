"""ssmkit.timeseries: see docs/DESIGN.md. Needs the `timeseries` extra."""
from ssmkit.extras import require_extra

require_extra("timeseries", ["sklearn","pandas","matplotlib"])

from .data import CSVDataModule, ETTDataModule  # noqa: E402
from .models import Chimera, DLinear, NLinear, SMamba, SpaceTime  # noqa: E402
from .task import ForecastTask  # noqa: E402
