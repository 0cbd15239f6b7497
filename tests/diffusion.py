"""The tiny random-weight Stable Diffusion pipeline the image tests serve (a pytest plugin).

Built once per test session with diffusers' own classes (``inferd.engines.diffusion_tiny``,
shared with ``bench/images.py``) and saved with ``save_pretrained``; the tests then load that
folder through inferd's real loading code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inferd.engines.diffusion_tiny import build_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved pipeline folder: ``--model NAME=<this>,kind=diffusers`` serves it."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipeline")
