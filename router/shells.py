"""Fast constructors for frozen, slotted dataclasses built on every request.

A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__`` (its own
``__setattr__`` refuses). :func:`shell_of` makes a constructor with the same signature that fills
a plain slotted class of the same layout by attribute stores and then assigns ``__class__``
(CPython allows that between classes of one layout): the instance is of the dataclass itself,
equal, hashable, picklable and frozen as a constructed one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["shell_of"]

_FACTORY = object()
"""The default of a field with a default factory: the factory runs when the argument is left out."""


def shell_of(cls: type[Any]) -> Callable[..., Any]:
    """A constructor for the frozen, slotted dataclass ``cls`` with its ``__init__``'s signature
    (the same fields, order and defaults, default factories included; ``cls`` may have no
    post-init and no ``init=False`` field)."""
    fields = dataclasses.fields(cls)  # a TypeError unless cls is a dataclass
    assert cls.__dataclass_params__.frozen and "__slots__" in cls.__dict__
    assert not hasattr(cls, "__post_init__") and all(f.init for f in fields)
    shell = type(f"_{cls.__name__}Shell", (), {"__slots__": cls.__slots__})
    assert shell.__basicsize__ == cls.__basicsize__ and cls.__dict__.get("__weakref__") is None
    namespace: dict[str, Any] = {"_cls": cls, "_shell": shell, "_new": object.__new__, "_FACTORY": _FACTORY}
    params, body = [], ["    self = _new(_shell)"]
    for f in fields:
        if f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            body.append(f"    self.{f.name} = _factory_{f.name}() if {f.name} is _FACTORY else {f.name}")
            continue
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    self.{f.name} = {f.name}")
    # A plain function, not the shell's __init__ called through its class: cheaper, keywords most of all.
    body += ["    self.__class__ = _cls", "    return self"]
    exec(f"def new_{cls.__name__}({', '.join(params)}):\n" + "\n".join(body) + "\n", namespace)
    made: Callable[..., Any] = namespace[f"new_{cls.__name__}"]
    return made
