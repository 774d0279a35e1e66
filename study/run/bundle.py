"""Fused trials in a study (``--fuse K|auto``): one Ray Tune trial trains a *bundle* of up
to K of the study's trials as one fused model (`trainers.fused.train_fused`).

Everything but Tune sees the members, not the bundle:

- `BundleSearch` wraps the study's `SeededSearch`: a bundle's config is the next K trial
  configs it hands out (`{"members": [...]}`), each with its own study trial number,
  seed and Optuna group, so Optuna's history, the seed groups and the numbering are those
  of the same study run unfused. A bundle's per-epoch report holds one result per member
  that trained that epoch; the searcher passes each on as that member's own result, and
  a member's last result (its final or diverged epoch) ends that member there;
- `FanOut` does the same for the driver's callbacks (`Recorder`, `Progress`): each member
  is a `MemberTrial` with its own config and last result, so it gets its own results row,
  per-epoch rows and progress line, and a failed bundle fails its unfinished members;
- `run_bundle` is the trainable: it trains the members with `train_fused`, reports once
  per epoch with every member's metrics, and, like `study.run.trainable.run_trial`,
  hands Tune the bundle's per-epoch checkpoint (all members) with every report but the
  last, so a bundle whose worker died resumes from its last epoch.

Every sampler takes part: grid, random and qmc hand out their next K configurations, as
unfused; TPE is asked for a bundle's configurations back to back, before any of them is
told (with N seeds a bundle of K members holds ceil(K / N) configurations). Its
``constant_liar`` (`study.search.samplers`) counts each RUNNING trial among the bad ones,
so these asks spread out instead of all landing on the point TPE currently rates best;
a fused TPE study adapts from one bundle to the next. Only the FIFO scheduler takes
part: ASHA would stop single members of a bundle. `study.run.fusing.fuse_size` is the
rule that picks K (docs/studies.md).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback
from ray.tune.search import Searcher

from study.search.objective import METRIC, MODE, is_final_result, objective

if TYPE_CHECKING:
    from study.run.trial_config import TrialTemplates
    from study.search.searcher import SeededSearch

#: Beside the bundle's checkpoint: the members that ended (diverged) before it.
ENDED_FILE = "ended.json"


# --------------------------------------------------------------------------- members
def member_key(trial_id: str, index: int) -> str:
    """The searcher's id of a bundle's member `index`."""
    return f"{trial_id}#{index}"


def member_results(trial_id: str, result: dict[str, Any] | None) -> list[tuple[str, dict]]:
    """A bundle's report as (member key, that member's result): the bundle's own keys
    (Tune's time_total_s, ...) under each member's metrics."""
    if not result or "members" not in result:
        return []
    shared = {k: v for k, v in result.items() if k != "members"}
    return [
        (member_key(trial_id, int(row["member"])), {**shared, **row}) for row in result["members"]
    ]


class BundleSearch(Searcher):
    """A `SeededSearch` whose trials are bundles of up to `size` of its trials."""

    def __init__(self, inner: SeededSearch, size: int, epochs_planned: int) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self._inner = inner
        self._size = size
        self._epochs = epochs_planned
        self._open: dict[str, list[str]] = {}  # bundle trial id -> members not ended
        self._last: dict[str, dict[str, Any]] = {}  # member key -> its last result

    @property
    def emitted(self) -> int:
        """Member trials handed to Tune so far (`SeededSearch.emitted`)."""
        return self._inner.emitted

    def fail_unfinished(self) -> None:
        self._inner.fail_unfinished()

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next bundle: up to `size` members, fewer when the inner search runs out
        or its next ask is still waiting on the database (a partial bundle goes now; the
        member that got no answer was registered nowhere, and the next bundle's first
        member waits for the same ask). With no member at all, the inner search's own
        answer: None (waiting on the database: Tune asks again later) or FINISHED."""
        members = []
        answer: dict[str, Any] | str | None = None
        for index in range(self._size):
            answer = self._inner.suggest(member_key(trial_id, index))
            if not isinstance(answer, dict):
                break
            members.append({**answer, "member": index})
        if not members:
            # FINISHED ends the study: only when the inner search said so, never for an
            # ask that has not come back yet
            return None if answer is None else Searcher.FINISHED
        self._open[trial_id] = [member_key(trial_id, m["member"]) for m in members]
        return {"trial_number": members[0]["trial_number"], "members": members}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        open_members = self._open.get(trial_id, [])
        for key, row in member_results(trial_id, result):
            if key not in open_members:
                continue
            self._last[key] = row
            self._inner.on_trial_result(key, row)
            if is_final_result(row, self._epochs):
                open_members.remove(key)
                self._inner.on_trial_complete(key, row)
                self._last.pop(key, None)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        for key in self._open.pop(trial_id, []):
            self._inner.on_trial_complete(key, self._last.pop(key, None), error=error)

    def save(self, checkpoint_path: str) -> None:
        self._inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:  # pragma: no cover - never restored
        pass

    def __getstate__(self) -> dict[str, Any]:
        return {"_metric": self._metric, "_mode": self._mode}


class MemberTrial:
    """One member of a bundle as the driver's callbacks read a Tune trial."""

    def __init__(self, bundle: Any, config: dict[str, Any]) -> None:
        self.bundle = bundle
        self.config = config
        self.trial_id = bundle.trial_id
        self.last_result: dict[str, Any] = {}

    @property
    def num_failures(self) -> int:
        return int(self.bundle.num_failures)

    def get_pickled_error(self) -> Any:
        return self.bundle.get_pickled_error()

    def get_error(self) -> Any:
        return self.bundle.get_error()


class FanOut(Callback):
    """Hands the events of bundles to `callbacks` as events of their members."""

    def __init__(self, callbacks: Iterable[Any], epochs_planned: int) -> None:
        self.callbacks = list(callbacks)
        self.epochs_planned = epochs_planned
        self._members: dict[str, dict[int, MemberTrial]] = {}
        self._ended: set[tuple[str, int]] = set()

    def _of(self, trial: Any) -> dict[int, MemberTrial]:
        members = self._members.get(trial.trial_id)
        if members is None:
            members = {
                int(m["member"]): MemberTrial(trial, m) for m in trial.config.get("members", [])
            }
            self._members[trial.trial_id] = members
        return members

    def _running(self, trial: Any) -> list[MemberTrial]:
        return [m for i, m in self._of(trial).items() if (trial.trial_id, i) not in self._ended]

    def _each(self, hook: str, *args: Any, **info: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(*args, **info)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for member in self._running(trial):
            self._each("on_trial_start", iteration, trials, member, **info)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        members = self._of(trial)
        for key, row in member_results(trial.trial_id, result):
            index = int(key.rsplit("#", 1)[1])
            member = members.get(index)
            if member is None or (trial.trial_id, index) in self._ended:
                continue
            member.last_result = row
            self._each("on_trial_result", iteration, trials, member, row, **info)
            if is_final_result(row, self.epochs_planned):
                self._ended.add((trial.trial_id, index))
                self._each("on_trial_complete", iteration, trials, member, **info)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for member in self._running(trial):
            self._ended.add((trial.trial_id, int(member.config["member"])))
            self._each("on_trial_complete", iteration, trials, member, **info)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for member in self._running(trial):
            self._ended.add((trial.trial_id, int(member.config["member"])))
            self._each("on_trial_error", iteration, trials, member, **info)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for member in self._running(trial):
            self._each("on_trial_recover", iteration, trials, member, **info)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._each("on_step_end", iteration, trials, **info)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._each("on_experiment_end", trials, **info)

    def __getstate__(self) -> dict[str, Any]:
        return {"epochs_planned": self.epochs_planned}


# --------------------------------------------------------------------------- trainable
def run_bundle(config: dict[str, Any], templates: TrialTemplates) -> None:
    """Train a bundle's members as one fused model, reporting each epoch to Ray Tune: one
    report with every member that trained it, with the bundle's checkpoint except after
    its last epoch (`study.run.trainable.run_trial` for one trial)."""
    import torch
    from ray import tune

    from study.run.trainable import (
        CHECKPOINT_FILE,
        EPOCH_FILE,
        _set_threads,
        pick_device,
        where,
    )
    from trainers.device import device_name
    from trainers.fused import train_fused

    device = pick_device()
    _set_threads()
    members = config["members"]
    configs = [templates.train_config(m, device) for m in members]
    epochs = configs[0].epochs
    static = {**where(), "device_name": device_name(torch.device(device))}
    workdir = Path(tempfile.mkdtemp(prefix="insgd-bundle-"))
    try:
        checkpoint_path = workdir / CHECKPOINT_FILE
        resume_from = _restore(tune.get_checkpoint(), workdir)
        ended: set[int] = set()
        static["resumed_from_epoch"] = 0
        if resume_from is not None:
            static["resumed_from_epoch"] = int(
                (workdir / EPOCH_FILE).read_text(encoding="utf-8").strip()
            )
            ended = set(json.loads((workdir / ENDED_FILE).read_text(encoding="utf-8")))
        pending: dict[int, Any] = {}

        def on_epoch(index: int, metrics: Any) -> None:
            pending[index] = metrics
            if index != max(i for i in range(len(members)) if i not in ended):
                return  # the epoch's last member reports the bundle's epoch
            rows = sorted(pending.items())
            pending.clear()
            ended.update(i for i, m in rows if m.diverged)
            epoch = int(metrics.epoch)
            report = {
                "epoch": epoch,
                METRIC: max(objective(m.val_accuracy) for _, m in rows),
                "members": [{**m.to_dict(), **static, "member": i} for i, m in rows],
                **static,
            }
            if epoch >= epochs or len(ended) == len(members):
                tune.report(report)  # the bundle's last epoch: no checkpoint, as run_trial
                return
            (workdir / EPOCH_FILE).write_text(str(epoch), encoding="utf-8")
            (workdir / ENDED_FILE).write_text(json.dumps(sorted(ended)), encoding="utf-8")
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(workdir)))

        train_fused(
            configs,
            on_epoch,
            checkpoint_path=checkpoint_path,
            resume_from=resume_from,
            checkpoint_last=False,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _restore(checkpoint: Any, workdir: Path) -> Path | None:
    """Copy a restored bundle checkpoint's files into `workdir`; its checkpoint path."""
    from study.run.trainable import CHECKPOINT_FILE, EPOCH_FILE

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        source = Path(folder)
        names: Sequence[str] = (CHECKPOINT_FILE, EPOCH_FILE, ENDED_FILE)
        if not all((source / name).exists() for name in names):
            return None
        for name in names:
            shutil.copyfile(source / name, workdir / name)
    return workdir / CHECKPOINT_FILE
