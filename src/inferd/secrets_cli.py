"""``inferd secrets ...``: the key that encrypts stored secrets (``INFERD_SECRET_KEY``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from inferd.secretbox import SecretKeyError, new_key
from inferd.settings import load_settings

config_option = click.option("--config", "config", type=click.Path(path_type=Path),
                             default=None, help="YAML config file (also INFERD_CONFIG).")


@click.group()
def secrets() -> None:
    """Encryption of replica credentials and webhook secrets at rest."""


@secrets.command("new-key")
def new_key_command() -> None:
    """Print a new key for INFERD_SECRET_KEY."""
    click.echo(new_key())


@secrets.command()
@config_option
def rotate(config: Path | None) -> None:
    """Re-encrypt every stored secret with the first key of INFERD_SECRET_KEY.

    To change keys: set INFERD_SECRET_KEY="NEW,OLD", run this, then set it to "NEW" (and
    restart). Plaintext secrets (stored while no key was set) are encrypted too.
    """
    from inferd.audit import AuditLog, acting_as, cli_actor
    from inferd.store import secrets as stored
    from inferd.store.audit import AuditStore
    from inferd.store.db import open_database

    try:
        settings = load_settings(config).storage
    except ValueError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc
    if not settings.secret_key:
        raise click.ClickException("INFERD_SECRET_KEY is not set: there is no key to encrypt "
                                   "with (`inferd secrets new-key` makes one).")

    async def main() -> int:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = open_database(settings)
        try:
            await db.migrate()
            count = await stored.rotate(db)
            with acting_as(cli_actor()):  # the count only: never a key or a secret
                written = await AuditLog(AuditStore(db)).record(
                    "secret.rotate", "secret_key", None,
                    after={"re_encrypted": count, "keys_configured":
                           len([k for k in settings.secret_key.split(",") if k.strip()])})
            if not written:
                raise click.ClickException("the secrets were re-encrypted, but the audit log "
                                           "could not record it")
            return count
        finally:
            await db.close()

    try:
        count = asyncio.run(main())
    except SecretKeyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"re-encrypted {count} secrets with the first key of INFERD_SECRET_KEY")
