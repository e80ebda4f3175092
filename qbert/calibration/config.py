"""How to calibrate, as one object: CalibrationConfig is checked once (`validate`, whose errors name the field)
and then travels whole — from the command line, the Python API and `reproduce` — to `calibrate`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from qbert import arguments as arg
from qbert.calibration.targets import TARGETS
from qbert.errors import ConfigError, check_range


@arg.keyword_checked
@dataclass
class CalibrationConfig:
    """How to calibrate. Every field is checked by `validate()`, whose errors name the field.

    data: calibration rows (anything `load_data` takes) — never the evaluation split.
    method: a registered method (methods.METHODS: minmax, percentile, mse, entropy, peg, smoothquant), or auto: try
    them × both placements on held-out
    calibration rows and keep the fastest whose drop's one-sided 95 % upper bound is within `budget` points
    (default 0.3) of FP32 — for `target` (ort-cpu, openvino: timed here; trt: fewest INT8 GEMMs) — and of the
    equally fast, the most faithful to FP32 (select.RULE).
    placement: gemm (GEMM inputs, what TensorRT fuses) or full (the study's W8A8). groups/permute: PEG.
    alpha: smoothquant's migration strength (0: none, 1: all of each input channel's range into the weights); also
        for the GEMM inputs that peg with groups "auto" smooths instead of splitting into one GEMM per group.
    fallback: site keys, globs or roles kept in high precision.
    auto_fp16/budget: keep the most sensitive sites in high precision until the drop's one-sided 95 % upper bound
    is within `budget` points (default 0.5) of FP32 on held-out calibration rows. heldout: how many (more rows
    shrink the noise a small budget must clear: the SE of a paired difference is ≈ √(flip rate / rows)). Both
    need labels; `label2id` maps them, default the model's own. exact: those two judge candidates with ORT's
    non-saturating x86 INT8 kernels (what an AVX-512 VNNI / AMX CPU computes) instead of this CPU's default ones.
    asymmetric: quantize each per-tensor activation over the part of its clip range the data reached (UINT8 with a
    zero point; grids.py) — ort-cpu and openvino run it at the same speed, TensorRT (symmetric only) refuses it."""

    data: Any
    method: str = "minmax"
    placement: str = "gemm"
    samples: int = 512
    percentile: float = 99.99
    groups: int | str = 4  # PEG: K groups per stream tensor, or "auto" (K per tensor from its channel ranges)
    permute: bool = True
    alpha: float = 0.85  # smoothquant, and peg groups="auto" (smooth.ALPHA)
    include_padding: bool = False
    fallback: list[str] = field(default_factory=list)
    batch_size: int | None = None
    threads: int | None = None
    seed: int = 0
    auto_fp16: bool = False
    budget: float | None = None
    heldout: int | None = None  # rows the budget is judged on (default 1,000)
    label2id: dict[str, int] | None = None
    target: str = "ort-cpu"
    exact: bool = False
    asymmetric: bool = False

    def validate(self) -> "CalibrationConfig":
        from qbert.calibration.methods import AUTO, REGISTRY, Settings, method
        from qbert.calibration.placement import PLACEMENTS, placement_name

        if self.data is None or isinstance(self.data, (int, float)):
            raise ConfigError("data", self.data, "give a .tsv/.jsonl path, a datasets spec, a Dataset or rows")
        arg.choice("method", self.method, (*REGISTRY, AUTO))
        arg.choice("target", self.target, tuple(TARGETS))
        arg.choice("placement", placement_name(self.placement) if isinstance(self.placement, str) else self.placement,
                PLACEMENTS)
        self.placement = placement_name(self.placement)
        check_range("samples", self.samples, 1)
        check_range("seed", self.seed, 0)
        for name in ("permute", "include_padding", "auto_fp16"):
            arg.flag(name, getattr(self, name))
        arg.label_ids("label2id", self.label2id)
        if self.groups != "auto":
            check_range("groups", self.groups, 1)
        check_range("batch_size", self.batch_size, 1, optional=True)
        check_range("threads", self.threads, 1, optional=True)
        check_range("heldout", self.heldout, 1, optional=True)
        check_range("percentile", self.percentile, integer=False)
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError("percentile", self.percentile, "must be in (0, 100]")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError("alpha", self.alpha, "must be a number in [0, 1]")
        if self.method != AUTO:
            method(self.method).validate(Settings.of(self))
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, (int, float))
                                        or not math.isfinite(self.budget) or self.budget < 0):
            raise ConfigError("budget", self.budget, "must be a finite number ≥ 0 (accuracy points)")
        if not isinstance(self.exact, bool):
            raise ConfigError("exact", self.exact, "must be True or False")
        if self.exact and not self.searches:
            raise ConfigError("exact", self.exact, "applies to {method=} and {auto_fp16} (the only steps that run "
                              "an INT8 model while calibrating)", method="auto", auto_fp16=True)
        if self.exact and TARGETS[self.target].judged_on != "ort-cpu" and not self.auto_fp16:
            raise ConfigError("exact", self.exact, "selects ONNX Runtime's x86 INT8 kernels, and {method=} for "
                              f"{{target=}} scores and times its candidates on {TARGETS[self.target].runtime}: leave "
                              "it out", method=AUTO, target=self.target)
        if self.method == AUTO and self.auto_fp16 is True:
            raise ConfigError("auto_fp16", self.auto_fp16, "searches held-out rows, as {method=} does: use one of "
                              "them", method=AUTO, auto_fp16=True)
        if not isinstance(self.asymmetric, bool):
            raise ConfigError("asymmetric", self.asymmetric, "must be True or False")
        if self.asymmetric and self.method == AUTO and not TARGETS[self.target].takes_grids:
            raise ConfigError("asymmetric", self.asymmetric, f"target {self.target} runs symmetric INT8 only; leave "
                              "it out")
        if not isinstance(self.fallback, list) or not all(isinstance(f, str) for f in self.fallback):
            raise ConfigError("fallback", self.fallback, "must be a list of site keys, globs or roles")
        self._refuse_unused()
        return self

    def _refuse_unused(self) -> None:
        """A field set away from its default that this method would not read is refused, as the CLI refuses the
        flag: a silently ignored `groups=8` or `target='trt'` reads like a setting that took effect."""
        from qbert.calibration.methods import AUTO, REGISTRY, Settings

        search = self.searches
        settings = Settings.of(self)
        # (permute=False with another method asks for what happens anyway, as the CLI's --no-permute: not refused)
        used = {name: self.method in REGISTRY and REGISTRY[self.method].reads_field(name, settings)
                for name in ("groups", "percentile", "alpha")}
        used |= {"budget": search, "heldout": search, "label2id": search,
                 "target": self.method == AUTO}  # emission takes its own target: quantize(…, target=…)
        defaults = {f.name: f.default for f in fields(self)}
        for name, applies in used.items():
            if not applies and getattr(self, name) != defaults[name]:
                why = {"target": "applies to method 'auto' (which scores candidates for it); give the target to "
                                 "quantize()",
                       "budget": "applies to method 'auto' and auto_fp16", "heldout": "applies to method 'auto' "
                       "and auto_fp16", "label2id": "applies to method 'auto' and auto_fp16 (they score labelled "
                       "rows)"}.get(name, f"does nothing with method {self.method!r}")
                raise ConfigError(name, getattr(self, name), why + "; leave it at its default")
        if self.method == AUTO and self.placement != "gemm":
            raise ConfigError("placement", self.placement, "method 'auto' tries both placements; leave it out")

    @property
    def searches(self) -> bool:
        """Method auto or auto_fp16: the steps that run INT8 candidates on labelled held-out rows."""
        from qbert.calibration.methods import AUTO

        return self.method == AUTO or self.auto_fp16


@dataclass(frozen=True)
class Search:
    """The search config: what method auto and auto mixed precision read, resolved for the model — the budget
    (default by what judges: 0.3 accuracy points for method auto, 0.5 for auto_fp16, 2 points of FP32's top-10
    neighbours for an embedding model; judge.py), the held-out rows (default 1,000), the target candidates are
    judged for, whether they run on ORT's exact INT8 kernels, and whether they use asymmetric grids."""
    budget: float
    heldout: int
    target: str
    exact: bool
    asymmetric: bool = False

    @classmethod
    def of(cls, config: CalibrationConfig, embedding: bool = False) -> "Search":
        from qbert.calibration.judge import AUTO_BUDGET, EMBEDDING_BUDGET, FP16_BUDGET
        from qbert.calibration.methods import AUTO

        default = EMBEDDING_BUDGET if embedding else AUTO_BUDGET if config.method == AUTO else FP16_BUDGET
        return cls(default if config.budget is None else config.budget, config.heldout or 1000, config.target,
                   config.exact, config.asymmetric)
