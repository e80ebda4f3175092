"""The calibration recipe: everything needed to re-emit a Q/DQ graph for any target without recalibrating."""
from __future__ import annotations

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


@dataclass
class Recipe:
    method: str
    placement: str
    sites: dict[str, SiteScale]
    percentile: float | None = None
    groups: int = 1
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
        if data.get("format") != FORMAT:
            raise QbertError(f"{path} is not a qbert recipe (format {data.get('format')!r})")
        data.pop("format")
        try:
            data["sites"] = {k: SiteScale(**v) for k, v in data["sites"].items()}
            return cls(**data)
        except (TypeError, KeyError, AttributeError) as e:
            raise QbertError(f"{path}: malformed recipe ({e})") from None
