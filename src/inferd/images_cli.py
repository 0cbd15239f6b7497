"""``inferd images ...``: commands around image generation."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def images() -> None:
    """Image generation helpers."""


@images.command("tiny-pipeline")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, help="Seed of the random weights.")
def tiny_pipeline(path: Path, seed: int) -> None:
    """Write a tiny random-weight Stable Diffusion pipeline to PATH (pictures are noise).

    Serve it with ``inferd serve --model tiny-sd=PATH,kind=diffusers`` to try the image API
    without downloading weights.
    """
    from inferd.engines import missing_kind

    missing = missing_kind("diffusers", "tiny-sd")
    if missing is not None:
        raise click.ClickException(missing.message)
    from inferd.engines.diffusion_tiny import build_tiny_pipeline

    click.echo(str(build_tiny_pipeline(path, seed=seed)))
