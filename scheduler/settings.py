"""Process settings from the environment (and `.env`), read once into one object."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .errors import ConfigError

DAY = 86400.0
ENV_NAMES = {
    "db": "OYEZ_DB",
    "node": "OYEZ_NODE",
    "sweep_seconds": "OYEZ_SWEEP_SECONDS",
    "watch_seconds": "OYEZ_WATCH_SECONDS",
    "workers": "OYEZ_WORKERS",
    "max_attempts": "OYEZ_MAX_ATTEMPTS",
    "retry_base_seconds": "OYEZ_RETRY_BASE_SECONDS",
    "retry_cap_seconds": "OYEZ_RETRY_CAP_SECONDS",
    "lease_seconds": "OYEZ_LEASE_SECONDS",
    "horizon_days": "OYEZ_HORIZON_DAYS",
    "busy_seconds": "OYEZ_DB_BUSY_SECONDS",
    "web_token": "OYEZ_WEB_TOKEN",
    "log_level": "OYEZ_LOG_LEVEL",
    "log_format": "OYEZ_LOG_FORMAT",
    "alert_batch_seconds": "OYEZ_ALERT_BATCH_SECONDS",
    "alert_timeout_seconds": "OYEZ_ALERT_TIMEOUT_SECONDS",
    "token_check_hours": "OYEZ_TOKEN_CHECK_HOURS",
    "stop_seconds": "OYEZ_STOP_SECONDS",
    "arm_seconds": "OYEZ_ARM_SECONDS",
}


class Settings(BaseModel):
    """How the daemon runs; every field has an OYEZ_* variable (see .env.example)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str = "sqlite:///oyez.db"
    node: str = Field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # bounded like the durations in jobs.yaml: a huge value would overflow datetime arithmetic
    sweep_seconds: float = Field(default=15.0, gt=0, le=DAY)
    watch_seconds: float = Field(default=0.25, gt=0, le=3600)
    workers: int = Field(default=64, ge=1, le=256)  # sends at once: a lane per busy target
    max_attempts: int = Field(default=5, ge=1, le=1000)
    retry_base_seconds: float = Field(default=30.0, gt=0, le=DAY)
    retry_cap_seconds: float = Field(default=900.0, gt=0, le=DAY)
    lease_seconds: float = Field(default=300.0, gt=0, le=DAY)
    horizon_days: float = Field(default=7.0, gt=0, le=366)
    busy_seconds: float = Field(default=30.0, gt=0, le=3600)
    web_token: SecretStr | None = Field(default=None, min_length=16)  # asked for by the web page
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    alert_batch_seconds: float = Field(default=10.0, ge=0, le=3600)  # a burst within this is one alert
    alert_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)  # per channel, per alert
    token_check_hours: float = Field(default=24.0, gt=0, le=24 * 31)  # how often the daemon checks tokens
    stop_seconds: float = Field(default=10.0, ge=0, le=3600)  # how long sends in flight may finish at stop
    # deliveries are claimed this long ahead (a lane's burst at half of it): off the whole and tenth
    # seconds that posts are set for, so that claiming never lands on another post's instant
    arm_seconds: float = Field(default=0.75, ge=0, le=60)

    @property
    def lease(self) -> timedelta:
        """How long a claim protects a delivery from other daemons."""
        return timedelta(seconds=self.lease_seconds)

    @property
    def arm_lead(self) -> timedelta:
        """How long before its instant a delivery is claimed, so that then only the send is left."""
        return timedelta(seconds=self.arm_seconds)

    @property
    def horizon(self) -> timedelta:
        """How far ahead deliveries are put in the ledger and scheduled."""
        return timedelta(days=self.horizon_days)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read OYEZ_* variables; explicit `overrides` (from the command line) win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {k: env[v] for k, v in ENV_NAMES.items() if env.get(v)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError([
                f"{ENV_NAMES.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']} (got {e['input']!r})"
                for e in exc.errors(include_url=False)
            ]) from None
