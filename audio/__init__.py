"""ssmkit.audio: see DESIGN.md. Needs the `audio` extra."""
from ssmkit.extras import require_extra

require_extra("audio", ["torchaudio","soundfile"])
