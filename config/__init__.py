"""Configuration: one YAML file, validated by the pydantic models in ``config.models``."""

from config.loader import ConfigError, config_path, load_config, parse_config
from config.models import KbotConfig, parse_schedule

__all__ = [
    "ConfigError",
    "KbotConfig",
    "config_path",
    "load_config",
    "parse_config",
    "parse_schedule",
]
