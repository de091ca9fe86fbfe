"""Which chat platform events were already handled, so a platform's retries are dropped.

Slack (and Teams) redeliver an event when they think it was lost. The first delivery
claims the event in the database, so a retry that arrives later, even after a restart,
is recognised and not answered a second time.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import Database
from db.models import PlatformEvent, utcnow

# Platforms give up retrying within minutes; a day is ample and keeps the table small.
KEEP = timedelta(days=1)


class Deliveries:
    def __init__(self, db: Database, keep: timedelta = KEEP):
        self.db = db
        self.keep = keep

    def claim(self, platform: str, event_key: str) -> bool:
        """True for the first delivery of ``event_key``, False for every later one."""

        def claim(s: Session) -> None:
            s.execute(delete(PlatformEvent).where(PlatformEvent.created_at < utcnow() - self.keep))
            s.add(PlatformEvent(platform=platform, event_key=event_key[:255]))

        try:
            # The key is unique in SQL, so this holds across web processes; a retry after a
            # lost connection whose commit did land reads as a redelivery (not answered twice).
            self.db.write(claim, "claim a delivery")
        except IntegrityError:
            return False
        return True
