"""The calibration recipe: everything needed to re-emit a Q/DQ graph for any target without recalibrating."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qbert.atomic import read_json, write_json
from qbert.errors import QbertError

FORMAT = "qbert-recipe/1"


@dataclass
class SiteScale:
    tensor: str
    amax: float  # per-tensor clip value (for PEG sites: the largest group amax)
    group_amax: list[float] | None = None  # PEG: one clip value per contiguous group (in permuted order)
    bounds: list[list[int]] | None = None  # PEG: [start, end) of each group along the channel axis
    smooth: list[float] | None = None  # per-channel divisor m the GEMMs read x/m with (m·W in the weights):
    # SmoothQuant, or a PEG `--groups auto` GEMM input (its non-GEMM readers, if any, keep group_amax/bounds)


@dataclass
class Recipe:
    method: str
    placement: str
    sites: dict[str, SiteScale]
    percentile: float | None = None
    alpha: float | None = None  # SmoothQuant (or PEG auto's smoothed GEMM inputs): migration strength
    groups: int | str = 1  # PEG: K, or "auto" (K per tensor; see groups.py)
    permute: bool = False
    permutation: list[int] | None = None  # residual-stream channel order (PEG with permutation)
    fallback: list[str] = field(default_factory=list)  # sites kept in high precision
    calibration: dict[str, Any] = field(default_factory=dict)  # data, its sha256, samples, padding…
    model: dict[str, Any] = field(default_factory=dict)  # the FP32 ONNX it was computed on
    versions: dict[str, str] = field(default_factory=dict)
    weights: str = "int8 symmetric per output channel, amax/127 (computed at emission from the weights)"

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: Path | str) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> "Recipe":
        data = read_json(path, "recipe")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise QbertError(f"{path} is not a qbert recipe (format {data.get('format')!r})"
                             if isinstance(data, dict) else f"{path} is not a qbert recipe")
        data.pop("format")
        try:
            data["sites"] = {k: SiteScale(**v) for k, v in data["sites"].items()}
            recipe = cls(**data)
        except (TypeError, KeyError, AttributeError) as e:
            raise QbertError(f"{path}: malformed recipe ({e})") from None
        recipe.validate(str(path))
        return recipe

    def validate(self, where: str = "recipe") -> None:
        """The rules the CLI applies to its flags, applied to a recipe (which may come from a file): known
        method/placement, finite positive clip values, PEG groups that tile the channels, a true permutation."""
        from qbert.calibration.methods import METHODS
        from qbert.calibration.placement import PLACEMENTS, placement_name

        self.placement = placement_name(self.placement)  # recipes written when `gemm` was called `trt`

        if self.method not in (*METHODS, "none"):
            raise QbertError(f"{where}: unknown method {self.method!r} (one of {', '.join(METHODS)})")
        if self.placement not in PLACEMENTS:
            raise QbertError(f"{where}: unknown placement {self.placement!r} (one of {', '.join(PLACEMENTS)})")
        if (self.method == "percentile" or self.percentile is not None) and not (
                isinstance(self.percentile, (int, float)) and not isinstance(self.percentile, bool)
                and 0 < self.percentile <= 100):
            raise QbertError(f"{where}: percentile {self.percentile!r} must be in (0, 100]")
        if self.groups != "auto" and (not isinstance(self.groups, int) or isinstance(self.groups, bool)
                                      or not 1 <= self.groups <= 4096):
            raise QbertError(f"{where}: groups {self.groups!r} must be an integer in [1, 4096] or auto")
        for name in ("model", "calibration", "versions"):
            if not isinstance(getattr(self, name), dict):
                raise QbertError(f"{where}: {name} must be a JSON object, not {type(getattr(self, name)).__name__}")
        if self.method != "none" and not isinstance(self.model.get("sha256"), str):
            raise QbertError(f"{where}: no model.sha256, so it cannot be matched to a model; recalibrate")
        if not isinstance(self.fallback, list) or not all(isinstance(k, str) for k in self.fallback):
            raise QbertError(f"{where}: fallback must be a list of site keys")
        for key, site in self.sites.items():
            if not isinstance(site.tensor, str):
                raise QbertError(f"{where}: site {key} has no tensor name")
            values = [site.amax, *(site.group_amax or [])]
            if not all(_positive(v) for v in values):
                raise QbertError(f"{where}: site {key} has clip value(s) {values}; each must be a finite number "
                                 "> 0 — recalibrate")
            if site.bounds is not None or site.group_amax is not None:
                bounds = site.bounds or []
                tiled = bool(bounds) and all(isinstance(b, list) and len(b) == 2 and all(
                    isinstance(x, int) and not isinstance(x, bool) for x in b) and b[0] < b[1] for b in bounds) and \
                    [b[0] for b in bounds[1:]] == [b[1] for b in bounds[:-1]] and bounds[0][0] == 0
                if not tiled or len(bounds) != len(site.group_amax or []):
                    raise QbertError(f"{where}: site {key} has PEG groups {site.bounds} that do not tile its "
                                     "channels with one clip value each — recalibrate")
            if site.smooth is not None and (not isinstance(site.smooth, list) or not site.smooth or site.bounds
                                            or not all(_positive(v) for v in site.smooth)):
                raise QbertError(f"{where}: site {key} has smoothing factors that are not a list of finite "
                                 "numbers > 0 (or sits on PEG groups) — recalibrate")
        smoothed = any(site.smooth is not None for site in self.sites.values())
        if smoothed and self.method not in ("smoothquant", "peg"):
            raise QbertError(f"{where}: method {self.method} with smoothing factors on some sites — recalibrate")
        if self.method == "smoothquant" and self.placement != "gemm":
            raise QbertError(f"{where}: method smoothquant applies to the gemm placement, not {self.placement} — "
                             "recalibrate")
        if (self.method == "smoothquant" or smoothed) and not (isinstance(self.alpha, (int, float)) and not
                                                               isinstance(self.alpha, bool) and 0 <= self.alpha <= 1):
            raise QbertError(f"{where}: smoothing alpha {self.alpha!r} must be in [0, 1]")
        if any(site.bounds is not None for site in self.sites.values()) and self.method != "peg":
            raise QbertError(f"{where}: method {self.method} with PEG groups on some sites — recalibrate")
        if self.permutation is not None and not self.permute:
            raise QbertError(f"{where}: a permutation with permute false — recalibrate")
        if self.permutation is not None and (not isinstance(self.permutation, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in self.permutation)):
            raise QbertError(f"{where}: permutation must be a list of channel indices")
        if self.permutation is not None and sorted(self.permutation) != list(range(len(self.permutation))):
            raise QbertError(f"{where}: permutation is not a permutation of 0…{len(self.permutation) - 1}")

    def check_fits(self, meta: dict[str, Any], site_keys: list[str], stream_keys: list[str] | None = None,
                   where: str = "recipe") -> None:
        """Refuse a recipe computed on another model: its FP32 hash, hidden size and sites must match; PEG groups
        only on residual-stream tensors (the only ones in the stream's channel order)."""
        want = self.model.get("sha256")
        if want and meta.sha256 and want != meta.sha256:
            raise QbertError(f"{where} was calibrated on another model (sha256 {want[:12]}…, this ONNX is "
                             f"{meta.sha256[:12]}…); recalibrate on this one or pass the model it names "
                             f"({self.model.get('onnx')})")
        hidden = meta.hidden_size
        widths = {b[-1][1] for s in self.sites.values() if s.bounds for b in [s.bounds]}
        if hidden and (widths - {hidden} or (self.permutation is not None and len(self.permutation) != hidden)):
            raise QbertError(f"{where}: PEG groups/permutation are for hidden size "
                             f"{next(iter(widths - {hidden}), len(self.permutation or []))}, this model has "
                             f"{hidden}; recalibrate")
        if stream_keys is not None:
            off_stream = [k for k, v in self.sites.items() if v.bounds is not None and k not in stream_keys]
            if off_stream:
                raise QbertError(f"{where}: PEG groups on {off_stream[:3]}, which are not residual-stream tensors; "
                                 "recalibrate")
        unknown = [k for k in [*self.sites, *self.fallback] if k not in site_keys]
        if unknown:
            raise QbertError(f"{where}: sites {unknown[:4]}{' …' if len(unknown) > 4 else ''} are not in this "
                             f"model's {self.placement} placement; recalibrate on this model")
        missing = [k for k in site_keys if k not in self.sites and k not in self.fallback]
        if missing and self.method != "none":
            raise QbertError(f"{where}: this model's {self.placement} placement has sites the recipe does not "
                             f"cover ({missing[:4]}{' …' if len(missing) > 4 else ''}); recalibrate on this model")


FLOAT32_MAX = 3.4028234663852886e38


def _positive(v: Any) -> bool:
    """A usable clip value: a finite number > 0 that survives the cast to a float32 scale."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v < FLOAT32_MAX
