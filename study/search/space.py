"""The search space: variant (categorical), lr (log-uniform), eps (log-uniform, INSGD only).

The Optuna parameter "variant" takes the study's variant names ("sgd", "insgd-l2",
"insgd-l2-frozen", ...: `study.config.VARIANTS`) as its values, so optuna-dashboard and
the parameter importances show what was compared. eps is a *conditional* parameter: it is
suggested only when the sampled variant is an INSGD one (a frozen control too), so an SGD
trial never pretends to have one (Optuna records no eps for it, and TPE with
``group=True`` models the two sub-spaces separately). A `Point` is one configuration; each
point runs once per seed, and the seed is not part of the space (see
`study.search.searcher`). Studies launched before variants existed sampled a "norm"
parameter (none/l1/l2) instead; `Point.from_params` still reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from study.config import DEFAULT_EPS, NORM_VARIANTS, StudyConfig, is_insgd_variant, variant_of


@dataclass(frozen=True)
class Point:
    """One configuration of the search space; `eps` is None for SGD (variant "sgd")."""

    variant: str
    lr: float
    eps: float | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The point as Optuna parameters (no eps for SGD)."""
        out: dict[str, Any] = {"variant": self.variant, "lr": self.lr}
        if self.eps is not None:
            out["eps"] = self.eps
        return out

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Point:
        """The point of Optuna parameters: "variant", or the "norm" (none/l1/l2) of a
        study launched before variants existed."""
        if "variant" in params:
            variant = str(params["variant"])
        else:
            norm = str(params["norm"])
            if norm not in NORM_VARIANTS:
                raise ValueError(f"unknown norm parameter {norm!r}")
            variant = NORM_VARIANTS[norm]
        eps = params.get("eps")
        insgd = is_insgd_variant(variant) and eps is not None
        return cls(variant, float(params["lr"]), float(eps) if insgd else None)

    def same_as(self, other: Point) -> bool:
        """Equal up to float round-off through JSON / SQL (a database round trip)."""
        if self.variant != other.variant or not _close(self.lr, other.lr):
            return False
        if self.eps is None or other.eps is None:
            return self.eps is None and other.eps is None
        return _close(self.eps, other.eps)


def row_variant(row: Any) -> str:
    """The variant of a results row: its `variant` column, or for a row written before
    there was one (also a row without it, such as a test's), what its optimizer, norm and
    beta say (`study.config.variant_of`)."""
    variant = getattr(row, "variant", None)
    if variant:
        return str(variant)
    return variant_of(getattr(row, "optimizer", None), row.norm, getattr(row, "beta", None))


def row_point(row: Any) -> Point:
    """The configuration of a results row (eps only for INSGD variants)."""
    variant = row_variant(row)
    eps = row.eps if is_insgd_variant(variant) else None
    return Point(variant, float(row.lr), None if eps is None else float(eps))


def log_points(low: float, high: float, count: int) -> list[float]:
    """`count` log-spaced values from low to high inclusive; one point is their geometric mean."""
    if count == 1:
        return [math.sqrt(low * high)]
    step = (math.log(high) - math.log(low)) / (count - 1)
    values = [math.exp(math.log(low) + i * step) for i in range(count)]
    values[0], values[-1] = low, high  # exact end points, whatever exp/log round to
    return values


def grid_points(config: StudyConfig) -> list[Point]:
    """Every grid point once: lrs x variants x (eps values for INSGD variants only).

    Ordered lr-major so that an interrupted grid has covered the lr axis evenly.
    """
    lrs = log_points(config.lr_min, config.lr_max, config.lr_points)
    if config.eps_points == 1:
        epss = [DEFAULT_EPS]
    else:
        epss = log_points(config.eps_min, config.eps_max, config.eps_points)
    points = []
    for lr in lrs:
        for variant in config.variants:
            if is_insgd_variant(variant):
                points.extend(Point(variant, lr, eps) for eps in epss)
            else:
                points.append(Point(variant, lr))
    return points


def define_space(config: StudyConfig) -> Callable[[Any], dict[str, Any]]:
    """The define-by-run space for OptunaSearch (`trial` is an optuna.Trial or Ray's captor).

    It returns the values it suggested, so a searcher needs no captor to learn them
    (`study.search.searcher.StudyOptunaSearch`); with Ray's captor the result is the same.
    """
    variants = list(config.variants)
    insgd = bool(config.insgd_variants)
    eps_low, eps_high = config.eps_min, config.eps_max
    if config.sampler == "grid" and config.eps_points == 1:
        # the one-point eps grid is the default eps, which may lie outside the range
        eps_low, eps_high = min(eps_low, DEFAULT_EPS), max(eps_high, DEFAULT_EPS)

    def space(trial: Any) -> dict[str, Any]:
        variant = trial.suggest_categorical("variant", variants)
        values = {
            "variant": variant,
            "lr": trial.suggest_float("lr", config.lr_min, config.lr_max, log=True),
        }
        if insgd and is_insgd_variant(variant):
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
