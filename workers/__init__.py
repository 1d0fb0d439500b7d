"""Everything that runs inside Celery: the app, the classify task and the tier tasks.

`celery -A workers` reads `workers.app`; it is built on first access, so importing a plain module of
this package (routing rules, answer checks) needs no configuration file.
"""

from __future__ import annotations

import sys
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        # `celery -A workers` looks the app up here: a bad configuration is one line and exit code 78,
        # not Celery's "Unable to load celery application" traceback with the message at its end.
        from tierq.errors import ConfigError

        try:
            from workers.celery_app import app
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(78) from None
        return app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
