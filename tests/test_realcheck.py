"""`cuematte check-real`: its metrics on hand-made masks, how it finds items, and the shipped model on a real
photo (scikit-image's astronaut, with hand-marked regions of her face, hair, turtleneck, suit and the wall)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from cuematte.clients.realcheck import CheckParams, confident_regions, find_items, frame_counts, uniform_flash
from cuematte.engine.errors import InputError
from cuematte.engine.io import write_image

# (x0, y0, x1, y1) in the 512x512 astronaut: certainly her, certainly not her.
PERSON = {"face": (190, 75, 250, 145), "hair": (195, 32, 255, 55), "turtleneck": (190, 185, 240, 220),
          "suit": (60, 300, 130, 380), "suit_low": (150, 420, 220, 480)}
BACKGROUND = {"wall": (300, 20, 360, 110), "flag": (5, 60, 45, 200), "shuttle": (395, 110, 430, 190)}


def _disc(h: int, w: int, r: int) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    cv2.circle(m, (w // 2, h // 2), r, 1.0, -1)
    return m


def test_counts_on_hand_made_masks() -> None:
    person = _disc(200, 200, 60)
    params = CheckParams(erode=0.02)
    fg, bg = confident_regions(person, params)
    assert fg[100, 100] and not fg[100, 100 + 59] and bg[5, 5] and not bg[100, 100 + 61]
    assert frame_counts(person, person, params).dropped == 0
    assert frame_counts(person, person, params).kept == 0
    # A hole through the face: exactly the hole's share of the confident person is dropped.
    holed = person.copy()
    holed[90:110, 90:110] = 0.2
    c = frame_counts(holed, person, params)
    assert c.dropped == 400 and c.dropped_pct == pytest.approx(100 * 400 / fg.sum())
    assert c.see_through_pct == pytest.approx(100 * 400 * 0.8 / fg.sum(), rel=1e-5)
    # A half-transparent cheek drops nothing (alpha 0.6 keeps it) but shows as see-through.
    cheek = person.copy()
    cheek[90:110, 90:110] = 0.6
    c = frame_counts(cheek, person, params)
    assert c.dropped == 0 and c.see_through == pytest.approx(400 * 0.4, rel=1e-5)
    # A background blob kept, and the whole frame kept.
    blob = person.copy()
    blob[0:10, 0:10] = 0.9
    assert frame_counts(blob, person, params).kept == int(bg[0:10, 0:10].sum()) > 0
    everything = frame_counts(np.ones_like(person), person, params)
    assert everything.kept_pct == 100.0 and everything.dropped_pct == 0.0
    # The face hole is enclosed by the kept matte: it also counts as a hole, as a share of the silhouette.
    assert frame_counts(holed, person, params).holes == 400
    # A hole where the segmenter is unsure (hair over a forehead) is invisible to "dropped" but not to "holes";
    # a gap the segmenter is sure is background (between an arm and the body) and a cut reaching the frame's edge
    # are not holes.
    unsure_person = person.copy()
    unsure_person[90:110, 90:110] = 0.5
    c = frame_counts(holed, unsure_person, params)
    assert c.dropped < 400 and c.holes == 400
    assert c.holes_pct == pytest.approx(100 * 400 / int((person > 0.5).sum()))
    gap = person.copy()
    gap[90:110, 90:110] = 0.0
    assert frame_counts(gap, gap, params).holes == 0
    assert frame_counts(np.pad(person[:, :150], ((0, 0), (0, 50))), person, params).holes == 0
    # An unsure segmenter gives no confident region, and a share of nothing is 0, not a division error.
    unsure = frame_counts(person, np.full_like(person, 0.5), params)
    assert unsure.person == unsure.background == 0 and unsure.dropped_pct == 0.0


def test_items_pair_flash_photos_and_skip_other_files(tmp_path: Path) -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    for name in ("a.png", "a_flash.png", "b.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x") if name.endswith(".txt") else write_image(tmp_path / name, img)
    items = find_items(tmp_path)
    assert [(p.name, f.name if f else None) for p, f in items] == [("a.png", "a_flash.png"), ("b.jpg", None)]
    with pytest.raises(InputError, match="no photos"):
        find_items(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="not found"):
        find_items(tmp_path / "missing")


def test_uniform_flash_is_brighter_everywhere() -> None:
    frame = np.random.default_rng(0).integers(0, 200, (16, 16, 3), dtype=np.uint8)
    assert (uniform_flash(frame) > frame).all()


def test_shipped_model_keeps_the_astronaut_and_drops_the_wall(tmp_path: Path) -> None:
    """The whole check from the command line on a real person: exit 0, both figures within the targets, a
    contact sheet, and the hand-marked regions on the right side of 0.5."""
    from skimage.data import astronaut

    from cuematte.clients.cli import main
    from cuematte.clients.realcheck import check_item
    from cuematte.engine.cues.segmenter import MediaPipeSegmenter
    from cuematte.engine.session import MattingSession

    photo = astronaut()
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "astronaut.png", photo)
    assert main(["check-real", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (item,) = report["items"]
    assert item["person_dropped_pct"] <= 1.0 and item["background_kept_pct"] <= 2.0
    sheet = cv2.imread(str(tmp_path / "out" / item["sheet"]))
    assert sheet is not None and sheet.shape[1] == 4 * sheet.shape[0]  # frame, guidance, alpha, composite
    assert "astronaut.png" in (tmp_path / "out" / "report.md").read_text()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segmenter = MediaPipeSegmenter()
        session = MattingSession(segmenter=segmenter)
    session.set_flash(uniform_flash(photo), photo)
    alpha = session.matte(photo).alpha
    for name, (x0, y0, x1, y1) in PERSON.items():
        assert (alpha[y0:y1, x0:x1] > 0.5).mean() > 0.99, name
    for name, (x0, y0, x1, y1) in BACKGROUND.items():
        assert (alpha[y0:y1, x0:x1] < 0.5).mean() > 0.99, name
    result = check_item(MattingSession(segmenter=segmenter), segmenter, tmp_path / "in" / "astronaut.png", None,
                        tmp_path / "out")
    assert result.person_dropped_pct == pytest.approx(item["person_dropped_pct"])


def test_rendered_flash_locates_the_astronaut_and_tracks_her_through_a_clip(tmp_path: Path) -> None:
    """``--rendered-flash``: a near flash rendered onto the first frame locates the person (the uniform one does
    not), and a clip of her moving is checked through the tracking that carries the cached flash along."""
    from skimage.data import astronaut

    from cuematte.clients.cli import main
    from cuematte.engine.io import VideoWriter

    photo = cv2.resize(astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "astronaut.png", photo)
    with VideoWriter(tmp_path / "in" / "moving.mp4", (320, 320), 15) as w:
        for i in range(10):  # she steps 2 px right a frame, the room with her (a pan)
            w.write(np.roll(photo, 2 * i, axis=1))
    for flag, located in (([], False), (["--rendered-flash"], True)):
        out = tmp_path / ("rendered" if flag else "uniform")
        assert main(["check-real", str(tmp_path / "in"), "--out", str(out), *flag]) == 0
        items = {i["name"]: i for i in json.loads((out / "report.json").read_text())["items"]}
        assert (items["astronaut.png"]["flash_method"] == "segmenter") is located
        assert items["moving.mp4"]["frames"] == 10
        for item in items.values():
            assert ("rendered flash" in item["kind"]) is located
            assert item["person_dropped_pct"] <= 1.0 and item["background_kept_pct"] <= 2.0, item
