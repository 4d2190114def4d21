"""Sphinx extension: the API reference of the book (``book/api/*.md``), built offline by autodoc.

Each page of ``book/api/`` documents one public module of advlib with ``.. automodule:: NAME``
and ``:members:``, i.e. what the module's ``__all__`` exports, in that order (the options are in
``_config.yml``). With no network there is no intersphinx inventory for torch, numpy or the
standard library, and the book builds in nitpicky mode (``-n``), so this extension decides what
happens to a cross-reference that Sphinx cannot resolve by itself:

* it names an advlib object documented in the reference under another path (a docstring writes
  ``:func:`advlib.verify.semantic.rotation_box``` or a relative ``:func:`reverse_weibull_fit``,
  the reference documents ``advlib.verify.rotation_box``): it links there;
* in a docstring, it names an object that exists but is not documented (torch.Tensor, numpy,
  pathlib, a private helper or result type of advlib): it is shown as text, without a link;
* it names nothing that can be imported (a typo, a renamed function), or a lecture links an
  object the reference does not document: Sphinx's warning stays, and ``-W`` fails the build.

An object exported by several documented modules (``advlib.attacks.margin`` is
``advlib.threat.margin``) is described once, in its home module (the documented module it is
defined in); the other pages say where it is described instead of repeating its docstring.

``documented_modules()`` and ``api_objects()`` are also used by the tests (tests/test_book.py,
tests/test_api_links.py).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
from pathlib import Path

API = Path(__file__).resolve().parent.parent / "api"
# `.. automodule:: NAME` and `.. autofunction:: NAME` (or autoclass / autodata) in a page
_DIRECTIVE = re.compile(r"^\s*\.\.\s+auto(module|function|class|data|exception)::\s*(\S+)\s*$", re.M)
_FROM_DOCSTRING = re.compile(r"docstring of (\S+?)(?::\d+)?$")


def _directives(api_dir: Path = API) -> list[tuple[str, str, str]]:
    """(kind, dotted name, page stem) of every autodoc directive of the API pages."""
    found = []
    for page in sorted(api_dir.glob("*.md")):
        found += [(kind, name, page.stem) for kind, name in _DIRECTIVE.findall(page.read_text())]
    return found


def documented_modules(api_dir: Path = API) -> dict[str, str]:
    """Module documented with ``automodule`` -> the stem of its page."""
    return {name: stem for kind, name, stem in _directives(api_dir) if kind == "module"}


def lookup(dotted: str):
    """The object a dotted path names, as Python reads ``a.b.c`` (so ``advlib.attacks.pgd`` is the
    function, not the submodule of that name), except that a submodule hidden by an attribute of
    its package is still reached (``advlib.verify.clever.reverse_weibull_fit``: ``clever`` is also a
    function). Raises ``LookupError`` if nothing is there."""
    parts = dotted.split(".")
    try:
        obj = importlib.import_module(parts[0])
    except ImportError:
        raise LookupError(dotted) from None
    for i, name in enumerate(parts[1:], 1):
        parent = ".".join(parts[:i])
        for owner in (obj, sys.modules.get(parent)):
            if owner is not None and hasattr(owner, name):
                obj = getattr(owner, name)
                break
        else:
            try:
                obj = importlib.import_module(f"{parent}.{name}")  # a submodule not imported yet
            except ImportError:
                raise LookupError(dotted) from None
    return obj


def api_objects(api_dir: Path = API) -> dict[str, object]:
    """Every dotted path the reference documents -> its object: each documented module, each name
    of its ``__all__``, each explicitly documented function or class, and the methods and
    attributes of the documented classes (``undoc-members``: all of them but the private ones)."""
    out = {}
    for kind, name, _ in _directives(api_dir):
        obj = lookup(name)
        out[name] = obj
        if kind == "module":
            for member in getattr(obj, "__all__", []):
                if member.startswith("__"):
                    continue
                value = getattr(obj, member)
                if inspect.ismodule(value):  # a subpackage in __all__: it has its own page
                    continue
                out[f"{name}.{member}"] = value
    for path, value in list(out.items()):
        if isinstance(value, type) and getattr(value, "__module__", "").startswith("advlib"):
            names = [*getattr(value, "__dataclass_fields__", {}), *vars(value)]
            for attr in dict.fromkeys(n for n in names if not n.startswith("_")):
                out[f"{path}.{attr}"] = vars(value).get(attr)
    return out


def home(obj, documented: dict[str, object]) -> str | None:
    """The documented path of ``obj`` in its home module: the documented module that the object is
    defined in (the longest such prefix of ``obj.__module__``); else its first documented path."""
    if not hasattr(obj, "__qualname__") and not isinstance(obj, type(sys)):
        return None  # data: small ints and strings are shared objects, identity means nothing
    paths = [p for p, v in documented.items() if v is obj]
    if not paths:
        return None
    defined_in = getattr(obj, "__module__", "") or ""

    def depth(path):
        module = path.rpartition(".")[0]
        inside = defined_in == module or defined_in.startswith(module + ".")
        return len(module) if inside else -1

    return max(paths, key=depth)


class _State:
    documented: dict[str, object] | None = None


def _documented() -> dict[str, object]:
    if _State.documented is None:
        _State.documented = api_objects()
    return _State.documented


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


_LIST_ITEM = re.compile(r"^\s*([-*+]|\d+[.)]|#\.)\s")


def formulas_as_literal(lines: list[str]) -> list[str]:
    """The docstrings write formulas and examples as plain text, indented under the sentence that
    introduces them (what ``help()`` shows). reST would make that a quotation and reflow it (and
    read ``|a + b|`` as a substitution): make it a plain-text code block, verbatim as written.
    Left alone: blocks already introduced by ``::``, lists, fields and directives."""
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        text = line.rstrip()
        if (text and not text.endswith("::") and not text.lstrip().startswith((":", ".."))
                and i + 2 < len(lines) and not lines[i + 1].strip() and lines[i + 2].strip()
                and _indent(lines[i + 2]) > _indent(line) and not _LIST_ITEM.match(lines[i + 2])
                and not _LIST_ITEM.match(line)):
            out += ["", " " * _indent(line) + ".. code-block:: text"]
    return out


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = formulas_as_literal(lines)
    if what != "module":
        _describe_once(name, obj, lines)


def _factory_defaults(app, what, name, obj, options, signature, return_annotation):
    """A dataclass field with a ``default_factory`` shows as ``= <factory>``, which is not Python:
    Sphinx then gives up parsing the whole signature and prints ``~torch.Tensor`` raw. Show what the
    factory makes instead (``= []``), or ``...`` when that is long."""
    if not signature or "<factory>" not in signature or not dataclasses.is_dataclass(obj):
        return None
    made = []
    for f in dataclasses.fields(obj):
        if f.init and f.default_factory is not dataclasses.MISSING:
            try:
                text = repr(f.default_factory())
            except Exception:  # noqa: BLE001 - only cosmetics are at stake
                text = "..."
            made.append(text if len(text) <= 30 else "...")
    parts = signature.split("<factory>")
    if len(parts) - 1 != len(made):
        made = ["..."] * (len(parts) - 1)
    return "".join(p + m for p, m in zip(parts, made + [""], strict=True)), return_annotation


def _data_documenter():
    """autodoc documents a module's constants only where they are assigned, so a constant that a
    package re-exports (``advlib.PROFILES``, ``advlib.attacks.NORMS``) would silently vanish from its
    page although ``__all__`` names it. This documenter takes them too: with the ``#:`` comment of
    the module that assigns them, or, when that module has its own page, a pointer to it; and
    without printing a value longer than a line (a dict of profiles)."""
    from sphinx.errors import PycodeError
    from sphinx.ext.autodoc import DataDocumenter, ModuleDocumenter
    from sphinx.pycode import ModuleAnalyzer
    from sphinx.util.inspect import object_description

    def comment(module: str, attr: str) -> list[str] | None:
        try:
            analyzer = ModuleAnalyzer.for_module(module)
            analyzer.analyze()
        except PycodeError:
            return None
        return list(analyzer.attr_docs.get(("", attr), [])) or None

    class ExportedDataDocumenter(DataDocumenter):
        @classmethod
        def can_document_member(cls, member, membername, isattr, parent):
            exported = membername in (getattr(parent.object, "__all__", None) or ())
            plain = not (callable(member) or inspect.ismodule(member))
            return isinstance(parent, ModuleDocumenter) and (isattr or exported and plain)

        def get_doc(self):
            attr = self.objpath[-1]
            own = comment(self.modname, attr)
            if own:
                return [own]
            pages = documented_modules()
            for name, module in sorted(sys.modules.items()):
                if (name.startswith("advlib") and name != self.modname and module is not None
                        and getattr(module, attr, None) is self.object and comment(name, attr)):
                    if name in pages:
                        return [[f"The same object as :py:data:`{name}.{attr}`, described there.", ""]]
                    return [comment(name, attr)]
            return []

        def should_suppress_value_header(self):
            try:
                long = len(object_description(self.object)) > 80
            except ValueError:
                long = True
            return long or super().should_suppress_value_header()

    return ExportedDataDocumenter


def _describe_once(name, obj, lines):
    """On the page of a module that re-exports an object described elsewhere: say where."""
    documented = _documented()
    there = home(obj, documented) if name in documented else None
    if there and there != name:
        lines[:] = [f"The same object as :py:obj:`{there}`, described there.", ""]


def _source(node) -> str:
    """Where a node comes from (signature nodes have no source of their own: their parent's)."""
    while node is not None and not node.source:
        node = node.parent
    return node.source if node is not None else ""


def _candidates(target: str, node) -> list[str]:
    """Full paths a possibly relative target may mean, the closest scope first."""
    if target.startswith("advlib."):
        return [target]
    scopes = []
    where = _FROM_DOCSTRING.search(_source(node))  # autodoc: "FILE:docstring of advlib.x.y"
    if where:  # the documented object and its parents, then the modules they are defined in
        parts = where[1].split(".")
        prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        scopes += prefixes
        for prefix in prefixes:
            try:
                defined_in = getattr(lookup(prefix), "__module__", None)
            except LookupError:
                continue
            if defined_in:
                scopes += [".".join(defined_in.split(".")[:i]) for i in range(defined_in.count(".") + 1, 0, -1)]
    for key in ("py:class", "py:module"):
        if node.get(key):
            scopes.append(node[key])
    return [f"{s}.{target}" for s in dict.fromkeys(scopes)] + [target]


def _missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    in_docstring = "docstring of" in _source(node)
    documented = _documented()
    domain = env.get_domain("py")
    for path in _candidates(target, node):
        try:
            obj = lookup(path)
        except LookupError:
            continue
        there = home(obj, documented)
        if there is not None and there != target:
            new = node.deepcopy()
            new["reftarget"] = there
            resolved = domain.resolve_any_xref(env, node["refdoc"], app.builder, there, new, contnode)
            if resolved:
                return resolved[0][1]
        if in_docstring:  # exists, not documented (torch.Tensor, a private helper): plain text
            return contnode
        return None  # a lecture links an undocumented object: keep the warning
    return None


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("autodoc-process-signature", _factory_defaults)
    app.add_autodocumenter(_data_documenter(), override=True)
    app.connect("missing-reference", _missing_reference, priority=900)  # after the domains' own
    return {"parallel_read_safe": True, "parallel_write_safe": True}
