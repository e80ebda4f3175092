"""smoothquant: per-tensor minmax on GEMM inputs whose outlier channels were first divided into their GEMMs'
weight rows (smooth.py: x·W = (x/m)·(m·W)) — one per-tensor INT8 GEMM each, no clipped outliers."""
from __future__ import annotations

from typing import Any

from qbert.calibration.methods.base import Choice, Observed, PerTensor, Settings
from qbert.calibration.scales import per_tensor_scales
from qbert.calibration.site_scale import SiteScale
from qbert.calibration.smooth import smooth_scales
from qbert.errors import ConfigError, QbertError


class SmoothQuant(PerTensor):
    name = "smoothquant"
    reads = ("alpha",)
    placements = ("gemm",)  # defined on GEMM inputs: their weights absorb m
    smoothing = True

    def validate(self, settings: Settings, hidden_size: int | None = None) -> None:
        if settings.placement not in self.placements:
            raise ConfigError("placement", settings.placement, "smoothquant moves GEMM inputs' ranges into their "
                              "weights; it applies to the gemm placement only")

    def weight_rows(self, settings: Settings) -> str | None:
        return "all"

    def choose(self, chosen: list[Any], observed: Observed, settings: Settings) -> Choice:
        sites = smooth_scales(per_tensor_scales(chosen, observed.stats), chosen, observed.stats,
                              observed.weight_rows, settings.alpha)
        return Choice(sites, None, self.recipe_fields(settings, sites))

    def recipe_fields(self, settings: Settings, sites: dict[str, SiteScale]) -> dict[str, Any]:
        return {**super().recipe_fields(settings, sites), "alpha": settings.alpha}

    def check_recipe(self, recipe: Any, where: str, smoothed: bool, grouped: dict[str, Any]) -> None:
        super().check_recipe(recipe, where, True, grouped)  # its alpha is checked as a smoothed recipe's
        if recipe.sites and not smoothed:
            raise QbertError(f"{where}: method smoothquant but no site has smoothing factors — recalibrate")

    def label(self, settings: Settings) -> str:
        return f"{self.name} α={settings.alpha:g}"
