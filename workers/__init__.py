"""Everything that runs inside Celery: the app, the classify task and the tier tasks.

`celery -A workers` reads `workers.app`; it is built on first access, so importing a plain module of
this package (routing rules, answer checks) needs no configuration file.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from workers.celery_app import app

        return app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
