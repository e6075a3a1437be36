"""Shared fixtures: random-init models exported once per test run (real ONNX graphs, real sessions)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cuematte.clients.scenes import make_pair


def _export(tmp: Path, config: str, person_mask: bool = False, flash_prior: bool = False,
            align_flash: bool = False, guidance: bool = False) -> Path:
    torch = pytest.importorskip("torch")
    from cuematte.export.onnx_export import export_onnx
    from cuematte.training.models.config import get_config
    from cuematte.training.models.fnfnet import build_model

    torch.manual_seed(0)
    net = build_model(get_config(config, person_mask=person_mask, flash_prior=flash_prior,
                                 align_flash=align_flash, guidance=guidance))
    export_onnx(net, tmp, trained=False, source="random-init seed 0 (tests)")
    return tmp


@pytest.fixture(scope="session")
def lite_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ``lite`` model folder (flash.onnx, frame.onnx, model.json)."""
    return _export(tmp_path_factory.mktemp("lite"), "lite")


@pytest.fixture(scope="session")
def lite_mask_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ``lite`` model with the per-frame person-mask input."""
    return _export(tmp_path_factory.mktemp("lite_mask"), "lite", person_mask=True)


@pytest.fixture(scope="session")
def lite_prior_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ``lite`` model in the shipped configuration: person mask and the cached flash prior."""
    return _export(tmp_path_factory.mktemp("lite_prior"), "lite", person_mask=True, flash_prior=True)


@pytest.fixture(scope="session")
def lite_align_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped configuration, taking its flash aligned on the subject (``align_flash``)."""
    return _export(tmp_path_factory.mktemp("lite_align"), "lite", person_mask=True, flash_prior=True,
                   align_flash=True)


@pytest.fixture(scope="session")
def lite_guided_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped configuration: aligned flash, and alpha refining the guidance trimap (``guidance``)."""
    return _export(tmp_path_factory.mktemp("lite_guided"), "lite", person_mask=True, flash_prior=True,
                   align_flash=True, guidance=True)


@pytest.fixture(scope="session")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flash, noflash, alpha) at 360x640, the subject moved 4 px and the flash frame re-exposed."""
    return make_pair(360, 640, seed=3, shift=4, exposure=0.9)


@pytest.fixture
def quiet_untrained() -> None:
    from cuematte.engine.model import UntrainedModelWarning

    warnings.simplefilter("ignore", UntrainedModelWarning)
