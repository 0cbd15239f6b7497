"""Command-line options shared by ``inferd``'s command groups."""

from __future__ import annotations

from pathlib import Path

import click

config_option = click.option("--config", "config", type=click.Path(path_type=Path),
                             default=None, help="YAML config file (also INFERD_CONFIG).")
