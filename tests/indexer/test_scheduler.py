"""Scheduling: triggers from config, staleness, and a real BackgroundScheduler running a sync."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from db.models import SyncRun
from indexer.scheduler import build_scheduler, is_stale, next_due, trigger_for
from tests.conftest import make_config

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_interval_staleness_counts_from_the_last_success():
    assert is_stale("15m", None, NOW)
    assert not is_stale("15m", NOW - timedelta(minutes=10), NOW)
    assert is_stale("15m", NOW - timedelta(minutes=20), NOW)
    assert next_due("15m", NOW - timedelta(minutes=10), NOW) == NOW + timedelta(minutes=5)


def test_cron_staleness_uses_the_next_fire_time_after_the_last_success():
    # Hourly on the hour: synced at 11:30, due at 12:00 -> stale at 12:00:01.
    assert is_stale("0 * * * *", NOW - timedelta(minutes=30), NOW + timedelta(seconds=1))
    assert not is_stale("0 * * * *", NOW + timedelta(minutes=1), NOW + timedelta(minutes=2))
    assert trigger_for("*/5 * * * *").get_next_fire_time(None, NOW) == NOW


def test_cron_weekdays_are_numbered_as_in_crontab():
    # 1 is Monday and 0 or 7 Sunday, as in crontab (APScheduler 3 alone counts Monday as 0).
    monday = trigger_for("0 6 * * 1").get_next_fire_time(None, NOW)
    assert monday.weekday() == 0
    for sunday in ("0 6 * * 0", "0 6 * * 7", "0 6 * * sun"):
        assert trigger_for(sunday).get_next_fire_time(None, NOW).weekday() == 6
    weekdays = trigger_for("0 6 * * 1-5")
    fire, seen = NOW, set()
    for _ in range(7):
        fire = weekdays.get_next_fire_time(None, fire + timedelta(seconds=1))
        seen.add(fire.weekday())
    assert seen == {0, 1, 2, 3, 4}


def test_scheduler_has_one_non_overlapping_job_per_connector(tmp_path, runtime_factory):
    src = tmp_path / "kb"
    src.mkdir()
    (src / "a.md").write_text("# A\n\nAlpha service restarts nightly.\n")
    cfg = make_config(
        tmp_path,
        [
            {"name": "fresh", "type": "filesystem", "path": str(src), "schedule": "1d"},
            {"name": "hourly", "type": "filesystem", "path": str(src), "schedule": "0 * * * *"},
        ],
    )
    rt = runtime_factory(cfg)
    rt.indexer.sync(["fresh"])
    sched = build_scheduler(cfg, rt.indexer, blocking=False)
    sched.start(paused=True)
    try:
        jobs = {j.id: j for j in sched.get_jobs()}
        assert set(jobs) == {"sync:fresh", "sync:hourly"}  # no job the caller did not give
        for j in jobs.values():
            assert j.coalesce and j.max_instances == 1
        # "hourly" never synced: due at start-up; "fresh" synced just now: due in a day.
        assert jobs["sync:hourly"].next_run_time <= datetime.now(UTC) + timedelta(seconds=1)
        assert jobs["sync:fresh"].next_run_time > datetime.now(UTC) + timedelta(hours=23)
    finally:
        sched.shutdown(wait=False)


def test_the_caller_injects_jobs_of_its_own(tmp_path, runtime_factory):
    cfg = make_config(tmp_path)
    rt = runtime_factory(cfg)

    def add_report(scheduler):
        scheduler.add_job(print, trigger=trigger_for("1d"), id="report")

    sched = build_scheduler(cfg, rt.indexer, blocking=False, jobs=[add_report])
    sched.start(paused=True)
    try:
        assert [j.id for j in sched.get_jobs()] == ["report"]
    finally:
        sched.shutdown(wait=False)


def test_background_scheduler_syncs_stale_connectors_at_start(tmp_path, runtime_factory):
    src = tmp_path / "kb"
    src.mkdir()
    (src / "a.md").write_text("# A\n\nAlpha service restarts nightly.\n")
    cfg = make_config(
        tmp_path, [{"name": "kb", "type": "filesystem", "path": str(src), "schedule": "1h"}]
    )
    rt = runtime_factory(cfg)
    sched = build_scheduler(cfg, rt.indexer, blocking=False)
    sched.start()
    try:
        deadline = time.monotonic() + 60
        run = None
        while time.monotonic() < deadline:
            with rt.db.session() as s:
                run = s.scalars(select(SyncRun).where(SyncRun.status == "ok")).first()
            if run:
                break
            time.sleep(0.2)
        assert run is not None and run.connector == "kb" and run.added == 1
    finally:
        sched.shutdown(wait=True)
