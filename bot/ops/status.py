"""Connector status for `kbot connectors list` and the operators: last run, counts, freshness."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from config.models import KbotConfig
from db import Database
from db.models import IndexedDocument, SyncRun, utcnow
from indexer.scheduler import next_due
from indexer.sync import last_successful_run


def connector_status(config: KbotConfig, db: Database) -> list[dict[str, Any]]:
    """One row per configured connector, in config order (the shape of `connectors list --json`)."""
    now = utcnow()
    rows = []
    with db.session() as s:
        counts = dict(
            s.execute(
                select(IndexedDocument.connector, func.count()).group_by(IndexedDocument.connector)
            ).all()
        )
        chunks = dict(
            s.execute(
                select(IndexedDocument.connector, func.sum(IndexedDocument.chunk_count)).group_by(
                    IndexedDocument.connector
                )
            ).all()
        )
        for cfg in config.connectors:
            last = s.scalars(
                select(SyncRun)
                .where(SyncRun.connector == cfg.name)
                .order_by(SyncRun.id.desc())
                .limit(1)
            ).first()
            last_ok = last_successful_run(s, cfg.name)
            rows.append(
                {
                    "name": cfg.name,
                    "type": cfg.type,
                    "schedule": cfg.schedule,
                    "audience": cfg.audience,
                    "documents": counts.get(cfg.name, 0),
                    "chunks": int(chunks.get(cfg.name) or 0),
                    "last_run": None
                    if last is None
                    else {
                        "status": last.status,
                        "started_at": last.started_at,
                        "finished_at": last.finished_at,
                        "added": last.added,
                        "updated": last.updated,
                        "deleted": last.deleted,
                        "unchanged": last.unchanged,
                        "failed": last.failed,
                        "error": last.error,
                    },
                    "last_success": last_ok.finished_at if last_ok else None,
                    "next_run": next_due(
                        cfg.schedule, last_ok.started_at if last_ok else None, now
                    ),
                    "freshness": _age(now - last_ok.finished_at)
                    if last_ok and last_ok.finished_at
                    else "never synced",
                }
            )
    return rows


def _age(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s < 120:
        return f"{s}s old"
    if s < 7200:
        return f"{s // 60}m old"
    if s < 172800:
        return f"{s // 3600}h old"
    return f"{s // 86400}d old"
