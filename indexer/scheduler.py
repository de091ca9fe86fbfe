"""Scheduled syncs: one APScheduler job per connector, from its ``schedule``.

Jobs coalesce missed runs and never overlap. All syncs run on one worker thread, so
there is a single writer to the index even when two connectors fall due together.
Whoever starts the scheduler may add jobs of its own (the bot adds the report digest): the
indexer knows nothing of them.

``kbot worker`` keeps its jobs in the database (``SQLAlchemyJobStore`` on the table
``kbot_scheduler_jobs``), so a restarted worker knows when each job last fell due. A
stored job names its function and plain string arguments; the function finds the live
indexer in ``_INDEXERS`` by the data directory it was registered under. A second worker on
the same database runs the same jobs, but ``indexer.sync_lock`` lets only one process sync
a connector at a time; the other logs that it skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import delete

from config.models import KbotConfig, cron_trigger, parse_schedule
from db import Database
from db.models import SchedulerJob, utcnow
from indexer.sync import Indexer, last_successful_run

log = logging.getLogger(__name__)
# Adds one job to a scheduler: how the process that starts it injects jobs of its own.
Job = Callable[[BaseScheduler], None]


def trigger_for(schedule: str) -> CronTrigger | IntervalTrigger:
    kind, value = parse_schedule(schedule)
    if kind == "interval":
        return IntervalTrigger(seconds=int(value), timezone="UTC")
    return cron_trigger(str(value))


def last_success(indexer: Indexer) -> dict[str, datetime]:
    """Each connector's last successful sync start."""
    with indexer.db.session() as s:
        runs = {c.name: last_successful_run(s, c.name) for c in indexer.config.connectors}
    return {name: run.started_at for name, run in runs.items() if run is not None}


def next_due(schedule: str, last_ok: datetime | None, now: datetime) -> datetime | None:
    """When a connector next falls due after its last successful sync; ``now`` if overdue.

    An APScheduler IntervalTrigger counts from its own creation, not from ``last_ok``, so
    intervals are added here directly.
    """
    if last_ok is None:
        return now  # never synced
    kind, value = parse_schedule(schedule)
    if kind == "interval":
        nxt: datetime | None = last_ok + timedelta(seconds=int(value))
    else:
        nxt = trigger_for(schedule).get_next_fire_time(None, last_ok)
    return None if nxt is None else max(nxt, now)


def is_stale(schedule: str, last_ok: datetime | None, now: datetime) -> bool:
    """True when a connector has never synced, or its next run after the last one is past."""
    return next_due(schedule, last_ok, now) == now


JOBS_TABLE = "kbot_scheduler_jobs"
# The live indexers that stored jobs run against, by data directory.
_INDEXERS: dict[str, Indexer] = {}


def build_scheduler(
    config: KbotConfig,
    indexer: Indexer,
    *,
    blocking: bool,
    jobs: Iterable[Job] = (),
    store: Database | None = None,
) -> BaseScheduler:
    """A scheduler with a job per connector, and the ``jobs`` given; stale connectors are
    due immediately. With ``store``, jobs are kept in that database, and stored jobs that
    are no longer configured (a removed connector, a digest turned off) are dropped."""
    cls = BlockingScheduler if blocking else BackgroundScheduler
    jobstores = {}
    if store is not None:
        jobstores["default"] = SQLAlchemyJobStore(engine=store.engine, tablename=JOBS_TABLE)
    scheduler = cls(
        jobstores=jobstores,
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        timezone="UTC",
    )
    key = str(config.storage.data_dir)
    _INDEXERS[key] = indexer
    now = utcnow()
    done = last_success(indexer)
    for cfg in config.connectors:
        # Stale connectors sync at start-up, one after another on the single worker;
        # the others wait for their trigger (APScheduler reads next_run_time=None as paused).
        due = {"next_run_time": now} if is_stale(cfg.schedule, done.get(cfg.name), now) else {}
        scheduler.add_job(
            run_sync,
            trigger=trigger_for(cfg.schedule),
            args=[key, cfg.name],
            id=f"sync:{cfg.name}",
            name=f"sync {cfg.name}",
            replace_existing=True,
            **due,
        )
    for add in jobs:
        add(scheduler)
    if store is not None:
        _drop_unconfigured(store, {j.id for j in scheduler.get_jobs()})
    return scheduler


def _drop_unconfigured(store: Database, keep: set[str]) -> None:
    """Delete stored jobs this config no longer has, before the scheduler loads them."""
    with store.session() as s:
        gone = s.execute(delete(SchedulerJob).where(SchedulerJob.id.not_in(keep))).rowcount
    if gone:
        log.info("dropped %d stored job(s) that are no longer configured", gone)


def run_sync(key: str, name: str) -> None:
    """A scheduled sync of connector ``name`` by the indexer registered under ``key``."""
    indexer = _INDEXERS.get(key)
    if indexer is None:
        log.error("sync of %s not run: no indexer for %s in this process", name, key)
        return
    try:
        cfg = indexer.config.connector(name)
    except KeyError:
        log.warning("sync of %s not run: it is no longer configured", name)
        return
    result = indexer.sync_one(cfg)
    if result.skipped:
        return  # the indexer logged who holds the lock
    if result.ok:
        log.info(
            "synced %s: +%d ~%d -%d =%d (%d failed), %d chunks",
            name,
            result.added,
            result.updated,
            result.deleted,
            result.unchanged,
            result.failed,
            result.chunks,
        )
        if result.skipped_note:
            log.warning("sync of %s: %s", name, result.skipped_note)
    else:
        log.error("sync of %s failed: %s", name, result.error)
