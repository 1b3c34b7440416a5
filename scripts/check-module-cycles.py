#!/usr/bin/env python3
"""Finds import circles between the modules of each crate in the workspace.

The crates are the src/lib.rs and src/main.rs of every member listed in the
workspace's Cargo.toml; their modules are found by following `mod` declarations
(files, `foo.rs` or `foo/mod.rs`, and inline `mod name { ... }` blocks), and a
`#[cfg(test)]` module counts as its parent, so `use super::*` in tests is no
circle. Every `crate::...` and `super::...` path outside comments and string
literals (`use` lines, grouped `use crate::{a::X, b::Y}`, paths inline in code)
is an edge to the longest module prefix it names; an edge into the module itself
or one of its descendants is ignored. A path to a name the crate root re-exports
(`pub use a::X;` in lib.rs, then `crate::X`) is an edge to the module it comes
from, so a circle through the root's re-exports is found too. Each strongly connected component of more
than one module is printed with one file:line per edge, and the exit status is 1;
otherwise one summary line is printed and the status is 0. `--self-test` checks
the script against a scratch workspace instead.
"""

import bisect
import contextlib
import io
import re
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

LITERAL = re.compile(
    r"""
      (?P<line>//[^\n]*)
    | (?P<block>/\*)
    | (?P<raw>(?<!\w)[bc]?r(?P<hashes>\#*)")
    | (?P<string>(?:(?<!\w)[bc])?")
    | (?P<char>(?:(?<!\w)b)?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F_]{1,6}\}|[^\n])|[^\\'\n])')
    """,
    re.X,
)
STRING_END = re.compile(r'(?:[^"\\]|\\.)*"', re.S)
BLOCK_EDGE = re.compile(r"/\*|\*/")
# A brace, a module declaration, or the start of a path relative to the crate or
# the parent module (`$crate` belongs to macros and is left out).
EVENT = re.compile(
    r"(?P<brace>[{}])"
    r"|\bmod\s+(?P<mod>(?:r\#)?\w+)\s*(?P<end>[;{])"
    r"|(?<![\w$])(?P<path>crate|super)\s*::"
)
IDENT = re.compile(r"(?:r\#)?\w+")
ALIAS = re.compile(r"\s*as\s+\w+")
# `pub(in crate::a)` names where an item is visible, not something it uses.
VISIBILITY = re.compile(r"\(\s*in\s*$")
REEXPORT = re.compile(r"\bpub\s+use\s+")
CFG_TEST = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]")


def blank(text):
    """`text` with comments and string and char literals turned into spaces, so
    offsets and line numbers still match the file."""
    out, at = [], 0
    while match := LITERAL.search(text, at):
        start = match.start()
        if match["line"] is not None:
            end = match.end()
        elif match["block"] is not None:
            depth, end = 1, match.end()
            while depth and (edge := BLOCK_EDGE.search(text, end)):
                depth += 1 if edge[0] == "/*" else -1
                end = edge.end()
            if depth:
                end = len(text)
        elif match["raw"] is not None:
            close = text.find('"' + match["hashes"], match.end())
            end = len(text) if close < 0 else close + 1 + len(match["hashes"])
        elif match["string"] is not None:
            rest = STRING_END.match(text, match.end())
            end = rest.end() if rest else len(text)
        else:
            end = match.end()
        out.append(text[at:start])
        out.append(re.sub(r"[^\n]", " ", text[start:end]))
        at = end
    out.append(text[at:])
    return "".join(out)


def skip_space(text, at):
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def use_tree(text, at):
    """The paths of the use tree (or plain path) starting at `at`, as lists of
    segments, and where it ends: `a::{b, c::{d, e}}` gives a::b, a::c::d, a::c::e."""
    segments = []
    while True:
        at = skip_space(text, at)
        if text.startswith("{", at):
            paths, at = [], at + 1
            while True:
                at = skip_space(text, at)
                if at >= len(text) or text[at] == "}":
                    return [segments + p for p in paths] or [segments], at + 1
                if text[at] == ",":
                    at += 1
                    continue
                inner, after = use_tree(text, at)
                paths.extend(inner)
                alias = ALIAS.match(text, after)
                # A token no use tree holds is stepped over rather than looped on.
                at = alias.end() if alias else max(after, at + 1)
        ident = IDENT.match(text, at)
        if not ident:
            return [segments], at + 1 if text.startswith("*", at) else at
        segments.append(ident[0].removeprefix("r#"))
        at = skip_space(text, ident.end())
        if not text.startswith("::", at):
            return [segments], at
        at += 2


@dataclass
class Crate:
    name: str
    # Module path (a tuple of names, () for the crate root) to the module it
    # counts as: itself, or for test modules the nearest non-test ancestor.
    counts_as: dict = field(default_factory=dict)
    # (from, to) to the first place that makes the edge, "file:line".
    edges: dict = field(default_factory=dict)
    # Path references: (module it counts as, module it is in, segments, file:line).
    refs: list = field(default_factory=list)
    # The paths the crate root re-exports (`pub use a::X;`), as segments.
    reexports: list = field(default_factory=list)


def read_module(crate, file, path, folder, counts_as, base, warnings):
    """Reads one module file: its inline modules, its file modules (recursively)
    and every crate- or super-relative path in it."""
    crate.counts_as[path] = counts_as
    text = blank(file.read_text(encoding="utf-8"))
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    if path == ():
        for found in REEXPORT.finditer(text):
            crate.reexports.extend(use_tree(text, found.end())[0])

    def place(offset):
        return f"{file.relative_to(base)}:{bisect.bisect_right(line_starts, offset)}"

    # Open inline modules: (path, counts as, folder, brace depth inside it).
    stack = [(path, counts_as, folder, 0)]
    depth, at = 0, 0
    while event := EVENT.search(text, at):
        at = event.end()
        here, here_counts_as, here_folder, _ = stack[-1]
        if event["brace"] == "{":
            depth += 1
        elif event["brace"] == "}":
            if len(stack) > 1 and stack[-1][3] == depth:
                stack.pop()
            depth -= 1
        elif event["mod"] is not None:
            name = event["mod"].removeprefix("r#")
            child = here + (name,)
            item_start = max(text.rfind(c, 0, event.start()) for c in ";{}") + 1
            test = CFG_TEST.search(text, item_start, event.start()) is not None
            child_counts_as = here_counts_as if test or here_counts_as != here else child
            if event["end"] == "{":
                depth += 1
                crate.counts_as[child] = child_counts_as
                stack.append((child, child_counts_as, here_folder / name, depth))
                continue
            candidates = [here_folder / f"{name}.rs", here_folder / name / "mod.rs"]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                warnings.append(
                    f"{place(event.start())}: mod {name}: neither "
                    + " nor ".join(str(c.relative_to(base)) for c in candidates)
                )
                continue
            child_folder = found.parent if found.name == "mod.rs" else here_folder / name
            read_module(crate, found, child, child_folder, child_counts_as, base, warnings)
        else:
            trees, at = use_tree(text, event.start())
            if not VISIBILITY.search(text, max(0, event.start() - 16), event.start()):
                for segments in trees:
                    crate.refs.append((here_counts_as, here, segments, place(event.start())))


def module_prefix(crate, target, names):
    """The longest module path `names` lead to from `target`, and what is left."""
    names = list(names)
    while names and target + (names[0],) in crate.counts_as:
        target, names = target + (names[0],), names[1:]
    return target, names


def resolve(crate):
    """Turns the crate's path references into edges between the modules they count as."""
    exported = {}
    for segments in crate.reexports:
        names = segments[1:] if segments[0] == "crate" else segments
        origin, left = module_prefix(crate, (), names)
        if origin and left:
            exported[left[-1]] = origin
    for source, here, segments, place in crate.refs:
        if segments[0] == "crate":
            target, rest = (), segments[1:]
        else:
            target, rest = here, segments
            while rest and rest[0] == "super":
                if not target:
                    break
                target, rest = target[:-1], rest[1:]
        if rest and rest[-1] == "self":
            rest = rest[:-1]
        target, rest = module_prefix(crate, target, rest)
        if target == () and rest and rest[0] in exported:
            target = exported[rest[0]]
        target = crate.counts_as.get(target, target)
        if target[: len(source)] == source:
            continue
        crate.edges.setdefault((source, target), place)


def circles(crate):
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    graph = {}
    for source, target in crate.edges:
        graph.setdefault(source, []).append(target)
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for next_node in graph.get(node, []):
            if next_node not in index:
                visit(next_node)
                low[node] = min(low[node], low[next_node])
            elif next_node in on_stack:
                low[node] = min(low[node], index[next_node])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def crates(workspace):
    """Every crate of the workspace at `workspace`, read, with its edges resolved,
    and the warnings met on the way."""
    workspace = workspace.resolve()
    manifest = tomllib.loads((workspace / "Cargo.toml").read_text(encoding="utf-8"))
    table = manifest.get("workspace", {})
    excluded = {(workspace / e).resolve() for e in table.get("exclude", [])}
    folders = []
    for member in table.get("members", ["."]):
        pattern = any(c in member for c in "*?[")
        for folder in sorted(workspace.glob(member)) if pattern else [workspace / member]:
            if folder.resolve() not in excluded and (folder / "Cargo.toml").is_file():
                folders.append(folder.resolve())
    found, warnings = [], []
    for folder in folders:
        package = tomllib.loads((folder / "Cargo.toml").read_text(encoding="utf-8"))
        name = package.get("package", {}).get("name", folder.name)
        for root, label in (("lib.rs", name), ("main.rs", f"{name} (main.rs)")):
            file = folder / "src" / root
            if file.is_file():
                crate = Crate(label)
                read_module(crate, file, (), file.parent, (), workspace, warnings)
                resolve(crate)
                found.append(crate)
    return found, warnings


def show(path):
    return "::".join(path) if path else "crate"


def check(workspace):
    """Prints the circles of `workspace` (or a summary when there are none) and
    returns the exit status."""
    found, warnings = crates(workspace)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    total = 0
    for crate in found:
        for component in circles(crate):
            total += 1
            members = set(component)
            print(f"{crate.name}: circle between {', '.join(map(show, component))}")
            for (source, target), place in sorted(crate.edges.items()):
                if source in members and target in members:
                    print(f"  {show(source)} -> {show(target)}  {place}")
    modules = sum(len(set(c.counts_as.values())) for c in found)
    edges = sum(len(c.edges) for c in found)
    scope = f"{len(found)} crates, {modules} modules, {edges} edges checked"
    if total:
        print(f"module circles: {total} ({scope})")
        return 1
    print(f"no module circles: {scope}")
    return 0


SELF_TEST_TREE = {
    "Cargo.toml": '[workspace]\nmembers = ["circles", "clean"]\n',
    "circles/Cargo.toml": '[package]\nname = "circles"\n',
    "circles/src/lib.rs": (
        "mod one;\nmod two;\nmod three;\nmod four;\nmod five;\nmod six;\n"
        "pub use five::V;\npub use six::{W, X as Y};\n"
    ),
    "circles/src/five.rs": "use crate::W;\npub struct V;\n",
    "circles/src/six.rs": "pub struct W;\nfn f() -> crate::V {}\n",
    "circles/src/one.rs": "use crate::{four::F, two::{X, Y as Z}};\n",
    "circles/src/two.rs": "pub fn f() {\n    crate::one::g();\n}\n",
    "circles/src/three.rs": "mod inner {\n    use super::super::four::F;\n}\n",
    "circles/src/four.rs": "pub struct F;\nfn g() -> super::three::inner::G {}\n",
    "clean/Cargo.toml": '[package]\nname = "clean"\n',
    "clean/src/lib.rs": "mod a;\nmod b;\npub use crate::a::A;\n",
    "clean/src/a.rs": (
        "// crate::b::B\n/* crate::b::{B} /* nested */ crate::b::B */\n"
        'const S: &str = "crate::b::B \\" crate::b::B";\n'
        'const R: &str = r#"crate::b::B " crate::b::B"#;\n'
        "const C: char = '\"';\nfn f<'a>(x: &'a str) {}\n"
        "macro_rules! m { () => { $crate::b::B } }\n"
        "pub(super) struct A;\n"
    ),
    "clean/src/b.rs": (
        "use crate::a::A;\n"
        "#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::b::{self, *};\n}\n"
    ),
}


def self_test():
    with tempfile.TemporaryDirectory() as scratch:
        workspace = Path(scratch)
        for name, text in SELF_TEST_TREE.items():
            (workspace / name).parent.mkdir(parents=True, exist_ok=True)
            (workspace / name).write_text(text, encoding="utf-8")
        found, warnings = crates(workspace)
        assert warnings == [], warnings
        by_name = {c.name: c for c in found}
        assert sorted(by_name) == ["circles", "clean"], sorted(by_name)
        clean = by_name["clean"]
        assert clean.edges == {(("b",), ("a",)): "clean/src/b.rs:1"}, clean.edges
        report = io.StringIO()
        with contextlib.redirect_stdout(report):
            assert check(workspace) == 1
        assert report.getvalue() == (
            "circles: circle between five, six\n"
            "  five -> six  circles/src/five.rs:1\n"
            "  six -> five  circles/src/six.rs:2\n"
            "circles: circle between four, three::inner\n"
            "  four -> three::inner  circles/src/four.rs:2\n"
            "  three::inner -> four  circles/src/three.rs:2\n"
            "circles: circle between one, two\n"
            "  one -> two  circles/src/one.rs:1\n"
            "  two -> one  circles/src/two.rs:2\n"
            "module circles: 3 (2 crates, 11 modules, 8 edges checked)\n"
        ), report.getvalue()
        (workspace / "Cargo.toml").write_text('[workspace]\nmembers = ["clean"]\n')
        report = io.StringIO()
        with contextlib.redirect_stdout(report):
            assert check(workspace) == 0
        assert report.getvalue() == (
            "no module circles: 1 crates, 3 modules, 1 edges checked\n"
        ), report.getvalue()
    print("self-test passed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif len(sys.argv) <= 2:
        default = Path(__file__).resolve().parent.parent
        sys.exit(check(Path(sys.argv[1]) if len(sys.argv) == 2 else default))
    else:
        sys.exit(f"usage: {sys.argv[0]} [--self-test | WORKSPACE]")
