"""ssmkit.audio: SaShiMi on raw waveforms: data and 8-bit quantisation, models, autoregressive training, fast
step-mode generation. Needs the `audio` extra."""
from ssmkit.extras import require_extra

require_extra("audio", ["torchaudio", "soundfile"])

from .data import AudioFileError, AudioFolderDataModule, FSDDDataModule  # noqa: E402
from .generate import generate  # noqa: E402
from .models import SaShiMi, WaveNet  # noqa: E402
from .quantize import mu_law_decode, mu_law_encode  # noqa: E402
from .task import AutoregressiveAudioTask  # noqa: E402

__all__ = ["AudioFileError", "AudioFolderDataModule", "FSDDDataModule", "mu_law_encode", "mu_law_decode", "SaShiMi",
           "WaveNet", "AutoregressiveAudioTask", "generate"]
