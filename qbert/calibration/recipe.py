"""The calibration recipe: everything needed to re-emit a Q/DQ graph for any target without recalibrating."""
from __future__ import annotations

import math
import numbers
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from qbert.atomic import content_checksum, read_json, write_json
from qbert.calibration.site_scale import SiteScale
from qbert.errors import QbertError

__all__ = ["Recipe", "SiteScale"]

FORMAT = "qbert-recipe/1"
WEIGHTS = "int8 symmetric per output channel, amax/127 (computed at emission from the weights)"
# the calibration block's fields with their types: they are copied into every recipe emitted from this one
CALIBRATION_REPORTS = ("auto_method", "auto_fp16")  # the searches' reports, shown again on re-emission
CALIBRATION_FIELDS = {"samples": int, "batch_size": int, "max_length": int, "seed": int, "include_padding": bool,
                      "data": str, "data_sha256": str, "rows_sha256": str,
                      "inputs": str}  # "sentences": an embedding model's samples are single sentences, not pairs


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
    weights: str = WEIGHTS

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, **asdict(self)}
        for site in data["sites"].values():  # written only where used: a recipe without them reads as before
            if site.get("outliers") is None:
                site.pop("outliers", None)
        return {**data, "checksum": content_checksum(data)}

    def save(self, path: Path | str) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> "Recipe":
        if not isinstance(path, (str, Path)) or not str(path):
            from qbert.errors import ConfigError

            raise ConfigError("path", path, "Recipe.load needs the path of a recipe JSON file (a str or Path)")
        data = read_json(path, "recipe")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise QbertError(f"{path} is not a qbert recipe (format {data.get('format')!r})"
                             if isinstance(data, dict) else f"{path} is not a qbert recipe")
        checksum = data.pop("checksum", None)  # recipes written before it carry none: checked field by field only
        written_as = content_checksum(data)
        data.pop("format")
        _check_keys(data, cls, str(path))
        if not isinstance(data["sites"], dict):
            raise QbertError(f"{path}: sites must be a JSON object (site key → its scales) — recalibrate")
        for key, site in data["sites"].items():
            if not isinstance(site, dict):
                raise QbertError(f"{path}: site {key} must be a JSON object (tensor, amax…) — recalibrate")
            _check_keys(site, SiteScale, f"{path}: site {key}")
        data["sites"] = {k: SiteScale(**v) for k, v in data["sites"].items()}
        if data.get("method") == "none":  # qbert's own marker for rows with no INT8 (reproduce), never a file's
            raise QbertError(f"{path}: unknown method 'none' — a recipe file names the method it was calibrated "
                             "with; recalibrate")
        recipe = cls(**data)
        recipe.validate(str(path))
        if checksum is not None and checksum != written_as:  # every field is valid alone, yet not what was computed
            raise QbertError(f"{path} was edited after qbert wrote it (its checksum differs): its fields may no "
                             "longer describe the calibration (an alpha, a sample count, a permutation its groups "
                             "were sized for); recalibrate, or remove its \"checksum\" field to use the edit "
                             "as it is")
        return recipe

    def validate(self, where: str = "recipe") -> None:
        """The rules the CLI applies to its flags, applied to a recipe (which may come from a file): known
        method/placement, site keys of that placement, finite positive clip values, PEG groups that tile the
        channels, a true permutation, and the fields each method implies (`_check_implied`)."""
        from qbert.calibration.clips import TINY
        from qbert.calibration.methods import NONE, REGISTRY
        from qbert.calibration.placement import PLACEMENTS, is_head, is_site_key, placement_name

        if not isinstance(self.method, str) or self.method not in (*REGISTRY, NONE):
            raise QbertError(f"{where}: unknown method {self.method!r} (one of {', '.join(REGISTRY)})")
        if not isinstance(self.placement, str) or placement_name(self.placement) not in PLACEMENTS:
            raise QbertError(f"{where}: unknown placement {self.placement!r} (one of {', '.join(PLACEMENTS)})")
        self.placement = placement_name(self.placement)  # recipes written when `gemm` was called `trt`
        if not isinstance(self.permute, bool):
            raise QbertError(f"{where}: permute must be true or false, not {self.permute!r}")
        if not isinstance(self.sites, dict):
            raise QbertError(f"{where}: sites must be a JSON object (site key → its scales) — recalibrate")
        if not isinstance(self.fallback, list) or not all(isinstance(k, str) for k in self.fallback):
            raise QbertError(f"{where}: fallback must be a list of site keys")
        both = [k for k in self.fallback if k in self.sites]
        if both or len(set(self.fallback)) < len(self.fallback):
            what = (f"{both[0]!r} is both quantized (in sites) and kept in high precision (in fallback)" if both
                    else "fallback lists a site twice")
            raise QbertError(f"{where}: {what} — recalibrate")
        foreign = [k for k in [*self.sites, *self.fallback] if not is_site_key(k, self.placement)]
        if foreign:
            raise QbertError(f"{where}: {foreign[0]!r} is not a {self.placement}-placement site — recalibrate")
        if self.percentile is not None and not (
                isinstance(self.percentile, (int, float)) and not isinstance(self.percentile, bool)
                and 0 < self.percentile <= 100):
            raise QbertError(f"{where}: percentile {self.percentile!r} must be in (0, 100]")
        if self.groups != "auto" and (not isinstance(self.groups, int) or isinstance(self.groups, bool)
                                      or not 1 <= self.groups <= 4096):
            raise QbertError(f"{where}: groups {self.groups!r} must be an integer in [1, 4096] or auto")
        for name in ("model", "calibration", "versions"):
            if not isinstance(getattr(self, name), dict):
                raise QbertError(f"{where}: {name} must be a JSON object, not {type(getattr(self, name)).__name__}")
        unknown = [k for k in self.calibration if k not in (*CALIBRATION_FIELDS, *CALIBRATION_REPORTS)]
        if unknown:
            raise QbertError(f"{where}: calibration has an unknown key {unknown[0]!r} (known: "
                             f"{', '.join((*CALIBRATION_FIELDS, *CALIBRATION_REPORTS))}) — remove it or recalibrate")
        if self.weights != WEIGHTS:  # the only weight scheme emission applies: another text would be untrue
            raise QbertError(f"{where}: weights {self.weights!r} is not what qbert does ({WEIGHTS!r}); the recipe "
                             "was edited — restore the field or recalibrate")
        for name, kind in CALIBRATION_FIELDS.items():
            value = self.calibration.get(name)
            if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))
                                      or (kind is int and value < (0 if name == "seed" else 1))):
                want = {bool: "true or false", str: "a text"}.get(kind, "an integer ≥ 0" if name == "seed" else
                                                                   "a positive integer")
                raise QbertError(f"{where}: calibration.{name} {value!r} must be {want} — the recipe was edited; "
                                 "restore the field or recalibrate")
        if self.method != NONE and not isinstance(self.model.get("sha256"), str):
            raise QbertError(f"{where}: no model.sha256, so it cannot be matched to a model; recalibrate")
        for key, site in self.sites.items():
            if not isinstance(site, SiteScale):
                raise QbertError(f"{where}: site {key} is a {type(site).__name__}, not a SiteScale (tensor, amax…)")
            if not isinstance(site.tensor, str):
                raise QbertError(f"{where}: site {key} has no tensor name")
            for name in ("group_amax", "bounds", "smooth", "grid"):
                if not isinstance(getattr(site, name), (list, type(None))):
                    raise QbertError(f"{where}: site {key}: {name} must be a list (or null), not "
                                     f"{getattr(site, name)!r} — recalibrate")
            values = [site.amax, *(site.group_amax or [])]
            if not all(_positive(v, least=TINY) for v in values):  # emission would raise a smaller one to TINY
                raise QbertError(f"{where}: site {key} has clip value(s) {values}; each must be a finite number "
                                 f"> 0, from {TINY:g} (the least qbert emits) to {FLOAT32_MAX:.4g} — recalibrate")
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
            if site.outliers is not None and not (
                    isinstance(site.outliers, list) and site.outliers and site.bounds is None
                    and self.method != "peg" and not is_head(key)
                    and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in site.outliers)
                    and site.outliers == sorted(set(site.outliers))):
                raise QbertError(f"{where}: site {key} has outlier channels {site.outliers!r}; they are ascending "
                                 "distinct channel indices on a per-tensor input of a linear layer, not under "
                                 "method peg — recalibrate")
            if site.grid is not None and not _grid_ok(site):
                raise QbertError(f"{where}: site {key} has grid {site.grid!r}; an asymmetric grid is [lo, hi] with "
                                 "lo ≤ 0 ≤ hi, hi − lo ≥ 255 × 1e-8, within [-amax, amax], on a per-tensor site — "
                                 "recalibrate")
        smoothed = any(site.smooth is not None for site in self.sites.values())
        grouped = {k: s.bounds for k, s in self.sites.items() if s.bounds}
        if self.method in REGISTRY:  # the fields its method implies, and none it does not
            REGISTRY[self.method].check_recipe(self, where, smoothed, grouped)
        if self.permutation is not None and not self.permute:
            raise QbertError(f"{where}: a permutation with permute false — recalibrate")
        if self.permutation is not None and (not isinstance(self.permutation, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in self.permutation)):
            raise QbertError(f"{where}: permutation must be a list of channel indices")
        if self.permutation is not None and sorted(self.permutation) != list(range(len(self.permutation))):
            raise QbertError(f"{where}: permutation is not a permutation of 0…{len(self.permutation) - 1}")
        self._check_groups(where, grouped)

    def _check_groups(self, where: str, grouped: dict[str, list[list[int]]]) -> None:
        """PEG groups only on residual-stream tensors, as many as `groups` says, all over one channel width, in
        the permuted order when there is a permutation."""
        from qbert.calibration.placement import STREAM_ROLES, role_of

        off_stream = [k for k in grouped if role_of(k) not in STREAM_ROLES]
        if off_stream:
            raise QbertError(f"{where}: PEG groups on {off_stream[:3]}, which are not residual-stream tensors; "
                             "recalibrate")
        for key, bounds in grouped.items():
            if isinstance(self.groups, int) and len(bounds) != self.groups:
                raise QbertError(f"{where}: groups {self.groups} but site {key} has {len(bounds)} PEG groups — "
                                 "recalibrate")
        widths = sorted({b[-1][1] for b in grouped.values()})
        if len(widths) > 1:
            raise QbertError(f"{where}: PEG groups span {widths[0]} channels on one site and {widths[-1]} on "
                             "another — recalibrate")
        if self.permutation is not None and widths and len(self.permutation) != widths[0]:
            raise QbertError(f"{where}: a permutation of {len(self.permutation)} channels, but the PEG groups span "
                             f"{widths[0]} — recalibrate")
        if self.permute and self.permutation is None and grouped:
            raise QbertError(f"{where}: permute true but no permutation, so the PEG groups (in permuted channel "
                             "order) would land on the wrong channels — recalibrate")

    def check_fits(self, meta: dict[str, Any], site_keys: list[str], stream_keys: list[str] | None = None,
                   where: str = "recipe", tensors: dict[str, str] | None = None) -> None:
        """Refuse a recipe computed on another model: its FP32 hash, hidden size and sites must match; PEG groups
        only on residual-stream tensors (the only ones in the stream's channel order); each site's tensor name
        the model's tensor for that site (`tensors`: site key → tensor), as emission goes by the key and would
        ignore an edited name."""
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
        renamed = [k for k, v in self.sites.items() if tensors is not None and v.tensor != tensors.get(k, v.tensor)]
        if renamed:
            k = renamed[0]
            raise QbertError(f"{where}: site {k} names tensor {self.sites[k].tensor!r}, but this model's {k} is "
                             f"{tensors[k]!r}; recalibrate on this model (or restore the name)")
        from qbert.calibration.methods import NONE
        from qbert.calibration.placement import is_head

        # head scales are optional: a recipe written before they were recorded keeps its heads in high precision
        missing = [k for k in site_keys if k not in self.sites and k not in self.fallback and not is_head(k)]
        if missing and self.method != NONE:
            raise QbertError(f"{where}: this model's {self.placement} placement has sites the recipe does not "
                             f"cover ({missing[:4]}{' …' if len(missing) > 4 else ''}); recalibrate on this model")


def _check_keys(data: dict[str, Any], cls: type, where: str) -> None:
    """Every key `cls` needs and none it does not know, each named: a typo (`groupz`) must not pass unread, and a
    truncated file must not become a Python `__init__()` argument error."""
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise QbertError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)}) — remove it or "
                         "recalibrate")
    missing = [n for n, f in known.items() if n not in data and f.default is MISSING and
               f.default_factory is MISSING]
    if missing:
        raise QbertError(f"{where}: missing key {missing[0]!r} — recalibrate")


FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the least positive normal float32


def _positive(v: Any, least: float = FLOAT32_TINY) -> bool:
    """A usable clip value or smoothing factor: a finite number that stays itself, a positive normal float32, when
    cast into the graph (1e-300 would become 0, or be raised to a floor, without a word)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and least <= v < FLOAT32_MAX


def _grid_ok(site: SiteScale) -> bool:
    """[lo, hi] with lo ≤ 0 ≤ hi inside [-amax, amax], wide enough for a usable step ((hi − lo)/255 at least the
    least scale qbert emits: a narrower grid would put a zero or subnormal scale in the graph), per-tensor."""
    from qbert.calibration.clips import TINY

    g = site.grid
    return isinstance(g, list) and len(g) == 2 and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                        and math.isfinite(v) for v in g) \
        and -site.amax <= g[0] <= 0.0 <= g[1] <= site.amax and (g[1] - g[0]) / 255 >= TINY \
        and (site.bounds is None or site.smooth is not None)
