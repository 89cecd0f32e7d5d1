"""The one YAML settings file (path from WATCH_CONFIG), validated on load.

Unknown or mistyped keys fail with an error that names the key (pydantic, `extra="forbid"`). Secrets are never
read from this file: it names the environment variables that hold them. Busybody's keys keep their meaning:
`history_limit`, `user_domain`, `user_map`, `geoip.city_db`, `geoip.asn_db`.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

EXAMPLE_SETTINGS = Path(__file__).with_name("watch.example.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeoIPSettings(_Strict):
    city_db: str | None = Field(None, description="GeoIP2/GeoLite2 City .mmdb (env GEOIP_CITY_DB overrides)")
    asn_db: str | None = Field(None, description="GeoLite2 ASN .mmdb (env GEOIP_ASN_DB overrides)")


class ArchiveSettings(_Strict):
    dir: str | None = Field(None, description="directory tree of saved API responses to ingest")


class GoogleSettings(_Strict):
    enabled: bool = False
    applications: list[str] = ["login", "token", "saml", "admin"]
    admin_email: str | None = None
    customer_id: str | None = None
    base_url: str = "https://admin.googleapis.com"
    key_env: str = Field("GOOGLE_SERVICE_ACCOUNT_JSON", description="env var holding the service-account key JSON")
    lag_window_minutes: int = Field(180, ge=1)
    delay_minutes: int = Field(2, ge=0)
    max_results: int = Field(1000, ge=1, le=1000)


class SlackAuditSettings(_Strict):
    enabled: bool = False
    base_url: str = "https://api.slack.com/audit/v1/"
    token_env: str = "SLACK_AUDIT_TOKEN"
    limit: int = Field(9999, ge=1, le=9999)
    lag_window_minutes: int = Field(180, ge=1)
    delay_minutes: int = Field(2, ge=0)


class SlackAccessSettings(_Strict):
    enabled: bool = False
    base_url: str = "https://slack.com/api/"
    token_env: str = "SLACK_ACCESS_TOKEN"
    team_id: str | None = None
    limit: int = Field(1000, ge=1, le=1000)


class QuarantineSettings(_Strict):
    warn_share: float = Field(0.01, ge=0, le=1, description="asset check warns above this quarantined share")


class BaselineSettings(_Strict):
    mode: Literal["seasonal", "tpa"] = "seasonal"
    window_days: int = Field(28, ge=1)
    dimensions: list[str] = ["source", "app", "action", "outcome"]


class ModelSettings(_Strict):
    half_life_days: float = Field(30.0, gt=0)
    min_events: int = Field(20, ge=1, description="cold start: events before a user's model is established")
    min_days: int = Field(7, ge=1, description="cold start: active days before a user's model is established")
    n_jobs: int = Field(2, ge=1, description="worker processes fitting the per-user forests")
    score_jobs: int = Field(1, ge=1, description="worker processes scoring the days of a range (each holds a day's "
                            "inputs, ~0.5 GB at 5,000 people); with 1, this process scores and one helper process "
                            "fits the next day's scorer meanwhile")


class AllowEntry(_Strict):
    value: str
    expires: date | None = None
    note: str = ""


class SuppressionSettings(_Strict):
    users: list[AllowEntry] = []
    cidrs: list[AllowEntry] = []
    asns: list[AllowEntry] = []
    countries: list[AllowEntry] = []
    ua_families: list[AllowEntry] = []


class AlertSettings(_Strict):
    group_window_hours: float = Field(24.0, gt=0)
    min_score: float = Field(0.5, ge=0, le=1)
    suppress: SuppressionSettings = SuppressionSettings()


class SlackNotifierSettings(_Strict):
    enabled: bool = False
    channel: str = ""
    token_env: str = "SLACK_BOT_TOKEN"
    base_url: str = "https://slack.com/api/"
    min_severity: Literal["low", "medium", "high", "critical"] = "medium"


class WebhookNotifierSettings(_Strict):
    enabled: bool = False
    url: str = ""
    secret_env: str = "WATCH_WEBHOOK_SECRET"
    min_severity: Literal["low", "medium", "high", "critical"] = "low"


class CsvNotifierSettings(_Strict):
    enabled: bool = True
    path: str = "alerts.csv"
    min_severity: Literal["low", "medium", "high", "critical"] = "low"


class NotifierSettings(_Strict):
    backfill_digest: bool = Field(True, description="alerts from a backfill go out as one digest per channel")
    slack: SlackNotifierSettings = SlackNotifierSettings()
    webhook: WebhookNotifierSettings = WebhookNotifierSettings()
    csv: CsvNotifierSettings = CsvNotifierSettings()


class Settings(_Strict):
    history_limit: int = Field(60 * 86400, ge=86400, description="seconds of history the per-user models keep")
    user_domain: str | None = Field(None, description="appended to bare user names (Busybody semantics)")
    user_map: dict[str, str] = Field(default_factory=dict, description="source identity -> canonical identity")
    geoip: GeoIPSettings = GeoIPSettings()
    archive: ArchiveSettings = ArchiveSettings()
    google: GoogleSettings = GoogleSettings()
    slack_audit: SlackAuditSettings = SlackAuditSettings()
    slack_access: SlackAccessSettings = SlackAccessSettings()
    quarantine: QuarantineSettings = QuarantineSettings()
    baseline: BaselineSettings = BaselineSettings()
    models: ModelSettings = ModelSettings()
    alerts: AlertSettings = AlertSettings()
    notifiers: NotifierSettings = NotifierSettings()

    @field_validator("history_limit", mode="before")
    @classmethod
    def _history_limit_int(cls, v: object) -> object:
        # Busybody kept it a string and compared strings; we insist on a number of seconds.
        if isinstance(v, str) and v.strip().isdigit():
            return int(v)
        return v

    @property
    def history_days(self) -> int:
        return max(1, self.history_limit // 86400)

    def with_env(self) -> "Settings":
        """Apply the documented environment overrides (GEOIP_CITY_DB, GEOIP_ASN_DB, WATCH_ARCHIVE_DIR)."""
        data = self.model_dump()
        for env, (section, key) in {
            "GEOIP_CITY_DB": ("geoip", "city_db"),
            "GEOIP_ASN_DB": ("geoip", "asn_db"),
            "WATCH_ARCHIVE_DIR": ("archive", "dir"),
        }.items():
            if os.environ.get(env):
                data[section][key] = os.environ[env]
        return Settings.model_validate(data)


class SettingsError(ValueError):
    """The settings file is missing or invalid; the message names the file and the bad keys."""


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid settings in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def parse_settings(data: object, source: str = "<settings>") -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"invalid settings in {source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise SettingsError(_describe(err, source)) from None


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Load `path`, else $WATCH_CONFIG, else defaults; then apply env overrides."""
    path = path or os.environ.get("WATCH_CONFIG")
    if not path:
        return Settings().with_env()
    p = Path(path)
    if not p.is_file():
        raise SettingsError(f"settings file not found: {p} (from {'WATCH_CONFIG' if not path else 'the path given'})")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {p} is not valid YAML: {exc}") from None
    settings = parse_settings(data, str(p))
    # Relative file paths in the settings are relative to the settings file.
    base = p.resolve().parent
    for section, key in (("geoip", "city_db"), ("geoip", "asn_db"), ("archive", "dir")):
        value = getattr(getattr(settings, section), key)
        if value and not Path(value).is_absolute():
            setattr(getattr(settings, section), key, str(base / value))
    return settings.with_env()
