"""One settings object for every command.

Precedence, highest first: command-line flags (passed to :func:`load_settings` as
overrides), ``COWRIEPROC_<NAME>`` environment variables, the TOML config file, defaults.
The config file is ``--config PATH``, else ``COWRIEPROC_CONFIG``, else ``./sensors.toml``
when it exists, else ``sensors.toml`` in the user config directory when it exists.
Top-level keys of the file are the setting names in lower case (``db_url = "..."``).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir, user_config_dir, user_data_dir
from pydantic import AliasChoices, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cowrieprocessor.enrichment.settings import EnrichmentSettings

APP_NAME = "cowrieprocessor"


def default_db_url() -> str:
    """SQLite file in the user's data directory (created on first use)."""
    return f"sqlite:///{Path(user_data_dir(APP_NAME)) / 'cowrieprocessor.sqlite'}"


def default_cache_dir() -> Path:
    return Path(user_cache_dir(APP_NAME)) / "enrichment"


def default_status_dir() -> Path:
    return Path.home() / ".cache" / APP_NAME / "status"


def find_config_file(explicit: Path | None = None) -> Path | None:
    """The config file to read, or None when there is none."""
    if explicit is not None:
        if not explicit.is_file():
            raise FileNotFoundError(f"config file {explicit} does not exist")
        return explicit
    from_env = os.environ.get("COWRIEPROC_CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise FileNotFoundError(f"COWRIEPROC_CONFIG names {path}, which does not exist")
        return path
    for candidate in (Path("sensors.toml"), Path(user_config_dir(APP_NAME)) / "sensors.toml"):
        if candidate.is_file():
            return candidate
    return None


def read_config_file(explicit: Path | None = None) -> tuple[Path | None, dict[str, Any]]:
    """The config file :func:`load_settings` reads and its keys, or ``(None, {})``.

    For settings kept outside :class:`Settings` (the ``diag_*`` thresholds of
    ``cowrie-enrich diagnose``), which the settings model ignores.

    Raises:
        FileNotFoundError: as :func:`find_config_file`.
        ValueError: the file is not valid TOML.
    """
    path = find_config_file(explicit)
    if path is None:
        return None, {}
    try:
        with path.open("rb") as handle:
            return path, tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {path} is not valid TOML: {error}") from None


def unknown_config_keys(table: dict[str, Any]) -> list[str]:
    """Top-level keys of a config file that name no setting, each with the closest
    setting name when there is one (``"vt_apikey (did you mean vt_api_key?)"``).

    ``diag_*`` keys belong to ``cowrie-enrich diagnose``, which checks them itself.
    """
    known: set[str] = set()
    for name, field in Settings.model_fields.items():
        known.add(name)
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            known.update(str(choice).lower() for choice in alias.choices)
        elif isinstance(alias, str):
            known.add(alias.lower())
    unknown: list[str] = []
    for key in table:
        if key.lower() in known or key.lower().startswith("diag_"):
            continue
        close = difflib.get_close_matches(key.lower(), sorted(known), n=1)
        unknown.append(f"{key!r} (did you mean {close[0]}?)" if close else repr(key))
    return unknown


class Settings(EnrichmentSettings, BaseSettings):
    """Every setting, with its default. The README lists them all."""

    model_config = SettingsConfigDict(
        env_prefix="COWRIEPROC_", extra="ignore", case_sensitive=False
    )

    db_url: str = Field(default_factory=default_db_url)
    db_pool_size: int = 5
    db_max_overflow: int = 5

    # Ingest
    sensor: str = "unknown"
    batch_size: int = 5000

    # Where refresh and migration keep their files.
    cache_dir: Path = Field(default_factory=default_cache_dir)
    status_dir: Path = Field(default_factory=default_status_dir)

    # Cache tiers (the three-phase rollout; see docs/runbook-cache-migration.md).
    use_database_cache: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "use_database_cache", "COWRIEPROC_USE_DATABASE_CACHE", "USE_DATABASE_CACHE"
        ),
    )
    disable_disk_cache: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "disable_disk_cache", "COWRIEPROC_DISABLE_DISK_CACHE", "DISABLE_DISK_CACHE"
        ),
    )
    memory_cache_size: int = Field(
        default=0,
        ge=0,
        validation_alias=AliasChoices("memory_cache_size", "COWRIEPROC_MEMORY_CACHE_SIZE"),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _ACTIVE_CONFIG_FILE.get("path")
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# pydantic-settings builds sources from the class, so the chosen file is handed over here
# for the duration of one load_settings() call.
_ACTIVE_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings. ``overrides`` are flag values; None means "not given"."""
    _ACTIVE_CONFIG_FILE["path"] = find_config_file(config_file)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _ACTIVE_CONFIG_FILE["path"] = None
