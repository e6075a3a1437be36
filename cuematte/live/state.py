"""What a live session is doing; the values are the service's wire names (``{"type": "state", ...}``)."""

from __future__ import annotations

from enum import StrEnum


class LiveState(StrEnum):
    WAITING_FLASH = "waiting-flash"  # no cached flash: frames pass through so the user sees themselves
    CAPTURING = "capturing"  # a flash burst is being measured; output continues as before
    MATTING = "matting"  # flash features cached: every frame is matted and composited
    ERROR = "error"  # sent once with the reason, then the session is back in the state it was in
    # The parallax cue (``set-cue parallax``): no flash; each frame is matted against a kept reference frame.
    PARALLAX_WAITING = "parallax-waiting"  # no reference, no person, or too little parallax: frames pass through
    PARALLAX_MATTING = "parallax-matting"  # enough parallax: frames are matted (or keep the last good matte)
