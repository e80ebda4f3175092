"""percentile: clip each tensor's |x| at a percentile of its histogram, giving up the rarest values for
resolution (symmetric by construction: the histogram is of |x|)."""
from __future__ import annotations

from typing import Any

from qbert.calibration import clips as C
from qbert.calibration.methods.base import PerTensor, Settings
from qbert.calibration.site_scale import SiteScale
from qbert.errors import ConfigError, QbertError


class Percentile(PerTensor):
    name = "percentile"
    reads = ("percentile",)
    histograms = True

    def validate(self, settings: Settings, hidden_size: int | None = None) -> None:
        super().validate(settings, hidden_size)
        if not _valid(settings.percentile):
            raise ConfigError("percentile", settings.percentile, "must be in (0, 100]")

    def clip(self, stats: Any, settings: Settings) -> float | None:
        return C.percentile_amax(stats.hist, settings.percentile) if stats.hist is not None else None

    def recipe_fields(self, settings: Settings, sites: dict[str, SiteScale]) -> dict[str, Any]:
        return {**super().recipe_fields(settings, sites), "percentile": settings.percentile}

    def check_recipe(self, recipe: Any, where: str, smoothed: bool, grouped: dict[str, Any]) -> None:
        if not _valid(recipe.percentile):
            raise QbertError(f"{where}: percentile {recipe.percentile!r} must be in (0, 100]")
        super().check_recipe(recipe, where, smoothed, grouped)

    def label(self, settings: Settings) -> str:
        return f"{self.name} {settings.percentile:g}"


def _valid(p: Any) -> bool:
    return isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 100
