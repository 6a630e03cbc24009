"""Operator files as YAML documents, read strictly, with errors that name the file and the path
inside it: `file: path.inside[3].field: message (line N)`. Every loader of the project (service,
`clausewatch check`, edge gateway, simulators) reads YAML through `read_yaml` here.

The loader is stricter than PyYAML's default: a repeated key is an error (PyYAML silently keeps
the last one), only `true`/`false` are booleans (`off` stays the state name "off"), `13:30`
stays a string (YAML 1.1 reads it as the base-60 integer 810), and so does `0x30` (30 zeros in
a clause test series, not hexadecimal 48).
"""

from __future__ import annotations

import difflib
import re
import types
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

Loc = tuple[int | str, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)


# ---- problems ----


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one file, at one place inside it."""

    file: str
    where: str  # "spaces[3].area_m2", or "" for the file as a whole
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        line = f" (line {self.line})" if self.line else ""
        return f"{self.file}: {where}{self.message}{line}"


class ConfigError(Exception):
    """One or more problems in operator files; `str()` lists them one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# ---- YAML ----


class _UniqueKeys(yaml.constructor.SafeConstructor):
    """A repeated key in a mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key {key_node.value!r} appears twice",
                    key_node.start_mark,
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


class _StrictLoader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _UniqueKeys,
    yaml.resolver.Resolver,
):
    """SafeLoader with YAML 1.2 scalars and duplicate keys as errors (see module docstring)."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _UniqueKeys.__init__(self)
        yaml.resolver.Resolver.__init__(self)


_REPLACED_TAGS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"),  # no hex: "0x30" is 30 zeros in a test series
    list("-+0123456789"),
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*(?=[eE]))(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _fast_loader() -> type | None:
    """`_StrictLoader` over libyaml's parser (about ten times faster on a large site file):
    the constructor and the resolvers are `_StrictLoader`'s. None without libyaml."""
    try:
        from yaml._yaml import CParser
    except ImportError:  # PyYAML built without libyaml
        return None

    class FastStrictLoader(CParser, _UniqueKeys, yaml.resolver.Resolver):
        yaml_implicit_resolvers = _StrictLoader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _UniqueKeys.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return FastStrictLoader


_FAST_LOADER = _fast_loader()


def _fast_load(text: str) -> tuple[Any, yaml.Node | None] | None:
    """`text` read by `_FAST_LOADER`; None without libyaml or when the text has any problem:
    the caller then reads it with `_StrictLoader`, which reports it in its words and
    positions."""
    if _FAST_LOADER is None:
        return None
    try:
        loader = _FAST_LOADER(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    return data, root


@dataclass
class YamlDocument:
    """Parsed data plus the node tree, kept to find the line of any path inside the file."""

    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Loc) -> int | None:
        """1-based line of the deepest node along `loc` that exists in the file."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for item in loc:
            child = _child_node(node, item)
            if child is None:
                break
            node, line = child, child.start_mark.line + 1
        return line


def _child_node(node: yaml.Node, item: int | str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == item:
                found: yaml.Node = value_node
                return found
    elif isinstance(node, yaml.SequenceNode) and isinstance(item, int) and item < len(node.value):
        element: yaml.Node = node.value[item]
        return element
    return None


def read_yaml(path: Path) -> YamlDocument:
    """Parses one YAML file. Raises ConfigError naming the line of a syntax error."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(name, "", f"cannot read the file: {exc}")]) from exc
    fast = _fast_load(text)
    if fast is not None:
        return YamlDocument(*fast)
    try:
        # The reader checks the characters when the loader is made: inside the try too.
        loader = _StrictLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError([Problem(name, where, f"YAML syntax: {message}")]) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (control codes)
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else "a character"
        raise ConfigError(
            [
                Problem(
                    name,
                    f"line {line}, column {column}",
                    f"YAML: {character} is not allowed ({exc.reason})",
                )
            ]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(name, "", f"YAML syntax: {exc}")]) from exc
    except RecursionError as exc:
        raise ConfigError([Problem(name, "", "YAML: the document nests too deeply")]) from exc
    return YamlDocument(data, root)


# ---- pydantic errors as paths ----


def format_loc(loc: Iterable[int | str]) -> str:
    """('spaces', 3, 'area_m2') -> 'spaces[3].area_m2'."""
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else str(item))
    return text


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_EMBEDDED_PATH = re.compile(r"^([A-Za-z_][\w-]*(?:\[\d+\]|\.[A-Za-z_][\w-]*)*): (.+)$", re.S)


def parse_loc(text: str) -> Loc:
    """'spaces[3].area_m2' -> ('spaces', 3, 'area_m2')."""
    return tuple(
        int(index) if index else name for name, index in _PATH_TOKEN.findall(text) if name or index
    )


def validation_problems(
    name: str, doc: YamlDocument, exc: ValidationError, model: type[BaseModel] | None = None
) -> list[Problem]:
    """Turns pydantic errors into problems with paths as written in the file.

    Pydantic puts union member names into error locations ('check.threshold.min.float'); those
    are dropped by walking the input alongside. For a union that failed in every member, only
    the errors of the members that came closest (fewest errors) are kept, so a mistyped
    condition reports its one wrong field instead of a dozen errors from the other shapes.
    """
    entries: list[tuple[Loc, list[tuple[str, str]], dict[str, Any]]] = []
    for details in exc.errors():
        error: dict[str, Any] = dict(details)
        loc, branches = _clean_loc(tuple(error["loc"]), doc.data, error["type"])
        entries.append((loc, branches, error))
    entries = _closest_branches(entries)
    locs = [loc for loc, _, _ in entries]
    problems: list[Problem] = []
    seen: set[tuple[Loc, str]] = set()
    for loc, _, error in entries:
        # "too short" on a list whose items failed is noise next to the items' own errors.
        if error["type"] == "too_short" and any(
            other[: len(loc)] == loc and len(other) > len(loc) for other in locs
        ):
            continue
        if error["type"] == "extra_forbidden" and model is not None:
            error["known"] = _known_keys(model, loc[:-1], doc.data)
        for sub_loc, message in _messages(loc, error):
            if (sub_loc, message) in seen:
                continue
            seen.add((sub_loc, message))
            problems.append(Problem(name, format_loc(sub_loc), message, doc.line_of(sub_loc)))
    return _merge_alternatives(problems)


def _clean_loc(loc: Loc, data: Any, error_type: str) -> tuple[Loc, list[tuple[str, str]]]:
    """Drops union member names from `loc`; returns the kept path and the (path, member) pairs
    that were dropped."""
    kept: list[int | str] = []
    branches: list[tuple[str, str]] = []
    current = data
    for position, item in enumerate(loc):
        last = position == len(loc) - 1
        in_mapping = isinstance(current, dict) and item in current
        in_list = isinstance(current, list) and isinstance(item, int) and item < len(current)
        if in_mapping or in_list:
            kept.append(item)
            current = current[item]
        elif last and error_type in ("missing", "extra_forbidden"):
            kept.append(item)  # the name of a missing field
        else:
            branches.append((format_loc(kept), str(item)))  # a union member: stay in place
    return tuple(kept), branches


def _closest_branches(
    entries: list[tuple[Loc, list[tuple[str, str]], dict[str, Any]]],
) -> list[tuple[Loc, list[tuple[str, str]], dict[str, Any]]]:
    # Visit union positions from the inside out (nested unions first, so an outer member is
    # counted by its closest inner members); at each keep the members with fewest errors,
    # after dropping members the input is not even of the type of (a mapping given where a
    # string could go) when another member got further.
    positions = sorted(
        {where for _, branches, _ in entries for where, _ in branches}, key=len, reverse=True
    )
    for where in positions:
        counts = Counter(
            member
            for _, branches, error in entries
            for w, member in branches
            if w == where and error["type"] != "too_short"  # echoes its items' errors
        )
        if len(counts) < 2:
            continue
        shallow = {
            member
            for loc, branches, error in entries
            for w, member in branches
            if w == where and format_loc(loc) == where and str(error["type"]).endswith("_type")
        }
        if shallow and set(counts) - shallow:
            for member in shallow:
                del counts[member]
        fewest = min(counts.values())
        best = {member for member, count in counts.items() if count == fewest}
        entries = [
            entry
            for entry in entries
            if all(member in best for w, member in entry[1] if w == where)
        ]
    return entries


def _messages(loc: Loc, error: dict[str, Any]) -> list[tuple[Loc, str]]:
    kind = error["type"]
    if kind == "missing":
        return [(loc, "required, but missing")]
    if kind == "extra_forbidden":
        known: list[str] | None = error.get("known")
        if not known:
            return [(loc, "unknown key (check the spelling; see docs/config-formats.md)")]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            return [(loc, f"unknown key: did you mean {close[0]!r}?")]
        return [(loc, f"unknown key (allowed here: {', '.join(known)})")]
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    # Model-level checks report several "path: message" parts joined by "; ".
    parts = message.split("; ")
    embedded = [_EMBEDDED_PATH.match(part) for part in parts]
    if all(embedded):
        return [(loc + parse_loc(m.group(1)), m.group(2)) for m in embedded if m]
    if kind in ("literal_error", "enum") or "input" not in error:
        return [(loc, message)]
    value = error["input"]
    if isinstance(value, str | int | float | bool):
        shown = repr(value)
        if len(shown) <= 60 and shown not in message:
            message = f"{message} (got {shown})"
    return [(loc, message)]


def _known_keys(model: type[BaseModel], loc: Loc, data: Any) -> list[str] | None:
    """The keys a mapping at `loc` may have, by walking the model's field types alongside the
    data (unions of models are resolved by the data's `kind`, else by the closest fields)."""
    annotation: Any = model
    current = data
    for item in loc:
        annotation = _resolve(annotation, current)
        origin = get_origin(annotation)
        if isinstance(item, int) and origin in (tuple, list):
            annotation = get_args(annotation)[0]
        elif isinstance(item, str) and origin is dict:
            annotation = get_args(annotation)[1]
        elif isinstance(item, str) and isinstance(annotation, type):
            fields = _fields_by_key(annotation)
            if item not in fields:
                return None
            annotation = fields[item].annotation
        else:
            return None
        if isinstance(current, dict):
            current = current.get(item)
        elif isinstance(current, list) and isinstance(item, int) and item < len(current):
            current = current[item]
        else:
            current = None
    annotation = _resolve(annotation, current)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return sorted(_fields_by_key(annotation))
    return None


def _fields_by_key(model: type) -> dict[str, Any]:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return {}
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _resolve(annotation: Any, data: Any) -> Any:
    """Strips Annotated; picks the member of a union of models that `data` is meant to be."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) not in (Union, types.UnionType):
        return annotation
    members = [_resolve(a, data) for a in get_args(annotation) if a is not type(None)]
    models = [m for m in members if _fields_by_key(m)]
    if not models:
        return members[0] if len(members) == 1 else None
    keys = set(data) if isinstance(data, dict) else set()

    def fit(candidate: type) -> int:
        fields = _fields_by_key(candidate)
        kind = fields.get("kind")
        if (
            kind is not None
            and isinstance(data, dict)
            and data.get("kind") in get_args(kind.annotation)
        ):
            return 1_000
        return len(keys & set(fields))

    return max(models, key=fit)


def _merge_alternatives(problems: list[Problem]) -> list[Problem]:
    # Two members of a scalar union failing at one place ("a number" / "a string"): one line.
    grouped: dict[tuple[str, str], list[Problem]] = defaultdict(list)
    for problem in problems:
        grouped[(problem.file, problem.where)].append(problem)
    merged: list[Problem] = []
    for group in grouped.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        messages = list(dict.fromkeys(p.message for p in group))
        merged.append(Problem(group[0].file, group[0].where, "; or ".join(messages), group[0].line))
    return merged


def located_problems(path: Path, doc: YamlDocument, messages: Iterable[str]) -> list[Problem]:
    """Problems from messages that start with the path they are about (`sources[0].device:
    unknown device 'x'`, as cross checks write them), each with its line in `doc`; a message
    without such a path is about the file as a whole."""
    problems: list[Problem] = []
    for message in messages:
        embedded = _EMBEDDED_PATH.match(message)
        if embedded is None:
            problems.append(Problem(str(path), "", message))
            continue
        where, text = embedded.groups()
        problems.append(Problem(str(path), where, text, doc.line_of(parse_loc(where))))
    return problems


def validate_document(path: Path, doc: YamlDocument, model: type[ModelT]) -> ModelT:
    """Validates parsed YAML against a model; raises ConfigError with every problem."""
    if doc.data is None:
        raise ConfigError([Problem(str(path), "", "the file is empty")])
    if not isinstance(doc.data, dict):
        raise ConfigError([Problem(str(path), "", "expected a mapping at the top of the file")])
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(str(path), doc, exc, model)) from exc


def load_document(path: str | Path, model: type[ModelT]) -> ModelT:
    """Reads one YAML file strictly and validates it as `model`; raises ConfigError naming the
    file, the path inside it and the line of every problem."""
    path = Path(path)
    return validate_document(path, read_yaml(path), model)
