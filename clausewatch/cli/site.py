"""`clausewatch site export|import|template`: the site model as a workbook (.xlsx, or CSV files
in a folder or a zip), docs/config-formats.md, "Site workbook". An import writes only a site not
configured yet; a configured site changes through `clausewatch site propose`
(clausewatch/cli/site_revisions.py), approved by another person."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg

from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url, url_from
from clausewatch.settings import Settings
from compliance.revisions import RevisionError
from compliance.site_revisions import check_direct_import
from config import BUNDLED_DIR
from config.documents import ConfigError
from config.sitebook import WorkbookError
from config.sitefiles import (
    apply_import,
    configured_site,
    plan_import,
    read_workbook,
    write_workbook,
)

# How an import's registry changes are recorded in the ledger (the service records the changes
# it syncs from the files at start as "config"): the file it came from is named.
IMPORT_ACTOR = "config:import"

FILE_HELP = "an .xlsx workbook, a .zip of CSV files, or a folder of CSV files (one per sheet)"


def register(commands: Commands) -> None:
    export = commands.add(
        "site export",
        "write a site's model (spaces, devices and metrics, parties and contacts, assignments) "
        "as a workbook with Chinese and English headers",
    )
    export.add_argument("site", help="the site id")
    export.add_argument("file", type=Path, metavar="FILE", help=FILE_HELP)
    config_argument(export)
    export.set_defaults(func=_export)

    template = commands.add(
        "site template", "write the empty site workbook (headers only) to fill in and import"
    )
    template.add_argument("file", type=Path, metavar="FILE", help=FILE_HELP)
    template.set_defaults(func=_template)

    importer = commands.add(
        "site import",
        "import a site workbook: validate it as the site's YAML file, show what it adds, changes "
        "and removes, then (unless --dry-run) write the site's file in the configuration "
        "directory and sync the registry when a database is configured; only a new site: a "
        "configured one changes through `clausewatch site propose` (approved by another person)",
    )
    importer.add_argument("file", type=Path, metavar="FILE", help=FILE_HELP)
    importer.add_argument(
        "--dry-run", action="store_true", help="only validate and show the difference"
    )
    importer.add_argument(
        "--no-sync",
        action="store_true",
        help="write the file only; the service syncs the registry at its next start",
    )
    config_argument(importer)
    database_argument(importer)
    importer.set_defaults(func=_import)


def config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir",
        type=Path,
        help="the configuration directory (sites/, clauses/); default CLAUSEWATCH_CONFIG_DIR, "
        "else the bundled one (read only: export and dry runs)",
    )


def config_dir(args: argparse.Namespace) -> Path | None:
    given: Path | None = args.config_dir
    if given is None and os.environ.get("CLAUSEWATCH_CONFIG_DIR"):
        given = Settings().config_dir
    return given


def _export(args: argparse.Namespace) -> int:
    directory = config_dir(args) or BUNDLED_DIR
    try:
        model, path = configured_site(directory, args.site)
    except ConfigError as exc:
        print(f"错误 error: 配置无效 the configuration is invalid:\n{exc}", file=sys.stderr)
        return 1
    if model is None:
        print(
            f"错误 error: {directory} 中没有站点 {args.site!r} / "
            f"no site {args.site!r} in {directory}",
            file=sys.stderr,
        )
        return 1
    write_workbook(model, args.file)
    print(
        f"已导出 exported {args.site} ({path}): {len(model.spaces)} spaces, "
        f"{len(model.devices)} devices, {len(model.parties)} parties, "
        f"{len(model.assignments)} assignments -> {args.file}"
    )
    return 0


def _template(args: argparse.Namespace) -> int:
    write_workbook(None, args.file)
    print(f"已写出模板 wrote the template -> {args.file}")
    return 0


def _import(args: argparse.Namespace) -> int:
    given = config_dir(args)
    if given is None and not args.dry_run:
        print(
            "错误 error: 导入需要配置目录 an import writes into a configuration directory: "
            "pass --config-dir or set CLAUSEWATCH_CONFIG_DIR",
            file=sys.stderr,
        )
        return 2
    directory = given or BUNDLED_DIR
    try:
        plan = plan_import(read_workbook(args.file), directory, args.file.name)
    except WorkbookError as exc:
        print(f"{len(exc.problems)} 个问题 problem(s) in {args.file}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(
            f"{len(exc.problems)} 个问题 problem(s): 导入后的配置无效 the configuration with this "
            f"site would be invalid:",
            file=sys.stderr,
        )
        for config_problem in exc.problems:
            print(f"  {config_problem}", file=sys.stderr)
        return 1
    for line in plan.diff.lines():
        print(line)
    if args.dry_run:
        print(f"试运行 dry run: {plan.target} 未改动 not written")
        return 0
    try:
        check_direct_import(plan, f"clausewatch site propose {args.file} --reason TEXT")
    except RevisionError as exc:
        print(f"错误 error: {exc}", file=sys.stderr)
        return 2
    if not apply_import(plan):
        print(f"无变化 nothing to change: {plan.target} 未改动 not written")
        return 0
    print(f"已写入 wrote {plan.target}")
    if args.no_sync:
        return 0
    if url_from(args, "database") is None and not Settings().database_url:
        print("未同步登记表 registry not synced (no database): the service syncs it at start")
        return 0
    from store.pool import connect
    from store.registry import sync_site
    from store.roles import as_role

    url = as_role(database_url(args), Settings().database_roles().service)
    try:
        with connect(url) as conn:
            report = sync_site(conn, plan.model, f"{IMPORT_ACTOR} {args.file.name}")
            conn.commit()
    except psycopg.Error as exc:
        print(
            f"错误 error: 文件已写入，登记表未同步 the file is written but the registry is not "
            f"synced ({type(exc).__name__}: {exc}); the service syncs it at its next start",
            file=sys.stderr,
        )
        return 1
    changes = ", ".join(f"{kind} {count}" for kind, count in sorted(report.changes.items()))
    print(f"已同步登记表 registry synced: {changes or 'no changes'}")
    return 0
