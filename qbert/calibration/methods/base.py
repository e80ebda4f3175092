"""The interface every calibration method implements, and what one observation hands them.

A method is one object (registered in methods/__init__.py) that says which statistics it needs, checks the
settings only it reads, turns the observed statistics into site scales (plus a stream permutation), and checks
the fields a recipe written by it must carry. `calibrate` observes once and asks the method; method `auto`
(select.py) asks every registered method for its candidates from that same observation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from qbert.calibration.scales import per_tensor_scales
from qbert.calibration.site_scale import SiteScale
from qbert.calibration.smooth import ALPHA
from qbert.errors import ConfigError, QbertError


@dataclass(frozen=True)
class Settings:
    """The knobs a method may read (CalibrationConfig carries the same names; `gemm_split` is PEG's advanced
    one: how a grouped tensor reaches its GEMMs, scales.peg_scales)."""
    placement: str = "gemm"
    percentile: float = 99.99
    groups: int | str = 4
    permute: bool = True
    alpha: float = ALPHA
    gemm_split: str | None = None
    group_range: str = "max"  # PEG: one group's clip value (scales.group_clip)

    @classmethod
    def of(cls, config: Any) -> "Settings":
        """The settings of anything that carries these names (a CalibrationConfig, a reproduction row)."""
        return cls(**{f: getattr(config, f) for f in cls.__dataclass_fields__ if hasattr(config, f)})


@dataclass
class Observed:
    """One observation's results, shared by every method: per-site statistics (observe.SiteStats) and the
    weights' input-row ranges that smoothing needs (smooth.weight_rows), all and those of GEMMs that share no
    weight with another layer (smooth.unshared)."""
    stats: dict[str, Any]
    weight_rows: dict[str, np.ndarray] = field(default_factory=dict)
    unshared_rows: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Choice:
    """A method's answer: the scales of every chosen site, the stream permutation, and the recipe fields that
    describe how they were chosen."""
    sites: dict[str, SiteScale]
    permutation: list[int] | None
    fields: dict[str, Any]


class Method:
    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()  # Settings fields only this method reads
    reads_when: ClassVar[dict[str, dict[str, Any]]] = {}  # a field read only under these other settings
    placements: ClassVar[tuple[str, ...]] = ("gemm", "full")
    histograms: ClassVar[bool] = False  # needs |x| histograms per site (observe.Observer)
    smoothing: ClassVar[bool] = False  # its recipes may carry smoothing factors
    grouping: ClassVar[bool] = False  # its recipes may carry PEG groups, `groups` and a permutation

    def reads_field(self, name: str, settings: Settings) -> bool:
        """Whether `name` takes effect with these settings (a field set that does not is refused upstream)."""
        return name in self.reads and all(getattr(settings, k) == v for k, v in self.reads_when.get(name, {}).items())

    def weight_rows(self, settings: Settings) -> str | None:
        """Which weight-row ranges the observation must take before it may drop the weights: None, "all"
        (SmoothQuant) or "unshared" (PEG's smoothed GEMM inputs)."""
        return None

    def validate(self, settings: Settings, hidden_size: int | None = None) -> None:
        """Refuse settings this method cannot run with, naming the field."""
        if settings.placement not in self.placements:
            raise ConfigError("placement", settings.placement, f"{self.name} applies to the "
                              f"{' and '.join(self.placements)} placement{'s' if len(self.placements) > 1 else ''}"
                              " only")

    def choose(self, chosen: list[Any], observed: Observed, settings: Settings) -> Choice:
        raise NotImplementedError

    def recipe_fields(self, settings: Settings, sites: dict[str, SiteScale]) -> dict[str, Any]:
        """The recipe fields that follow from the method (each absent, i.e. at its neutral value, unless used)."""
        smoothed = any(s.smooth is not None for s in sites.values())
        return {"percentile": None, "alpha": settings.alpha if smoothed else None, "groups": 1, "permute": False}

    def check_recipe(self, recipe: Any, where: str, smoothed: bool, grouped: dict[str, Any]) -> None:
        """A recipe naming this method carries the fields it implies and none it does not (an edited recipe
        would otherwise emit a graph that is neither what it says nor what was calibrated). `smoothed`: some site
        has smoothing factors; `grouped`: the sites with PEG groups."""
        if smoothed and not self.smoothing:
            raise QbertError(f"{where}: method {self.name} with smoothing factors on some sites — recalibrate")
        if recipe.placement not in self.placements:
            raise QbertError(f"{where}: method {self.name} applies to the {' and '.join(self.placements)} "
                             f"placement, not {recipe.placement} — recalibrate")
        if smoothed and not _unit(recipe.alpha):
            raise QbertError(f"{where}: smoothing alpha {recipe.alpha!r} must be in [0, 1]")
        if grouped and not self.grouping:
            raise QbertError(f"{where}: method {self.name} with PEG groups on some sites — recalibrate")
        if not self.grouping and recipe.groups != 1:
            raise QbertError(f"{where}: groups {recipe.groups} applies to method peg, not {self.name} — recalibrate")
        if not self.grouping and recipe.permute:
            raise QbertError(f"{where}: permute applies to method peg, not {self.name} — recalibrate")
        if recipe.percentile is not None and "percentile" not in self.reads:
            raise QbertError(f"{where}: percentile {recipe.percentile} applies to method percentile, not "
                             f"{self.name} — recalibrate")
        if recipe.alpha is not None and not smoothed:
            raise QbertError(f"{where}: alpha {recipe.alpha} applies to method smoothquant (or PEG sites with "
                             f"smoothing factors), not {self.name} — recalibrate")

    def label(self, settings: Settings) -> str:
        """The method with the settings that tell its variants apart (method `auto`'s candidate names)."""
        return self.name

    def describe(self, recipe: Any) -> str:
        """The method of a recipe as a table shows it."""
        return self.name


def _unit(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


class PerTensor(Method):
    """One clip value per tensor: `clip` of the site's statistics where it gives one, else the observed max |x|."""

    def clip(self, stats: Any, settings: Settings) -> float | None:
        return None

    def choose(self, chosen: list[Any], observed: Observed, settings: Settings) -> Choice:
        sites = per_tensor_scales(chosen, observed.stats, lambda st: self.clip(st, settings))
        return Choice(sites, None, self.recipe_fields(settings, sites))
