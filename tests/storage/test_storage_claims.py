"""Study claims (`storage.claims`) on SQLite and PostgreSQL: one holder per study, a live
holder refused, a gone one taken over only when asked, simultaneous claims, heartbeats."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine

from storage.claims import (
    ClaimRow,
    Holder,
    StudyClaimed,
    _boot_id,
    _process_start,
    claim_study,
    read_claim,
)
from storage.schema import StudyClaim, utcnow


def _elsewhere() -> Holder:
    """A launch on another machine: only its heartbeat tells whether it is alive."""
    return Holder(uuid.uuid4().hex, "other-host", 4242, "another-boot", 17)


def test_one_launch_holds_a_study_and_gives_it_up(engine: Engine) -> None:
    mine = claim_study(engine, "s")
    stored = read_claim(engine, "s")
    assert stored is not None and stored.holder == mine.holder
    with pytest.raises(StudyClaimed, match="is being run by another launch") as refused:
        claim_study(engine, "s", holder=_elsewhere())
    assert f"pid {mine.holder.pid} on {socket.gethostname()}" in str(refused.value)
    assert "\n" not in str(refused.value)
    with pytest.raises(StudyClaimed, match="is being run by another launch"):
        claim_study(engine, "s", holder=_elsewhere(), take_over=True)  # alive: never
    other = claim_study(engine, "t", holder=_elsewhere())  # another study: free
    mine.release()
    assert read_claim(engine, "s") is None
    again = claim_study(engine, "s", holder=_elsewhere())
    again.release()
    other.release()
    mine.release()  # twice: harmless, and never deletes another holder's claim
    assert read_claim(engine, "t") is None


@pytest.mark.parametrize("stale", [False, True], ids=["new", "taking-over"])
def test_of_simultaneous_claims_exactly_one_wins(engine: Engine, stale: bool) -> None:
    """Six launches at once: of a free study, or all resuming one whose holder is gone."""
    if stale:
        claim_study(engine, "race", holder=_elsewhere(), now=utcnow() - timedelta(hours=1))
    start = threading.Barrier(6)
    won: list[Holder] = []
    refused: list[str] = []

    def attempt() -> None:
        holder = _elsewhere()
        start.wait()
        try:
            claim_study(engine, "race", holder=holder, take_over=stale)
            won.append(holder)
        except StudyClaimed as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 5
    stored = read_claim(engine, "race")
    assert stored is not None and stored.holder == won[0]


def test_a_silent_holder_is_gone_and_only_resume_takes_its_claim(engine: Engine) -> None:
    t0 = utcnow()
    old = claim_study(engine, "s", holder=_elsewhere(), stale_after=60, now=t0)
    soon = t0 + timedelta(seconds=30)
    with pytest.raises(StudyClaimed, match="being run by another launch"):
        claim_study(engine, "s", take_over=True, now=soon)
    late = t0 + timedelta(seconds=61)
    with pytest.raises(StudyClaimed, match="gone .*pass --resume to take the study over"):
        claim_study(engine, "s", now=late)
    mine = claim_study(engine, "s", take_over=True, now=late)
    assert mine.taken_over is not None and mine.taken_over.holder == old.holder
    assert read_claim(engine, "s").holder == mine.holder
    assert old.heartbeat() is False  # the old holder finds out at its next heartbeat
    assert mine.heartbeat() is True
    with pytest.raises(StudyClaimed, match="being run by another launch"):
        claim_study(engine, "s", holder=_elsewhere(), take_over=True)  # the new one is alive
    old.release()  # not its claim any more: left alone
    assert read_claim(engine, "s").holder == mine.holder
    mine.release()


def test_a_holder_whose_process_ended_on_this_machine_is_gone_at_once(engine: Engine) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        here = Holder(
            uuid.uuid4().hex,
            socket.gethostname(),
            sleeper.pid,
            _boot_id(),
            _process_start(sleeper.pid),
        )
        claim_study(engine, "s", holder=here)
        with pytest.raises(StudyClaimed, match="being run by another launch"):
            claim_study(engine, "s", take_over=True)  # its process is alive
    finally:
        sleeper.kill()
        sleeper.wait()
    mine = claim_study(engine, "s", take_over=True)  # ended: no need to wait for the timeout
    assert mine.taken_over is not None and mine.taken_over.holder.pid == sleeper.pid
    mine.release()


def test_a_reused_pid_is_not_the_holder() -> None:
    now = utcnow()
    me = Holder.this_process()
    if me.boot_id is None or me.process_start is None:
        pytest.skip("needs /proc")
    reused = Holder("x", me.host, me.pid, me.boot_id, me.process_start + 1)
    assert ClaimRow(reused, now, now, 60).gone(now, me)
    same_process = Holder("y", me.host, me.pid, me.boot_id, me.process_start)
    assert not ClaimRow(same_process, now, now, 60).gone(now, me)


def test_the_heartbeat_keeps_a_claim_alive_and_notices_a_takeover(engine: Engine) -> None:
    mine = claim_study(engine, "s")
    lost = threading.Event()
    mine.on_lost = lambda error: lost.set()
    first = read_claim(engine, "s").heartbeat_at
    mine.keep_alive(interval=0.05)
    deadline = time.monotonic() + 10
    while read_claim(engine, "s").heartbeat_at == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_claim(engine, "s").heartbeat_at > first
    with engine.begin() as conn:  # another launch took it over
        conn.execute(update(StudyClaim).where(StudyClaim.study == "s").values(holder="other"))
    assert lost.wait(10)
    assert mine.lost is not None and "took over" in str(mine.lost)
    mine.release()
    assert read_claim(engine, "s").holder.launch == "other"
