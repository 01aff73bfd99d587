"""Settings (one object, from ``TICKWORK_*`` environment variables or ``.env``) and logging."""

from tickwork.config.logging import configure_logging, log_context
from tickwork.config.settings import Settings, get_settings, load_settings

__all__ = ["Settings", "configure_logging", "get_settings", "load_settings", "log_context"]
