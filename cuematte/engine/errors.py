"""Named errors. Every problem a user can cause or fix is a :class:`CuematteError`; the CLI prints its
message and exits 2, the server answers it in a ``state``/``error`` message. Nothing else should escape."""

from __future__ import annotations


class CuematteError(Exception):
    """Base of every user-facing cuematte error."""


class InputError(CuematteError):
    """An input image, video or frame is unusable."""


class ImageReadError(InputError):
    """An image file is missing, empty or not decodable."""


class VideoReadError(InputError):
    """A video file is missing, empty, corrupt or has no decodable frame."""


class OutputWriteError(CuematteError):
    """An output file could not be written (disk full, no permission); nothing half-written is left."""


class FrameFormatError(InputError):
    """A frame is not an (H, W, 3) uint8 RGB array (grayscale, 4-channel, wrong dtype, empty)."""


class SizeMismatchError(InputError):
    """The flash and no-flash frames differ in size."""


class FlashCueError(InputError):
    """The flash frame carries no usable flash cue (no brighter than the no-flash frame)."""


class NoSubjectError(FlashCueError):
    """Neither the flash nor the person segmenter located anyone in the flash frame."""


class ModelError(CuematteError):
    """A model folder is missing, incomplete or incompatible."""


class ModelNotFoundError(ModelError):
    """No model folder was given and none ships with the package."""


class FlashNotSetError(CuematteError):
    """``matte`` was called before ``set_flash``: there are no cached flash features yet."""


class BackendError(CuematteError):
    """A requested execution backend (CUDA, TensorRT) is not available on this machine."""


class InferenceError(BackendError):
    """The backend failed running a graph (out of memory, a device error): this call's result is lost, the
    session and its cached flash are not."""
