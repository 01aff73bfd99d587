"""Moved to :mod:`tickwork.schedule.cron` (schedule math sits below the store); this old path is
the same module object, kept so existing imports and monkeypatches keep working."""

import sys

from tickwork.schedule import cron as _moved
from tickwork.schedule.cron import *  # noqa: F403

sys.modules[__name__] = _moved
