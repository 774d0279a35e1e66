"""The search space: norm (categorical), lr (log-uniform), eps (log-uniform, INSGD only).

eps is a *conditional* parameter: it is suggested only when the sampled norm is an INSGD
norm, so an SGD trial never pretends to have one (Optuna records no eps for it, and TPE
with ``group=True`` models the two sub-spaces separately). A `Point` is one configuration;
each point runs once per seed, and the seed is not part of the space (see `study.search.searcher`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from study.config import DEFAULT_EPS, StudyConfig


@dataclass(frozen=True)
class Point:
    """One configuration of the search space; `eps` is None for SGD (norm "none")."""

    norm: str
    lr: float
    eps: float | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The point as Optuna parameters (no eps for SGD)."""
        out: dict[str, Any] = {"norm": self.norm, "lr": self.lr}
        if self.eps is not None:
            out["eps"] = self.eps
        return out

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Point:
        norm = str(params["norm"])
        eps = params.get("eps")
        return cls(norm, float(params["lr"]), None if norm == "none" or eps is None else float(eps))

    def same_as(self, other: Point) -> bool:
        """Equal up to float round-off through JSON / SQL (a database round trip)."""
        if self.norm != other.norm or not _close(self.lr, other.lr):
            return False
        if self.eps is None or other.eps is None:
            return self.eps is None and other.eps is None
        return _close(self.eps, other.eps)


def variant_of(norm: str) -> str:
    """The report's variant label: "sgd" for norm "none", else "insgd-<norm>"."""
    return "sgd" if norm == "none" else f"insgd-{norm}"


def log_points(low: float, high: float, count: int) -> list[float]:
    """`count` log-spaced values from low to high inclusive; one point is their geometric mean."""
    if count == 1:
        return [math.sqrt(low * high)]
    step = (math.log(high) - math.log(low)) / (count - 1)
    values = [math.exp(math.log(low) + i * step) for i in range(count)]
    values[0], values[-1] = low, high  # exact end points, whatever exp/log round to
    return values


def grid_points(config: StudyConfig) -> list[Point]:
    """Every grid point once: lrs x norms x (eps values for INSGD norms only).

    Ordered lr-major so that an interrupted grid has covered the lr axis evenly.
    """
    lrs = log_points(config.lr_min, config.lr_max, config.lr_points)
    if config.eps_points == 1:
        epss = [DEFAULT_EPS]
    else:
        epss = log_points(config.eps_min, config.eps_max, config.eps_points)
    points = []
    for lr in lrs:
        for norm in config.norms:
            if norm == "none":
                points.append(Point("none", lr))
            else:
                points.extend(Point(norm, lr, eps) for eps in epss)
    return points


def define_space(config: StudyConfig) -> Callable[[Any], dict[str, Any]]:
    """The define-by-run space for OptunaSearch (`trial` is an optuna.Trial or Ray's captor).

    It returns the values it suggested, so a searcher needs no captor to learn them
    (`study.search.searcher.StudyOptunaSearch`); with Ray's captor the result is the same.
    """
    norms = list(config.norms)
    insgd = bool(config.insgd_norms)
    eps_low, eps_high = config.eps_min, config.eps_max
    if config.sampler == "grid" and config.eps_points == 1:
        # the one-point eps grid is the default eps, which may lie outside the range
        eps_low, eps_high = min(eps_low, DEFAULT_EPS), max(eps_high, DEFAULT_EPS)

    def space(trial: Any) -> dict[str, Any]:
        norm = trial.suggest_categorical("norm", norms)
        values = {
            "norm": norm,
            "lr": trial.suggest_float("lr", config.lr_min, config.lr_max, log=True),
        }
        if insgd and norm != "none":
            values["eps"] = trial.suggest_float("eps", eps_low, eps_high, log=True)
        return values

    return space


def find_point(point: Point, points: Iterable[Point]) -> Point | None:
    for candidate in points:
        if candidate.same_as(point):
            return candidate
    return None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
