"""Every benchmark script imports: bench/ is not run by the suite, so a module left behind by a
refactor (an import of a helper that moved) would otherwise only fail when someone measures."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench
import bench.harness

MODULES = sorted(m.name for pkg in (bench, bench.harness) for m in pkgutil.iter_modules(pkg.__path__, f"{pkg.__name__}."))


def test_the_benchmarks_are_all_found() -> None:
    assert {"bench.fanout", "bench.assign_sim", "bench.presence_bench", "bench.harness.measure"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_each_benchmark_module_imports(name: str) -> None:
    importlib.import_module(name)
