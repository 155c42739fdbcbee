"""Helpers shared by the benchmark scripts: results.json, the machine and commit, peak RSS, names-stripped news."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results.json"
# The outlets' names and bylines in NewsArticles' texts: "names-stripped" news removes them from
# the test texts, so a model must tell the outlets apart by what they write, not who they say they are.
STRIP = re.compile(
    r"\(CNN\)|/TASS/|chinadaily\.com\.cn|China Daily|Huffington Post|Share this slide:|"
    r"Al Jazeera|ABC News|Learn more|HuffPost|CNN|TASS|BBC|DW|RTE"
)


def commit() -> str:
    """The commit a figure was measured at: HEAD, short."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH
    ).stdout.strip()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def today() -> str:
    return time.strftime("%Y-%m-%d")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def update_results(section: str, values: dict, meta: dict, measured: Iterable[str] | None = None) -> None:
    """Set the keys of `values` in one top-level section of bench/results.json, keeping the rest;
    `_meta["section.key"]` records how each was measured (command, date, machine). `measured`
    names the dotted keys this run measured, where `values` also carries older figures."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault(section, {}).update(values)
    for key in values if measured is None else measured:
        results.setdefault("_meta", {})[f"{section}.{key}"] = meta
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(RESULTS)


def strip_names(text: str) -> str:
    return STRIP.sub("", text)
