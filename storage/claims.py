"""Study claims: one launch at a time runs a study.

A launch claims its study before it writes anything else: one row of
`insgd_study_claims` per study name, inserted with INSERT ... ON CONFLICT DO NOTHING,
so of two launches that try at the same moment, on SQLite or PostgreSQL, exactly one
gets it. The row names its holder (a random id per launch, with the host, pid, boot id
and process start time of the driver) and a heartbeat the holder renews every few
seconds (`Claim.keep_alive`); it is deleted when the launch ends.

Another launch of a claimed study is refused (`StudyClaimed`, one line) unless the
holder is *gone*: no heartbeat for `stale_after` seconds (the holder's own figure: the
heartbeat timeout plus the time it may spend waiting for an unavailable database), or,
on the same machine (same host name and boot id), its process no longer exists. Only
`--resume` takes over a gone holder's claim (`take_over=True`), with an UPDATE that
names the old holder, so that of two launches taking over one claim only one wins. A
holder whose claim was taken over (it stalled past its `stale_after`) finds out at its
next heartbeat (`on_lost`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection, Engine

from storage.dialects import upsert_insert
from storage.errors import ClaimLost, StudyClaimed
from storage.schema import StudyClaim, utcnow
from storage.transactions import run_write, write_connection
from storage.urls import mask_url

log = logging.getLogger(__name__)

#: How often a holder renews its heartbeat (seconds).
HEARTBEAT_S = 5.0
#: No heartbeat for this long (plus the holder's database retry bound): the holder is gone.
STALE_S = 60.0


@dataclass(frozen=True)
class Holder:
    """Who holds a claim: a launch, and the process and machine it runs in."""

    launch: str
    host: str
    pid: int
    boot_id: str | None
    process_start: int | None

    @classmethod
    def this_process(cls) -> Holder:
        pid = os.getpid()
        return cls(uuid.uuid4().hex, socket.gethostname(), pid, _boot_id(), _process_start(pid))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class ClaimRow:
    """A claim as stored."""

    holder: Holder
    claimed_at: datetime
    heartbeat_at: datetime
    stale_after: float

    def gone(self, now: datetime | None = None, here: Holder | None = None) -> bool:
        """Whether the holder is gone: silent for `stale_after` seconds, or, on this
        machine, its process has ended."""
        now = now or utcnow()
        if now - self.heartbeat_at > timedelta(seconds=self.stale_after):
            return True
        here = here or Holder.this_process()
        if (
            self.holder.host != here.host
            or self.holder.boot_id is None
            or self.holder.boot_id != here.boot_id
        ):
            return False  # another machine (or one we cannot tell apart): the heartbeat says
        if self.holder.pid == here.pid and self.holder.process_start == here.process_start:
            return False  # this very process (another launch of it)
        if not _process_exists(self.holder.pid):
            return True
        start = _process_start(self.holder.pid)
        return None not in (start, self.holder.process_start) and start != self.holder.process_start

    def describe(self, now: datetime | None = None) -> str:
        silent = ((now or utcnow()) - self.heartbeat_at).total_seconds()
        return (
            f"{self.holder.describe()}, claimed {self.claimed_at:%Y-%m-%d %H:%M:%S} UTC, "
            f"last heartbeat {max(0.0, silent):.0f}s ago"
        )


class Claim:
    """This launch's claim on `study` (see the module docstring): `keep_alive` starts
    the heartbeat, `release` (or the end of a `with` block) stops it and gives the
    claim up."""

    def __init__(self, engine: Engine, study: str, holder: Holder, stale_after: float) -> None:
        self.engine = engine
        self.study = study
        self.holder = holder
        self.stale_after = stale_after
        self.taken_over: ClaimRow | None = None  # the gone holder's claim, if taken over
        #: called once, from the heartbeat's thread, if the claim is found taken over
        self.on_lost: Callable[[ClaimLost], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: ClaimLost | None = None

    @property
    def lost(self) -> ClaimLost | None:
        return self._lost

    def heartbeat(self, now: datetime | None = None) -> bool:
        """Renew the heartbeat; False if the claim is no longer this launch's. One
        attempt: a database that does not answer raises (the next heartbeat tries again)."""
        with write_connection(self.engine) as conn, conn.begin():
            renewed = conn.execute(
                update(StudyClaim)
                .where(StudyClaim.study == self.study, StudyClaim.holder == self.holder.launch)
                .values(heartbeat_at=now or utcnow())
            )
            return renewed.rowcount == 1

    def keep_alive(self, interval: float = HEARTBEAT_S) -> None:
        """Renew the heartbeat every `interval` seconds on a thread of its own, until
        `release`. A heartbeat the database refuses is tried again at the next one; a
        claim found taken over calls `on_lost` once, and the heartbeat stops."""

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    mine = self.heartbeat()
                except Exception:  # noqa: BLE001 - the database is away: next time
                    log.debug("heartbeat of the claim on %s failed", self.study, exc_info=True)
                    continue
                if not mine and not self._stop.is_set():
                    self._lost = ClaimLost(
                        f"study {self.study!r}: another launch took over this launch's claim "
                        f"after {self.stale_after:g}s without a heartbeat; this launch stops"
                    )
                    if self.on_lost is not None:
                        self.on_lost(self._lost)
                    return

        self._thread = threading.Thread(target=beat, name="insgd-claim", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the claim (if still this launch's), in one
        attempt: a database that does not answer leaves the row, which the next
        `--resume` takes over (at once on this machine: this process has ended)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)  # a heartbeat stuck on a lock is not waited for
            self._thread = None
        try:
            with write_connection(self.engine) as conn, conn.begin():
                conn.execute(
                    delete(StudyClaim).where(
                        StudyClaim.study == self.study, StudyClaim.holder == self.holder.launch
                    )
                )
        except Exception:  # noqa: BLE001 - best effort: a stale claim is taken over later
            log.debug("could not release the claim on %s", self.study, exc_info=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_study(
    engine: Engine,
    study: str,
    *,
    stale_after: float = STALE_S,
    take_over: bool = False,
    holder: Holder | None = None,
    now: datetime | None = None,
) -> Claim:
    """Claim `study` for this launch, or raise `StudyClaimed` (one line) naming the
    launch that holds it. With `take_over`, a claim whose holder is gone becomes ours
    (`Claim.taken_over` says whose it was)."""
    holder = holder or Holder.this_process()
    now = now or utcnow()
    row = {
        "study": study,
        "holder": holder.launch,
        "host": holder.host[:255],
        "pid": holder.pid,
        "boot_id": holder.boot_id,
        "process_start": holder.process_start,
        "claimed_at": now,
        "heartbeat_at": now,
        "stale_after": float(stale_after),
    }

    def insert(conn: Connection) -> bool:
        stmt = upsert_insert(conn.dialect.name)(StudyClaim).values(**row)
        stmt = stmt.on_conflict_do_nothing(index_elements=["study"])
        if conn.dialect.insert_returning:  # (psycopg's rowcount of an INSERT can be -1)
            return conn.execute(stmt.returning(StudyClaim.study)).first() is not None
        return conn.execute(stmt).rowcount == 1

    claim = Claim(engine, study, holder, stale_after)
    if run_write(engine, insert):
        return claim
    current = read_claim(engine, study)
    if current is None:  # released in between: try once more
        if run_write(engine, insert):
            return claim
        current = read_claim(engine, study)
        if current is None:
            raise StudyClaimed(f"study {study!r} is being claimed by another launch; try again")
    where = mask_url(engine.url)
    if not current.gone(now, holder):
        raise StudyClaimed(
            f"study {study!r} in {where} is being run by another launch "
            f"({current.describe(now)}); wait for it to end"
        )
    if not take_over:
        raise StudyClaimed(
            f"study {study!r} in {where} was claimed by a launch that is gone "
            f"({current.describe(now)}); pass --resume to take the study over"
        )

    def take(conn: Connection) -> bool:
        taken = conn.execute(
            update(StudyClaim)
            .where(StudyClaim.study == study, StudyClaim.holder == current.holder.launch)
            .values(**{k: v for k, v in row.items() if k != "study"})
        )
        return taken.rowcount == 1

    if not run_write(engine, take):
        raise StudyClaimed(f"study {study!r} in {where} was just taken over by another launch")
    claim.taken_over = current
    return claim


def read_claim(engine: Engine, study: str) -> ClaimRow | None:
    """The study's claim as stored, or None."""
    table = StudyClaim.__table__
    with engine.connect() as conn:
        claim: Any = conn.execute(select(table).where(table.c.study == study)).first()
    if claim is None:
        return None
    return ClaimRow(
        holder=Holder(
            launch=claim.holder,
            host=claim.host,
            pid=int(claim.pid),
            boot_id=claim.boot_id,
            process_start=None if claim.process_start is None else int(claim.process_start),
        ),
        claimed_at=_aware(claim.claimed_at),
        heartbeat_at=_aware(claim.heartbeat_at),
        stale_after=float(claim.stale_after),
    )


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, /proc), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19]) if len(fields) > 19 else None  # field 22 of stat


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"  # a zombie has ended
