"""The two graphs' input/output contract, in one place: export writes it into ``model.json``, the engine reads
it back, checks the loaded graphs against it and feeds them by its names.

A dimension is a number or the name of a dynamic one (``height`` / ``width``: the frame's). Inputs marked
``cmn`` are at the CMN grid (h, w), shrunk by the engine antialiased (area averaging, or ``frames.shrink``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape)}


def coef_grid(cmn_size: tuple[int, int], decoder: str | None) -> tuple[int, int]:
    """(h, w) of a guided model's coefficients: the CMN grid, or half of it for decoders that stop there."""
    h, w = cmn_size
    return (h // 2, w // 2) if decoder == "half" else (h, w)


@dataclass(frozen=True)
class GraphSpec:
    """flash: (flash, flash_trimap) -> (flash_features[, flash_prior]); frame: ([frame,] frame_cmn, flash_features
    [, person_mask][, flash_prior][, guidance]) -> (alpha, foreground) at the frame's size, or for guided models
    (coef_a, coef_b) at the CMN grid (or half of it, :func:`coef_grid`)."""

    flash_inputs: tuple[TensorSpec, ...]
    flash_outputs: tuple[TensorSpec, ...]
    frame_inputs: tuple[TensorSpec, ...]
    frame_outputs: tuple[TensorSpec, ...]

    @classmethod
    def for_config(cls, config: dict[str, Any], tokens: tuple[int, int]) -> GraphSpec:
        """The contract of a model with this config (FNFConfig.to_dict()) and flash tokens (N, C')."""
        h, w = (int(v) for v in config["cmn_size"])
        prior = TensorSpec("flash_prior", (1, 6, h, w))
        cached = (TensorSpec("flash_features", (1, *tokens)),) + ((prior,) if config.get("flash_prior") else ())
        # Guided-refinement models end at the guided filter's coefficients, applied by the engine at the frame's
        # size (cuematte.engine.refine): their frame graph needs no full-resolution frame and is all static.
        guided = config.get("refine") == "guided"
        ch, cw = coef_grid((h, w), config.get("decoder"))
        frame_inputs = ([] if guided else [TensorSpec("frame", (1, 3, "height", "width"))]) + [
            TensorSpec("frame_cmn", (1, 3, h, w)), cached[0]]
        if config.get("person_mask"):
            frame_inputs.append(TensorSpec("person_mask", (1, 1, h, w)))
        if config.get("flash_prior"):
            frame_inputs.append(prior)
        if config.get("guidance"):
            frame_inputs.append(TensorSpec("guidance", (1, 3, h, w)))
        return cls(
            flash_inputs=(TensorSpec("flash", (1, 3, h, w)), TensorSpec("flash_trimap", (1, 3, h, w))),
            flash_outputs=cached,
            frame_inputs=tuple(frame_inputs),
            frame_outputs=((TensorSpec("coef_a", (1, 4, ch, cw)), TensorSpec("coef_b", (1, 4, ch, cw))) if guided else
                           (TensorSpec("alpha", (1, 1, "height", "width")),
                            TensorSpec("foreground", (1, 3, "height", "width")))),
        )

    @property
    def cached(self) -> tuple[str, ...]:
        """What the session caches from the flash graph and feeds to the frame graph by name."""
        return tuple(t.name for t in self.flash_outputs)

    def frame_input(self, name: str) -> bool:
        return any(t.name == name for t in self.frame_inputs)

    def to_dict(self) -> dict[str, Any]:
        return {k: [t.to_dict() for t in getattr(self, k)]
                for k in ("flash_inputs", "flash_outputs", "frame_inputs", "frame_outputs")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphSpec:
        def tensors(key: str) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(str(t["name"]), tuple(t["shape"])) for t in d[key])

        return cls(tensors("flash_inputs"), tensors("flash_outputs"), tensors("frame_inputs"),
                   tensors("frame_outputs"))

    @staticmethod
    def mismatch(role: str, want: tuple[TensorSpec, ...], names: list[str],
                 shapes: list[tuple[Dim | None, ...]]) -> str | None:
        """Why a loaded graph's tensors (names in order, shapes with None or a name for dynamic dims) differ
        from ``want`` (None: they match)."""
        if [t.name for t in want] != names:
            return f"{role} graph has {names}, the contract says {[t.name for t in want]}"
        for t, shape in zip(want, shapes, strict=True):
            fixed = [d if isinstance(d, int) else None for d in t.shape]
            got = [d if isinstance(d, int) else None for d in shape]
            if fixed != got:
                return f"{role} graph's {t.name} is {list(shape)}, the contract says {list(t.shape)}"
        return None
