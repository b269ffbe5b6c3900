"""Docstrings on everything public, and the typed-package marker."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import te

MODULES = ["te", "te._errors", "te.compat", "te.compat.datasystem", "te.compat.mooncake", "te.compat.memfabric", "te.replay", "te.bench"]


def public(obj):
    for name, member in vars(obj).items():
        if not name.startswith("_") and (inspect.isclass(member) or callable(member)):
            yield name, member


def test_everything_public_has_a_docstring():
    missing = []
    for m in MODULES:
        mod = importlib.import_module(m)
        if not (mod.__doc__ or "").strip():
            missing.append(m)
        for name, member in public(mod):
            if getattr(member, "__module__", m) not in (m, "te", "te._te"):
                continue  # imported from elsewhere
            if not (member.__doc__ or "").strip():
                missing.append(f"{m}.{name}")
            if inspect.isclass(member):
                for mname, meth in public(member):
                    if not (getattr(meth, "__doc__", None) or "").strip():
                        missing.append(f"{m}.{name}.{mname}")
    assert not missing


def test_typed_package():
    root = Path(te.__file__).parent
    assert (root / "py.typed").exists()
    assert (root / "_te.pyi").exists()
    assert "register" in (te.Engine.register.__doc__ or "")
