"""The Lua sources of the quota scripts, shipped beside this module in the wheel."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def source(name: str) -> str:
    """The code of ``<name>.lua`` (reserve, settle, sweep, post, load, nodes).

    Whole-line comments are dropped: the settle script travels as EVAL text on
    every settle (see ``QuotaLimiter.settle_into``), so it should be short.
    """
    text = (files("hyperinfer.client.quota") / f"{name}.lua").read_text(encoding="utf-8")
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return "\n".join(line for line in lines if line.strip()) + "\n"
