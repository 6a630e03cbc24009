"""Loading a configuration: site models and clause files, each validated strictly, then checked
across files (clause ids unique, named sites, spaces, devices and seasons exist, clauses bind).
Loading collects all problems of all files before it fails, so an operator fixes a configuration
in one pass.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.documents import (
    ConfigError,
    Loc,
    Problem,
    YamlDocument,
    format_loc,
    read_yaml,
    validate_document,
)
from config.holidays import load_official_calendar
from rules.clause import ClauseFile, ClauseVersion, Standard
from rules.holidays import OfficialCalendar
from rules.site import SiteModel

YAML_SUFFIXES = (".yaml", ".yml")


# ---- single files ----


def load_site(path: str | Path) -> SiteModel:
    """A site model file, validated. Raises ConfigError."""
    path = Path(path)
    return validate_document(path, read_yaml(path), SiteModel)


def load_clause_file(path: str | Path) -> ClauseFile:
    """A clause config file (one standard document), validated, including checks between the
    versions of one clause (overlapping effective periods). Raises ConfigError."""
    path = Path(path)
    return _validate_clause_file(path, read_yaml(path))


def _validate_clause_file(path: Path, doc: YamlDocument) -> ClauseFile:
    clause_file = validate_document(path, doc, ClauseFile)
    problems = [
        Problem(str(path), format_loc(loc), message, doc.line_of(loc))
        for loc, message in _clause_file_checks(clause_file)
    ]
    if problems:
        raise ConfigError(problems)
    return clause_file


def _clause_file_checks(clause_file: ClauseFile) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    by_id: dict[str, list[tuple[int, ClauseVersion]]] = defaultdict(list)
    for i, clause in enumerate(clause_file.clauses):
        by_id[clause.id].append((i, clause))
        for site, by_type in clause.overrides.site_space_types.items():
            for space_type, values in by_type.items():
                for name in values:
                    if name not in clause.params:
                        loc: Loc = ("clauses", i, "overrides", "site_space_types", site, space_type)
                        found.append(((*loc, name), "override of an undeclared parameter"))
    for versions in by_id.values():
        ordered = sorted(versions, key=lambda pair: pair[1].effective_from)
        for (_, earlier), (j, later) in itertools.pairwise(ordered):
            if earlier.effective_to is None or earlier.effective_to >= later.effective_from:
                found.append(
                    (
                        ("clauses", j, "effective_from"),
                        f"version {later.version} of {later.id} starts while version "
                        f"{earlier.version} is still in force (set effective_to of version "
                        f"{earlier.version} before {later.effective_from})",
                    )
                )
    return found


# ---- a whole configuration ----


@dataclass
class LoadedConfig:
    """Every site and clause file of a configuration, checked across files."""

    sites: dict[str, SiteModel] = field(default_factory=dict)
    site_files: dict[str, Path] = field(default_factory=dict)  # site id -> its file
    clause_files: dict[Path, ClauseFile] = field(default_factory=dict)
    # The official holiday schedules: bundled, with the directory's holidays/ replacing years.
    # None when not loaded from a directory (the service then keeps the calendar in use).
    calendar: OfficialCalendar | None = None
    # The directory it was loaded from (its routes.yaml: alerts/routing.py), if any.
    directory: Path | None = None

    def clause_versions(self) -> list[ClauseVersion]:
        """Every version of every clause, in file order."""
        return [clause for cf in self.clause_files.values() for clause in cf.clauses]

    def standards(self) -> dict[str, Standard]:
        """The standard document each clause id comes from."""
        return {
            clause.id: cf.standard for cf in self.clause_files.values() for clause in cf.clauses
        }


def load_config_dir(directory: str | Path) -> LoadedConfig:
    """Loads `directory/sites/*.yaml`, `directory/clauses/*.yaml` and the official holiday
    schedules (the bundled ones, `directory/holidays/*.yaml` replacing or adding years). Raises
    ConfigError with every problem of every file, and those between files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError([Problem(str(directory), "", "not a directory")])
    loaded, problems = load_files(
        yaml_files(directory / "sites"), yaml_files(directory / "clauses")
    )
    try:
        loaded.calendar = load_official_calendar(directory)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    loaded.directory = directory
    return loaded


def yaml_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())


def load_files(
    site_paths: Sequence[Path], clause_paths: Sequence[Path]
) -> tuple[LoadedConfig, list[Problem]]:
    """Loads and cross-checks site and clause files; returns what loaded and every problem."""
    loaded = LoadedConfig()
    problems: list[Problem] = []
    docs: dict[Path, YamlDocument] = {}
    for path in site_paths:
        try:
            doc = read_yaml(path)
            site = validate_document(path, doc, SiteModel)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if site.site.id in loaded.sites:
            problems.append(
                Problem(
                    str(path),
                    "site.id",
                    f"site {site.site.id!r} is also defined in {loaded.site_files[site.site.id]}",
                    doc.line_of(("site", "id")),
                )
            )
            continue
        loaded.sites[site.site.id] = site
        loaded.site_files[site.site.id] = path
    for path in clause_paths:
        try:
            docs[path] = read_yaml(path)
            loaded.clause_files[path] = _validate_clause_file(path, docs[path])
        except ConfigError as exc:
            problems.extend(exc.problems)
    problems.extend(_cross_checks(loaded, docs))
    return loaded, problems


def _cross_checks(loaded: LoadedConfig, docs: dict[Path, YamlDocument]) -> list[Problem]:
    """Checks between files: clause ids unique across files, and (when sites are loaded) that
    clauses name sites, spaces, devices and seasons that exist."""
    problems: list[Problem] = []
    first_file: dict[str, Path] = {}
    named = {
        (path, i): clause_site_problems(clause, loaded.sites) if loaded.sites else []
        for path, clause_file in loaded.clause_files.items()
        for i, clause in enumerate(clause_file.clauses)
    }
    # Binding repeats what is named in its own words: only clauses with nothing named.
    bindable = [
        clause
        for path, clause_file in loaded.clause_files.items()
        for i, clause in enumerate(clause_file.clauses)
        if not named[(path, i)]
    ]
    unbound = {
        site_id: site
        for site_id, site in loaded.sites.items()
        if binding_problems_all(bindable, site) is not None
    }
    for path, clause_file in loaded.clause_files.items():
        doc = docs[path]

        def problem(loc: Loc, message: str, path: Path = path, doc: YamlDocument = doc) -> None:
            problems.append(Problem(str(path), format_loc(loc), message, doc.line_of(loc)))

        for i, clause in enumerate(clause_file.clauses):
            owner = first_file.setdefault(clause.id, path)
            if owner != path:
                problem(("clauses", i, "id"), f"clause {clause.id!r} is also defined in {owner}")
            for loc, message in named[(path, i)]:
                problem(("clauses", i, *loc), message)
            for site_id, message in [] if named[(path, i)] else binding_problems(clause, unbound):
                problem(("clauses", i), f"cannot bind to site {site_id!r}: {message}")
    return problems


def binding_problems_all(clauses: Sequence[ClauseVersion], site: SiteModel) -> str | None:
    """What the engine refuses when binding all `clauses` to `site` at once (None: nothing).
    One engine for all of them costs a fraction of one engine per clause on a large site
    (bench/site_import.py), so the configuration binds each clause alone (to name it) only for
    a site where this fails."""
    from rules.engine import BindingError, SiteEngine

    try:
        SiteEngine(site, clauses, lateness=0.0)
    except (BindingError, ValueError) as exc:
        return str(exc)
    return None


def binding_problems(clause: ClauseVersion, sites: dict[str, SiteModel]) -> list[tuple[str, str]]:
    """What the engine refuses when binding the clause to each site (a named state no device
    has, a season the site lacks): (site id, message)."""
    from rules.engine import BindingError, SiteEngine

    found: list[tuple[str, str]] = []
    for site_id, site in sorted(sites.items()):
        try:
            SiteEngine(site, [clause], lateness=0.0)
        except (BindingError, ValueError) as exc:
            found.append((site_id, str(exc)))
    return found


def clause_site_problems(
    clause: ClauseVersion, sites: dict[str, SiteModel]
) -> list[tuple[Loc, str]]:
    """What a clause names that none of `sites` has (paths relative to the clause)."""
    found: list[tuple[Loc, str]] = []
    space_ids = {s.id for site in sites.values() for s in site.spaces}
    device_ids = {d.id for site in sites.values() for d in site.devices}
    for key in ("sites", "site_space_types"):
        for site_id in getattr(clause.overrides, key):
            if site_id not in sites:
                found.append((("overrides", key, site_id), f"unknown site {site_id!r}"))
    selector = clause.applies_to
    for key, ids, known, kind in (
        ("spaces", selector.spaces, space_ids, "space"),
        ("devices", selector.devices, device_ids, "device"),
    ):
        for j, item in enumerate(ids):
            if item not in known:
                found.append((("applies_to", key, j), f"no loaded site has a {kind} {item!r}"))
    for key, ids, known, kind in (
        ("spaces", selector.exempt.spaces, space_ids, "space"),
        ("devices", selector.exempt.devices, device_ids, "device"),
    ):
        for j, item in enumerate(ids):
            if item not in known:
                found.append(
                    (("applies_to", "exempt", key, j), f"no loaded site has a {kind} {item!r}")
                )
    season = clause.schedule.season
    if isinstance(season, str):
        for site_id, site in sorted(sites.items()):
            if season not in site.site.seasons:
                found.append(
                    (("schedule", "season"), f"site {site_id!r} defines no season {season!r}")
                )
    return found
