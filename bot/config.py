"""Settings, read once from the environment and `.env` (INTERFACE.md lists every variable).

An invalid value stops start-up with one line naming the variable (`SettingsError`).
Secrets are `SecretStr`, so they never print; `secrets()` feeds the log filter that masks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast, get_args
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.catalog import model_info
from bot.models import ASPECT_RATIOS, DEFAULT_ASPECT_RATIO
from bot.policy import Policy, parse_ids
from bot.team import TeamSettings

ProviderName = Literal["nexconn", "gmi", "gemini", "demo"]


class StartupError(Exception):
    """Start-up cannot go on. The message is one line an admin can act on."""


class SettingsError(StartupError):
    """One line a person can act on: which variable, what is wrong with it."""


def _check_url(value: str, name: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise ValueError(f"{name} must be a {'/'.join(schemes)} URL, got {value!r}")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # provider ------------------------------------------------------------------------------
    provider: str | None = Field(default=None, alias="IMAGINE_PROVIDER")
    model: str = Field(default="gemini-2.5-flash-image", alias="IMAGINE_MODEL", min_length=1)
    models: str = Field(default="", alias="IMAGINE_MODELS")
    default_aspect_ratio: str = Field(
        default=DEFAULT_ASPECT_RATIO, alias="IMAGINE_DEFAULT_ASPECT_RATIO"
    )
    nexconn_api_key: SecretStr | None = Field(default=None, alias="NEXCONN_API_KEY")
    nexconn_base_url: str = Field(default="https://api-xmodel.nexconn.ai", alias="NEXCONN_BASE_URL")
    nexconn_mode: Literal["chat", "edits"] = Field(default="chat", alias="NEXCONN_MODE")
    nexconn_auth_scheme: str = Field(default="Bearer", alias="NEXCONN_AUTH_SCHEME")
    gmi_api_key: SecretStr | None = Field(default=None, alias="GMI_API_KEY")
    gmi_base_url: str = Field(default="https://console.gmicloud.ai", alias="GMI_BASE_URL")
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    gemini_base_url: str = Field(
        default="https://generativelanguage.googleapis.com", alias="GEMINI_BASE_URL"
    )
    demo_latency: float = Field(default=0.0, alias="IMAGINE_DEMO_LATENCY", ge=0, le=600)

    # storage -------------------------------------------------------------------------------
    database_url: str = Field(default="sqlite:///./data/imagine-bot.db", alias="DATABASE_URL")
    retention_days: int = Field(default=0, alias="IMAGINE_RETENTION_DAYS", ge=0, le=36500)

    # scheduler -----------------------------------------------------------------------------
    concurrency: int = Field(default=4, alias="IMAGINE_CONCURRENCY", ge=1, le=256)
    user_max_running: int = Field(default=2, alias="IMAGINE_USER_MAX_RUNNING", ge=1, le=64)
    user_max_queued: int = Field(default=10, alias="IMAGINE_USER_MAX_QUEUED", ge=0, le=1000)
    history_turns: int = Field(default=8, alias="IMAGINE_HISTORY_TURNS", ge=1, le=64)
    shutdown_grace: float = Field(default=10.0, alias="IMAGINE_SHUTDOWN_GRACE", ge=0, le=3600)
    job_timeout: float = Field(default=180.0, alias="IMAGINE_JOB_TIMEOUT", gt=0, le=86400)
    job_lease: float = Field(default=30.0, alias="IMAGINE_JOB_LEASE", ge=1, le=3600)
    job_poll: float = Field(default=1.0, alias="IMAGINE_JOB_POLL", gt=0, le=60)

    # team control --------------------------------------------------------------------------
    user_daily_limit: int = Field(default=0, alias="IMAGINE_USER_DAILY_LIMIT", ge=0, le=10**6)
    workspace_daily_limit: int = Field(
        default=0, alias="IMAGINE_WORKSPACE_DAILY_LIMIT", ge=0, le=10**8
    )
    monthly_budget: float = Field(default=0.0, alias="IMAGINE_MONTHLY_BUDGET", ge=0, le=1e9)
    price_per_image: float = Field(default=0.039, alias="IMAGINE_PRICE_PER_IMAGE", ge=0, le=1000)
    allowed_channels: str = Field(default="", alias="IMAGINE_ALLOWED_CHANNELS")
    allowed_roles: str = Field(default="", alias="IMAGINE_ALLOWED_ROLES")
    allowed_users: str = Field(default="", alias="IMAGINE_ALLOWED_USERS")
    blocked_users: str = Field(default="", alias="IMAGINE_BLOCKED_USERS")
    admin_users: str = Field(default="", alias="IMAGINE_ADMIN_USERS")
    quota_tz: str = Field(default="UTC", alias="IMAGINE_QUOTA_TZ")

    # discord -------------------------------------------------------------------------------
    discord_token: SecretStr | None = Field(default=None, alias="DISCORD_TOKEN")
    discord_api_base: str = Field(default="https://discord.com/api/v10", alias="DISCORD_API_BASE")
    discord_cdn_hosts: str = Field(
        default="cdn.discordapp.com,media.discordapp.net", alias="DISCORD_CDN_HOSTS"
    )
    discord_gateway_url: str | None = Field(default=None, alias="DISCORD_GATEWAY_URL")
    discord_guild_ids: str = Field(default="", alias="DISCORD_GUILD_IDS")
    discord_shard_count: int | None = Field(
        default=None, alias="DISCORD_SHARD_COUNT", ge=1, le=100_000
    )
    discord_shard_ids: str = Field(default="", alias="DISCORD_SHARD_IDS")

    # slack ---------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_api_base: str = Field(default="https://slack.com/api/", alias="SLACK_API_BASE")
    slack_http_host: str = Field(default="0.0.0.0", alias="SLACK_HTTP_HOST")
    slack_http_port: int = Field(default=3000, alias="SLACK_HTTP_PORT", ge=0, le=65535)

    # console and logs ----------------------------------------------------------------------
    output_dir: Path = Field(default=Path("./out"), alias="IMAGINE_OUTPUT_DIR")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", alias="LOG_LEVEL"
    )
    log_format: Literal["text", "json"] = Field(default="text", alias="LOG_FORMAT")

    # metrics and health --------------------------------------------------------------------
    metrics_port: int | None = Field(default=None, alias="IMAGINE_METRICS_PORT", ge=0, le=65535)
    metrics_host: str = Field(default="127.0.0.1", alias="IMAGINE_METRICS_HOST", min_length=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("provider", "nexconn_mode", "log_format", mode="before")
    @classmethod
    def _lower_or_none(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator("provider")
    @classmethod
    def _providers(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = [part for part in value.replace(" ", ",").split(",") if part]
        known = get_args(ProviderName)
        for name in names:
            if name not in known:
                raise ValueError(f"must be {', '.join(known)} or a list of them, got {name!r}")
        if len(set(names)) != len(names):
            raise ValueError("names a provider twice")
        if "demo" in names and len(names) > 1:
            raise ValueError("the offline demo provider cannot be mixed with real ones")
        return ",".join(names)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if any(c.isspace() or c == "," for c in value.strip()):
            raise ValueError(f"must be one model id (gemini-2.5-flash-image), got {value!r}")
        return value.strip()

    @field_validator("models")
    @classmethod
    def _models(cls, value: str) -> str:
        for part in value.replace(",", " ").split():
            if not all(c.isalnum() or c in "-._" for c in part):
                raise ValueError(f"must be comma-separated model ids, got {part!r}")
        return value

    @field_validator("default_aspect_ratio")
    @classmethod
    def _ratio(cls, value: str) -> str:
        if value not in ASPECT_RATIOS:
            raise ValueError(f"must be one of {', '.join(ASPECT_RATIOS)}")
        return value

    @field_validator("nexconn_base_url", "gmi_base_url", "gemini_base_url", "discord_api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_url(value, "the value").rstrip("/")

    @field_validator("slack_api_base")
    @classmethod
    def _slack_base(cls, value: str) -> str:
        _check_url(value, "the value")
        return value if value.endswith("/") else value + "/"

    @field_validator("discord_gateway_url")
    @classmethod
    def _ws_url(cls, value: str | None) -> str | None:
        if value:
            _check_url(value, "the value", ("ws", "wss"))
        return value or None

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres") or "://" not in value:
            raise ValueError("must look like sqlite:///path.db or postgresql://user@host/db")
        return value

    @field_validator("discord_cdn_hosts")
    @classmethod
    def _cdn_hosts(cls, value: str) -> str:
        hosts = value.replace(",", " ").split()
        if not hosts:
            raise ValueError("must name at least one host (cdn.discordapp.com,…)")
        for host in hosts:
            if "/" in host or "@" in host or host.startswith(".") or host.count(":") == 1:
                raise ValueError(f"must be comma-separated host names (no port), got {host!r}")
        return value

    @field_validator("quota_tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.strip() or "UTC"
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"must be an IANA time zone such as UTC or America/Los_Angeles, got {value!r}"
            ) from None
        return value

    @field_validator(
        "allowed_channels", "allowed_roles", "allowed_users", "blocked_users", "admin_users"
    )
    @classmethod
    def _ids(cls, value: str) -> str:
        for part in value.replace(",", " ").split():
            if any(c in part for c in "<>#@|"):
                raise ValueError(f"must be comma-separated ids (C0123…, 1234…), got {part!r}")
        return value

    @field_validator("discord_guild_ids")
    @classmethod
    def _guild_ids(cls, value: str) -> str:
        for part in value.replace(",", " ").split():
            if not part.isdigit():
                raise ValueError(f"must be comma-separated numeric guild ids, got {part!r}")
        return value

    @field_validator("discord_shard_count", "metrics_port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("discord_shard_ids")
    @classmethod
    def _shard_ids(cls, value: str) -> str:
        for part in value.replace(",", " ").split():
            if not part.isdigit():
                raise ValueError(f"must be comma-separated shard numbers, got {part!r}")
        return value

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        ids = self.shard_ids
        if ids and self.discord_shard_count is None:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT")
        count = self.discord_shard_count
        if count is not None and any(i >= count for i in ids):
            raise ValueError(f"DISCORD_SHARD_IDS must be below DISCORD_SHARD_COUNT ({count})")
        return self

    # derived ------------------------------------------------------------------------------

    @property
    def provider_names(self) -> tuple[ProviderName, ...]:
        """The providers in order of preference: as listed, else the first whose key is
        set, else `demo`."""
        if self.provider:
            return tuple(cast(ProviderName, name) for name in self.provider.split(","))
        if self.nexconn_api_key:
            return ("nexconn",)
        if self.gmi_api_key:
            return ("gmi",)
        if self.gemini_api_key:
            return ("gemini",)
        return ("demo",)

    @property
    def provider_name(self) -> str:
        """How logs and job rows name the provider (`nexconn,gmi` for a failover list)."""
        return ",".join(self.provider_names)

    @property
    def offered_models(self) -> tuple[str, ...]:
        """What users may choose from (`IMAGINE_MODELS`), the default model first."""
        listed = [part for part in self.models.replace(",", " ").split() if part]
        return tuple(dict.fromkeys([self.model, *listed]))

    @property
    def guild_ids(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.discord_guild_ids.replace(",", " ").split())

    @property
    def cdn_hosts(self) -> frozenset[str]:
        """Hosts Discord attachments are downloaded from; any other URL is refused."""
        return frozenset(h.lower() for h in self.discord_cdn_hosts.replace(",", " ").split())

    @property
    def shard_ids(self) -> tuple[int, ...]:
        """The shards this process runs; empty means all of `discord_shard_count`."""
        return tuple(int(p) for p in self.discord_shard_ids.replace(",", " ").split())

    def team_settings(self) -> TeamSettings:
        """The environment's side of team control (`bot.team`)."""
        env = Policy(
            user_daily_limit=self.user_daily_limit,
            workspace_daily_limit=self.workspace_daily_limit,
            monthly_budget=self.monthly_budget,
            allowed_channels=parse_ids(self.allowed_channels),
            allowed_roles=parse_ids(self.allowed_roles),
            allowed_users=parse_ids(self.allowed_users),
            blocked_users=parse_ids(self.blocked_users),
        )
        return TeamSettings(
            env=env,
            tz=ZoneInfo(self.quota_tz),
            price_per_image=self.price_per_image,
            default_model=self.model,
            admin_users=parse_ids(self.admin_users),
        )

    @property
    def discord_enabled(self) -> bool:
        return bool(self.discord_token and self.discord_token.get_secret_value())

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token and self.slack_bot_token.get_secret_value())

    def secrets(self) -> list[str]:
        """Every secret value set, for the log filter that masks them."""
        values = [
            self.nexconn_api_key,
            self.gmi_api_key,
            self.gemini_api_key,
            self.discord_token,
            self.slack_bot_token,
            self.slack_app_token,
            self.slack_signing_secret,
        ]
        return [v.get_secret_value() for v in values if v and v.get_secret_value()]

    def check_provider_key(self) -> None:
        """An explicitly chosen provider needs its key; every offered model needs a
        provider that sells it."""
        keys = {
            "nexconn": (self.nexconn_api_key, "NEXCONN_API_KEY"),
            "gmi": (self.gmi_api_key, "GMI_API_KEY"),
            "gemini": (self.gemini_api_key, "GEMINI_API_KEY"),
        }
        for name in self.provider_names:
            key = keys.get(name)
            if key is not None and not key[0]:
                raise SettingsError(
                    f"IMAGINE_PROVIDER={self.provider_name} needs {key[1]} to be set"
                )
        for model in self.offered_models:
            if not any(model_info(model).provider_id(name) for name in self.provider_names):
                variable = "IMAGINE_MODEL" if model == self.model else "IMAGINE_MODELS"
                raise SettingsError(
                    f"{variable}: {model} is not sold by {self.provider_name} "
                    "(see the model table in the README)"
                )


_ALIASES = {
    name: (field.alias or str(field.validation_alias or name))
    for name, field in Settings.model_fields.items()
}


def load_settings(**overrides: object) -> Settings:
    """Read the environment and `.env`; raise `SettingsError` with one line on bad input."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a rule across variables: its message names them
            raise SettingsError(message) from None
        loc = str(first["loc"][0])
        variable = _ALIASES.get(loc, loc)
        if "GEMINI_API_KEY" in variable:
            variable = "GEMINI_API_KEY"
        raise SettingsError(f"{variable}: {message}") from None
    settings.check_provider_key()
    return settings
