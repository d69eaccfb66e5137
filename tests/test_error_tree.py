"""The exception tree drawn in router/errors.py's docstring is the tree the classes form."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from router import errors
from router.errors import RerankRouterError

ROOT = Path(__file__).resolve().parents[1]
# One drawn line: tree glyphs, a class name, its bases from outside the tree, then an optional comment.
LINE = re.compile(r"^(?P<prefix>[│├└─ ]*)(?P<name>\w+)(?P<extra> \([\w, ]+\))?(?:\s{2,}\S.*)?$")


def drawn_tree(doc: str) -> list[str]:
    """The drawing in ``doc`` (its indented block from the root's line), comments removed."""
    lines = doc.splitlines()
    start = lines.index(f"    {RerankRouterError.__name__}")
    out = []
    for line in lines[start:]:
        if not line.strip():
            break
        match = LINE.match(line.removeprefix("    "))
        assert match is not None, f"not a tree line: {line!r}"
        out.append(match["prefix"] + match["name"] + (match["extra"] or ""))
    return out


def tree_of(root: type[BaseException], module: str = "router.errors") -> list[str]:
    """``root`` and the subclasses defined in ``module``, drawn the way httpx draws its tree: in the
    order they are defined, with their bases from outside the tree in parentheses."""
    order = list(vars(errors))

    def label(cls: type[BaseException], parent: type[BaseException] | None) -> str:
        extra = [b.__name__ for b in cls.__bases__ if b is not parent and b is not Exception]
        return cls.__name__ + (f" ({', '.join(extra)})" if extra else "")

    def children(cls: type[BaseException]) -> list[type[BaseException]]:
        found = [c for c in cls.__subclasses__() if c.__module__ == module]
        return sorted(found, key=lambda c: order.index(c.__name__))

    def below(cls: type[BaseException], prefix: str) -> list[str]:
        lines: list[str] = []
        kids = children(cls)
        for i, child in enumerate(kids):
            last = i == len(kids) - 1
            lines.append(prefix + ("└── " if last else "├── ") + label(child, cls))
            lines += below(child, prefix + ("    " if last else "│   "))
        return lines

    return [label(root, None), *below(root, "")]


def test_the_docstring_draws_the_tree_the_classes_form():
    assert errors.__doc__ is not None
    assert drawn_tree(errors.__doc__) == tree_of(RerankRouterError)


def test_every_error_class_is_in_the_tree_once():
    classes = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, RerankRouterError) and value.__module__ == errors.__name__
    }
    names = [line.split("── ")[-1].split(" ")[0] for line in tree_of(RerankRouterError)]
    assert sorted(names) == sorted(c.__name__ for c in classes)
    assert set(errors.__all__) == set(names)
    for cls in classes - {RerankRouterError}:
        # One parent in the tree: a second router base would make the drawing lie.
        assert sum(issubclass(b, RerankRouterError) for b in cls.__bases__) == 1, cls.__name__


def test_no_error_class_is_defined_outside_router_errors():
    """An error class defined elsewhere would be missing from the drawing (and from the walk above,
    which sees only imported modules), so the source is read instead."""
    names = set(errors.__all__)
    strays = []
    for path in sorted([*(ROOT / "router").rglob("*.py"), *(ROOT / "policies").rglob("*.py")]):
        if path == ROOT / "router" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases}
                if bases & names:
                    strays.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert strays == []


def test_a_drifted_drawing_fails():
    # The drawing as it had drifted: DuplicateIdError and TooManyDocumentsError one level too high.
    assert errors.__doc__ is not None
    drifted = errors.__doc__.replace("│   │   ├── DuplicateIdError", "│   ├── DuplicateIdError").replace(
        "│   │   └── TooManyDocumentsError", "│   ├── TooManyDocumentsError"
    )
    assert drifted != errors.__doc__
    assert drawn_tree(drifted) != tree_of(RerankRouterError)


def test_classes_from_other_modules_stay_out_of_the_drawing():
    class ProbeError(errors.BackendError):
        pass

    assert ProbeError.__name__ not in "\n".join(tree_of(RerankRouterError))


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("    ├── ConfigError (ValueError)              bad configuration", "├── ConfigError (ValueError)"),
        ("    │   └── MissingDependencyError (ImportError)   an optional extra", "│   └── MissingDependencyError (ImportError)"),
        ("    │   ├── EmptyQueryError", "│   ├── EmptyQueryError"),
    ],
)
def test_drawn_lines_parse(line, parsed):
    assert drawn_tree(f"    RerankRouterError\n{line}\n") == ["RerankRouterError", parsed]
