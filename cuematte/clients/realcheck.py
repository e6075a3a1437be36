"""The real-footage check: does the matte keep the real person that MediaPipe is sure of, and drop the
background it is sure of? No ground truth needed, so it runs on any folder of photos or videos of people.

Per item (a photo, or every frame of a video up to a limit):

* **person dropped %**: the share of MediaPipe's confident person (probability >= 0.9, eroded) that the matte
  drops (alpha < 0.5);
* **background kept %**: the share of MediaPipe's confident background (<= 0.1, eroded) that it keeps (> 0.5);
* **enclosed holes %** (no target): what the matte drops inside its own silhouette wherever MediaPipe is not sure
  of background (> 0.1), as a share of that silhouette: holes where MediaPipe itself is unsure, which the first
  two miss;
* a contact sheet: frame, guidance, alpha, composite on green (a video shows its worst frame).

A photo ``NAME.jpg`` with ``NAME_flash.jpg`` beside it is a flash / no-flash pair. Anything else is mattered
after a *uniform* flash: the frame brightened evenly, as a screen flash too weak to single anyone out would
(the flash cue then mostly locates nobody and the guidance rests on the segmenter alone), or, with
``rendered_flash``, after a near flash rendered onto its first frame (``engine.cues.simulated_flash``): the flash
locates the person, and on a video the session then follows them with the cached flash, whose votes in the
guidance are only as good as that tracking (where a clip with a real talking head once lost hair).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from cuematte.engine.compositing import Background, composite
from cuematte.engine.cues.guidance import enclosed
from cuematte.engine.cues.simulated_flash import render_flash
from cuematte.engine.cues.trimap import PersonSegmenter
from cuematte.engine.errors import InputError
from cuematte.engine.frames import resize
from cuematte.engine.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoReader, read_image, write_image
from cuematte.engine.pipelined import PipelinedSession
from cuematte.engine.session import MattingSession

FLASH_SUFFIX = "_flash"
GREEN = Background(mode="green")


@dataclass(frozen=True)
class CheckParams:
    sure: float = 0.9  # MediaPipe probability of the confident person ...
    unsure: float = 0.1  # ... and of the confident background
    erode: float = 0.02  # both eroded by this fraction of the short side (edges are the matte's to decide)
    keep: float = 0.5  # alpha above this keeps a pixel
    max_dropped: float = 1.0  # targets, in percent
    max_kept: float = 2.0


@dataclass
class FrameCounts:
    """Pixel counts of one frame (or summed over frames)."""

    person: int = 0
    dropped: int = 0
    background: int = 0
    kept: int = 0
    # Sum of (1 - alpha) over the confident person: a half-transparent cheek (alpha 0.6, not "dropped") counts.
    see_through: float = 0.0
    # Dropped pixels enclosed by the kept matte, where the segmenter is not sure of background: a hole through
    # hair over a forehead where the segmenter itself is unsure, which the confident regions above cannot see.
    holes: int = 0
    silhouette: int = 0  # kept pixels plus those holes

    def __iadd__(self, other: FrameCounts) -> FrameCounts:
        self.person += other.person
        self.dropped += other.dropped
        self.see_through += other.see_through
        self.background += other.background
        self.kept += other.kept
        self.holes += other.holes
        self.silhouette += other.silhouette
        return self

    @property
    def dropped_pct(self) -> float:
        return 100.0 * self.dropped / max(1, self.person)

    @property
    def see_through_pct(self) -> float:
        return 100.0 * self.see_through / max(1, self.person)

    @property
    def holes_pct(self) -> float:
        return 100.0 * self.holes / max(1, self.silhouette)

    @property
    def kept_pct(self) -> float:
        return 100.0 * self.kept / max(1, self.background)


def confident_regions(person: np.ndarray, params: CheckParams = CheckParams()) -> tuple[np.ndarray, np.ndarray]:
    """Segmenter probability (H, W) -> (confident person, confident background) (H, W) bool, each eroded."""
    r = max(1, round(min(person.shape) * params.erode))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))

    def erode(m: np.ndarray) -> np.ndarray:
        return cv2.erode(m.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE) > 0

    return erode(person >= params.sure), erode(person <= params.unsure)


def frame_counts(alpha: np.ndarray, person: np.ndarray, params: CheckParams = CheckParams()) -> FrameCounts:
    """Matte alpha (H, W) in [0, 1] against the segmenter's probability (H, W) of the same frame."""
    fg, bg = confident_regions(person, params)
    keep = alpha > params.keep
    holes = int((enclosed(~keep) & (person > params.unsure)).sum())  # not eroded: a gap it is sure of is no hole
    return FrameCounts(person=int(fg.sum()), dropped=int((fg & ~keep).sum()),
                       background=int(bg.sum()), kept=int((bg & keep).sum()),
                       see_through=float((1.0 - alpha[fg]).sum()), holes=holes, silhouette=int(keep.sum()) + holes)


@dataclass
class ItemResult:
    name: str
    kind: str  # "photo", "flash pair" or "video"
    frames: int
    person_dropped_pct: float
    background_kept_pct: float
    person_see_through_pct: float  # mean transparency of the confident person, in percent (no target)
    person_holes_pct: float  # enclosed holes where MediaPipe is not sure of background, % of the silhouette
    worst_frame: int  # the frame with the most person dropped (videos)
    worst_dropped_pct: float
    flash_method: str  # how the flash trimap was found (FlashCue.method)
    sheet: str

    def passes(self, params: CheckParams) -> bool:
        return self.person_dropped_pct <= params.max_dropped and self.background_kept_pct <= params.max_kept


def uniform_flash(frame: np.ndarray, gain: float = 1.3) -> np.ndarray:
    """A flash that lit everything alike: (H, W, 3) uint8 brightened evenly (it locates nobody)."""
    return np.clip(frame.astype(np.float32) * gain + 8.0, 0, 255).astype(np.uint8)


def contact_row(frame: np.ndarray, guidance: np.ndarray | None, alpha: np.ndarray, foreground: np.ndarray,
                label: str, height: int = 240) -> np.ndarray:
    """One row: frame, guidance (grey 0/128/255), alpha, composite on green, each ``height`` px high."""
    h, w = frame.shape[:2]
    size = (height, max(1, round(w * height / h)))
    guide = (resize(guidance, (h, w), nearest=True) if guidance is not None
             else np.full((h, w), 128, np.uint8))
    a8 = (np.clip(alpha, 0, 1) * 255 + 0.5).astype(np.uint8)
    tiles = [frame, np.repeat(guide[..., None], 3, 2), np.repeat(a8[..., None], 3, 2),
             composite(frame, alpha, foreground, GREEN)]
    row = np.concatenate([resize(t, size) for t in tiles], axis=1)
    cv2.putText(row, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return row


def find_items(path: Path) -> list[tuple[Path, Path | None]]:
    """(input, its flash photo or None) for a file or every photo and video of a folder; flash photos
    (``NAME_flash.EXT``) are paired with ``NAME.EXT``, not checked on their own."""
    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
    if not path.exists():
        raise InputError(f"check-real input not found: {path}")
    media = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    flashes = {f.stem[: -len(FLASH_SUFFIX)]: f for f in media if f.stem.endswith(FLASH_SUFFIX)}
    items = [(f, flashes.get(f.stem) if f.suffix.lower() in IMAGE_SUFFIXES else None)
             for f in media if not f.stem.endswith(FLASH_SUFFIX)]
    if not items:
        raise InputError(f"{path} holds no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) or videos "
                         f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    return items


def _frames(path: Path, max_frames: int) -> Iterator[np.ndarray]:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        yield read_image(path)
        return
    with VideoReader(path) as reader:
        for i, frame in enumerate(reader):
            if i >= max_frames:
                break
            yield frame


def check_item(session: MattingSession | PipelinedSession, segmenter: PersonSegmenter, path: Path,
               flash: Path | None, out: Path, params: CheckParams = CheckParams(),
               max_frames: int = 150, rendered_flash: bool = False) -> ItemResult:
    """Matte one item through ``session`` (flash once, then every frame) and measure it; writes its sheet.
    Without a flash photo the flash is uniform, or rendered onto the first frame (``rendered_flash``)."""
    frames = _frames(path, max_frames)
    first = next(frames)
    if flash is not None:
        flash_frame = read_image(flash, "flash photo")
    else:
        flash_frame = render_flash(first, segmenter.segment(first)) if rendered_flash else uniform_flash(first)
    cue = session.set_flash(flash_frame, first)
    total = FrameCounts()
    worst: tuple[float, int, np.ndarray] | None = None
    rows: list[np.ndarray] = []
    n = 0
    for i, frame in enumerate([first, *frames]):
        matte = session.matte(frame)
        counts = frame_counts(matte.alpha, segmenter.segment(frame), params)
        total += counts
        n += 1
        if i == 0:
            rows.append(contact_row(frame, matte.guidance, matte.alpha, matte.foreground,
                                    f"{path.name} frame 0: dropped {counts.dropped_pct:.2f}% kept "
                                    f"{counts.kept_pct:.2f}%"))
        if worst is None or counts.dropped_pct > worst[0]:
            worst = (counts.dropped_pct, i, contact_row(frame, matte.guidance, matte.alpha, matte.foreground,
                                                        f"{path.name} worst frame {i}: dropped "
                                                        f"{counts.dropped_pct:.2f}% kept {counts.kept_pct:.2f}%"))
    assert worst is not None
    if n > 1:
        rows.append(worst[2])
    sheet = out / f"{path.stem}.png"
    write_image(sheet, np.concatenate(rows, axis=0))
    kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else ("flash pair" if flash is not None else "photo")
    if flash is None and rendered_flash:
        kind += ", rendered flash"
    return ItemResult(name=path.name, kind=kind, frames=n, person_dropped_pct=total.dropped_pct,
                      background_kept_pct=total.kept_pct, person_see_through_pct=total.see_through_pct,
                      person_holes_pct=total.holes_pct,
                      worst_frame=worst[1], worst_dropped_pct=worst[0],
                      flash_method=cue.method, sheet=sheet.name)


def write_report(results: list[ItemResult], out: Path, params: CheckParams) -> str:
    """Write ``report.json`` and return the table as text (also written to ``report.md``)."""
    lines = ["| item | kind | frames | flash | person dropped % | background kept % | person see-through % | "
             "enclosed holes % | worst frame (dropped %) | |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        verdict = "ok" if r.passes(params) else "MISS"
        lines.append(f"| {r.name} | {r.kind} | {r.frames} | {r.flash_method} | {r.person_dropped_pct:.2f} | "
                     f"{r.background_kept_pct:.2f} | {r.person_see_through_pct:.2f} | {r.person_holes_pct:.2f} | "
                     f"{r.worst_frame} ({r.worst_dropped_pct:.2f}) | {verdict} |")
    table = "\n".join(lines) + "\n"
    (out / "report.md").write_text(table)
    (out / "report.json").write_text(json.dumps({"params": asdict(params),
                                                 "items": [asdict(r) for r in results]}, indent=2) + "\n")
    return table
