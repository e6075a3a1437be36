"""The preview window (Tk, from the standard library: the serving install has headless OpenCV, no GUI).

Shows what the virtual camera sends, with the status line under it. Keys: ``f``/space takes the flash (a
full-screen white window lights the face for the burst), ``b`` cycles the background, ``r`` forgets the
flash, ``q``/Escape quits. The live loop runs on a worker thread; Tk stays on the main thread.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence

import numpy as np

from cuematte.clients.virtualcam.pipeline import LiveLoop, status_text
from cuematte.engine.compositing import Background
from cuematte.engine.errors import CuematteError
from cuematte.engine.frames import resize

PREVIEW_WIDTH = 640


def check_display() -> None:
    """A named error instead of a Tk traceback when there is no screen to show the preview on."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise CuematteError("--preview needs a display (DISPLAY is not set); for a headless run give the flash "
                            "photo with --flash FILE and leave out --preview")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        raise CuematteError("--preview needs Tk (Debian/Ubuntu: `sudo apt install python3-tk`); "
                            "or give the flash photo with --flash FILE") from None


def to_ppm(frame: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> binary PPM, which Tk's PhotoImage reads without Pillow."""
    h, w = frame.shape[:2]
    return f"P6 {w} {h} 255\n".encode() + np.ascontiguousarray(frame).tobytes()


def run_preview(loop: LiveLoop, backgrounds: Sequence[Background]) -> None:
    import tkinter as tk

    check_display()
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        raise CuematteError(f"cannot open the preview window: {exc}") from None
    root.title("cuematte virtualcam  —  f: flash   b: background   r: reset   q: quit")
    root.configure(bg="black")
    picture = tk.Label(root, bg="black")
    picture.pack()
    status = tk.Label(root, anchor="w", font=("TkFixedFont", 10), fg="white", bg="black")
    status.pack(fill="x")
    white: list[tk.Toplevel] = []
    bg_index = [0]

    def on_key(event: tk.Event) -> None:
        key = (event.keysym or "").lower()
        if key in ("f", "space"):
            loop.request_flash()
        elif key == "b" and backgrounds:
            bg_index[0] = (bg_index[0] + 1) % len(backgrounds)
            loop.processor.background = backgrounds[bg_index[0]]
        elif key == "r":
            loop.reset()
        elif key in ("q", "escape"):
            root.quit()

    def tick() -> None:
        if loop.flashing and not white:
            w = tk.Toplevel(root, bg="white", cursor="none")
            w.attributes("-fullscreen", True)
            w.attributes("-topmost", True)
            w.bind("<Key>", on_key)
            white.append(w)
        elif not loop.flashing and white:
            white.pop().destroy()
        frame = loop.latest_output
        if frame is not None:
            h, w_ = frame.shape[:2]
            small = resize(frame, (round(h * PREVIEW_WIDTH / w_), PREVIEW_WIDTH)) if w_ > PREVIEW_WIDTH else frame
            photo = tk.PhotoImage(data=to_ppm(small), format="PPM")
            picture.configure(image=photo)
            picture.image = photo  # type: ignore[attr-defined]  # Tk drops images nobody references
        status.configure(text=status_text(loop.meter, loop.processor.session, loop.slot.dropped, loop.state)
                         + f" | {loop.sink.name}")
        if loop.finished.is_set():
            root.quit()
            return
        root.after(33, tick)

    root.bind("<Key>", on_key)
    worker = threading.Thread(target=loop.run, name="virtualcam-loop", daemon=True)
    worker.start()
    root.after(33, tick)
    try:
        root.mainloop()
    finally:
        loop.stop()
        worker.join(timeout=3.0)
        root.destroy()
