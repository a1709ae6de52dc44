"""`juno-policy`: the replication policy and site topology as code.

Exit codes: 0 success / valid, 1 the file is invalid (every problem listed), 2 usage error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from rucio_policy.replication import validate_file
from rucio_policy.rse_catalog import CatalogInvalid, RseCatalog, load_catalog
from rucio_policy.yaml_lines import Issue

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """JUNO's replication policy and site topology as code."""


def _default_sites(policy_file: Path) -> Path | None:
    candidate = policy_file.parent / "sites.yaml"
    return candidate if candidate.is_file() else None


def _report(file: str, issues: list[Issue], as_json: bool, summary: str) -> None:
    if as_json:
        click.echo(json.dumps({"file": file, "valid": not issues, "errors": [i.as_dict() for i in issues]}, indent=2))
        return
    for issue in issues:
        click.echo(str(issue), err=False)
    click.echo(summary, err=True)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sites", "sites_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Site topology with the known RSEs [default: sites.yaml next to FILE].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def validate(file: Path, sites_file: Path | None, as_json: bool) -> None:
    """Check a replication policy file; list every problem as FILE:LINE: what (how to fix).

    RSE names and expressions are checked against the sites file. Nothing is sent to Rucio.
    """
    sites_file = sites_file or _default_sites(file)
    if sites_file is None:
        raise click.UsageError(f"no sites.yaml next to {file}: give the site topology with --sites PATH")
    try:
        catalog: RseCatalog = load_catalog(sites_file, str(sites_file))
    except CatalogInvalid as err:
        _report(str(sites_file), err.issues, as_json,
                f"{sites_file}: {len(err.issues)} problem(s); cannot check {file} without its RSEs")
        sys.exit(EXIT_INVALID)
    policy, issues = validate_file(file, catalog, str(file))
    if issues or policy is None:
        _report(str(file), issues, as_json, f"{file}: {len(issues)} problem(s), nothing applied")
        sys.exit(EXIT_INVALID)
    rules = sum(len(c.rules) for c in policy.classes)
    _report(str(file), [], as_json, f"{file}: valid ({len(policy.classes)} classes, {rules} rules, "
                                    f"RSEs from {sites_file})")
    sys.exit(EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
