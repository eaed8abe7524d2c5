"""Named points in the lifecycle code where a test injects a race or a crash, deterministically.

Production code calls :func:`point` at every window that matters (between measuring coverage and the
flip, between two UNLINK batches of the janitor, before the manifest's ``os.replace``...). Nothing is
registered outside tests, so a point costs one dict lookup. A test registers a callback that runs
another actor's operation right there (a race) or ``os.kill(os.getpid(), SIGKILL)`` (a crash).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_HOOKS: dict[str, Callable[[], None]] = {}


def point(name: str) -> None:
    fn = _HOOKS.get(name)
    if fn is not None:
        fn()


def set_hook(name: str, fn: Callable[[], None] | None) -> None:
    if fn is None:
        _HOOKS.pop(name, None)
    else:
        _HOOKS[name] = fn


@contextmanager
def injected(name: str, fn: Callable[[], None], *, once: bool = True) -> Iterator[None]:
    """Run ``fn`` at point ``name`` (only the first time when ``once``) inside the block."""
    fired = []

    def hook() -> None:
        if once and fired:
            return
        fired.append(True)
        fn()

    set_hook(name, hook)
    try:
        yield
    finally:
        set_hook(name, None)
