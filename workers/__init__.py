"""Everything that runs inside Celery: the app, the classify task and the tier tasks."""

from workers.celery_app import app

__all__ = ["app"]
