"""Keep the process's model registry as it was: services started in-process register their models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def zoo_kept() -> Iterator[None]:
    from models import zoo

    before = {spec.name: spec for spec in zoo.list_models()}
    try:
        yield
    finally:
        for spec in zoo.list_models():
            if spec.name not in before:
                zoo.unregister_model(spec.name)
            elif before[spec.name] is not spec:
                zoo.register_model(before[spec.name], overwrite=True)
