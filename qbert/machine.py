"""The machine a number came from: CPU model and the ISA features that select ONNX Runtime's INT8 kernels (and
OpenVINO's default bf16 precision: AVX-512 BF16 or AMX).

The same Q/DQ ONNX scores and runs differently by CPU: without VNNI, ORT's x86 U8S8 GEMMs use VPMADDUBSW, whose
16-bit pair sums can saturate (and INT8 peaks near FP32's FMA rate); with AVX-512 VNNI / AVX-VNNI / AMX the
kernels accumulate in 32 bits. Every eval/bench result and reproduce report records these facts."""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

ISA = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "amx_tile")


@lru_cache(maxsize=4)
def machine(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model, logical cores, the ISA features above (Linux /proc/cpuinfo; empty elsewhere) and which
    INT8 GEMM path that implies for ONNX Runtime."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    isa = {name: name in flags for name in ISA}
    vnni = isa["avx512_vnni"] or isa["avx_vnni"] or isa["amx_int8"]
    return {"cpu": model, "logical_cores": os.cpu_count(), "isa": isa,
            "ort_int8_path": "VNNI (32-bit accumulation)" if vnni else
            "VPMADDUBSW (16-bit pair sums may saturate; no VNNI)" if flags else "unknown"}


def kernel_mode(exact: bool) -> str:
    """ORT's INT8 mode as qbert runs it: `exact` forces the non-saturating path on any x86 CPU."""
    if exact:
        return "exact (session.x64quantprecision)"
    return f"fast: {machine()['ort_int8_path']}"
