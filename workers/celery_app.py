"""The Celery app: `celery -A workers worker -Q classify,hot,warm,cold` and `celery -A workers flower`.

A worker refuses to start, with one line that says why, when it could not serve its queues: a queue
its TOML does not define (it would take messages it cannot run), a provider key its queues need that
is not set, or a database it cannot reach. Once started it marks each message it finishes as no
longer live, and answers `tierq doctor`'s question about which configuration it runs.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery, signals
from celery.worker.control import inspect_command

from tierq.errors import TierqError
from tierq.queues import celery_config
from tierq.settings import get_settings

log = logging.getLogger(__name__)

EX_CONFIG = 78  # sysexits.h: configuration error
EX_SOFTWARE = 70  # sysexits.h: internal software error


def create_app() -> Celery:
    """Build the app from the settings and the TOML file; a bad configuration stops start-up here."""
    settings = get_settings()
    config = settings.load_config()
    app = Celery("tierq")
    app.conf.update(celery_config(config, settings.broker, settings.visibility_timeout_s))
    app.conf.update(
        # Model calls run on one asyncio loop per process; pool threads only wait on it and write to
        # Postgres. The process's open calls are bounded by `[worker] open_calls`, not by the threads:
        # there are more threads than that needs, so a task waiting for its chunk's slowest call holds
        # back only its own acknowledgement, and the slots its answered calls freed go to other tasks.
        worker_pool="workers.pool:ThreadPool",  # Celery's thread pool (workers/pool.py)
        worker_concurrency=config.worker.threads,
        worker_consumer="workers.consumer:TierqConsumer",
    )
    return app


app = create_app()


@signals.celeryd_after_setup.connect
def _refuse_unless_ready(sender: str, instance: Any, **_: Any) -> None:
    # After -Q is applied and before anything is consumed. SystemExit is the one way out of a signal
    # handler that Celery does not swallow; the worker then stops with this exit code.
    from workers.dbretry import quiet_library_outages
    from workers.startup import prepare

    quiet_library_outages()
    queues = sorted(instance.app.amqp.queues.consume_from)
    try:
        prepare(app, queues, int(instance.concurrency or 1), sender)
    except TierqError as exc:
        print(f"error: worker {sender}: {exc}", file=sys.stderr, flush=True)
        try:
            _say_why_not_started(sender, queues, str(exc))
        except Exception as note_error:  # only a note: the worker must stop whatever it meets (a bad URL...)
            log.warning("could not leave in Redis why this worker did not start (%s)", note_error)
        raise SystemExit(EX_CONFIG) from None
    except Exception:  # a bug: Celery would log it and run the worker half prepared (no announcement...)
        log.exception("worker %s could not get ready; stopping it", sender)
        raise SystemExit(EX_SOFTWARE) from None


def _say_why_not_started(worker: str, queues: list[str], reason: str) -> None:
    """Leave the reason in Redis for `tierq status`, which otherwise sees only a queue with no worker and
    says to start one. Redis may be what is missing: then only the line above says it."""
    import redis

    from tierq.presence import Presence

    try:
        url = get_settings().redis_url
    except TierqError:  # the settings themselves are wrong: no Redis to tell
        return
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        Presence(client).did_not_start(worker, queues, reason)
    except redis.RedisError as exc:
        log.warning("could not leave in Redis why this worker did not start (%s)", exc)
    finally:
        client.close()


@signals.task_prerun.connect
def _started(task_id: str, task: Any, **_: Any) -> None:
    # Messages of this queue due well before this one are not waiting in it any more (tierq/live.py).
    queue = (task.request.delivery_info or {}).get("routing_key")
    if queue:
        from redis.exceptions import RedisError

        from workers.context import get_context

        try:
            get_context(app).live.started(queue, task_id)
        except RedisError as exc:  # only a hint for the reconciler; the task meets the outage itself
            log.debug("could not mark %s as started: %s", task_id, exc)


@signals.task_postrun.connect
def _finished(task_id: str, state: str, retval: Any = None, **_: Any) -> None:
    # A message that finished (not one retried, requeued or given back) is no longer live.
    if state in ("SUCCESS", "FAILURE") and not (isinstance(retval, dict) and retval.get("requeued")):
        from workers.context import get_context

        get_context(app).live.finish([task_id])


@inspect_command()
def tierq_info(state: Any) -> dict[str, Any]:
    """Which configuration this worker runs (`tierq doctor` compares it with its own)."""
    from workers.context import get_context

    ctx = get_context(app)
    return {"config": str(ctx.settings.config), "digest": ctx.config.digest, "tiers": ctx.config.tier_names}


import workers.tasks  # noqa: E402, F401  (registers the tasks on `app`)
