"""peg: per-embedding-group scales on the residual stream — its channels permuted so the outliers share a
small group, K groups per stream tensor (or K per tensor under groups "auto"), per-tensor minmax elsewhere
(scales.peg_scales; groups.py sizes the groups)."""
from __future__ import annotations

from typing import Any

from qbert.calibration import groups as G
from qbert.calibration.methods.base import Choice, Method, Observed, Settings
from qbert.calibration.placement import STREAM_ROLES, role_of
from qbert.calibration.scales import gemm_split_of, peg_scales, per_tensor_scales
from qbert.calibration.site_scale import SiteScale
from qbert.errors import QbertError


class Peg(Method):
    name = "peg"
    reads = ("groups", "permute", "alpha")
    reads_when = {"alpha": {"groups": G.AUTO}}  # the GEMM inputs groups "auto" smooths instead of splitting
    smoothing = True  # groups "auto" smooths the GEMM inputs that need groups (scales.peg_scales)
    grouping = True

    def weight_rows(self, settings: Settings) -> str | None:
        return "unshared" if gemm_split_of(settings.groups, settings.gemm_split) == "smooth" else None

    def validate(self, settings: Settings, hidden_size: int | None = None) -> None:
        super().validate(settings, hidden_size)
        if hidden_size is not None:  # else only the model can tell (no more groups than channels)
            G.check_groups(settings.groups, hidden_size)

    def choose(self, chosen: list[Any], observed: Observed, settings: Settings) -> Choice:
        peg, permutation = peg_scales(chosen, observed.stats, settings.percentile, settings.groups, settings.permute,
                                      settings.group_range, observed.unshared_rows, settings.alpha,
                                      settings.gemm_split)
        sites = per_tensor_scales(chosen, observed.stats, skip=peg)
        return Choice(sites, permutation, self.recipe_fields(settings, sites))

    def recipe_fields(self, settings: Settings, sites: dict[str, SiteScale]) -> dict[str, Any]:
        return {**super().recipe_fields(settings, sites), "groups": settings.groups,
                "permute": bool(settings.permute)}

    def check_recipe(self, recipe: Any, where: str, smoothed: bool, grouped: dict[str, Any]) -> None:
        super().check_recipe(recipe, where, smoothed, grouped)
        if isinstance(recipe.groups, int) and recipe.groups > 1 and not grouped and not smoothed \
                and any(role_of(k) in STREAM_ROLES for k in recipe.sites):
            raise QbertError(f"{where}: method peg with groups {recipe.groups} but no site has PEG groups — "
                             "recalibrate")

    def label(self, settings: Settings) -> str:
        return f"{self.name} groups={settings.groups}"

    def describe(self, recipe: Any) -> str:
        return f"{self.name} groups={recipe.groups}"
