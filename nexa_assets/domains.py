"""`nexa-domains`: the domain partitions of the Dagster instance in DAGSTER_HOME. A domain must be a
partition before `dagster asset materialize --partition DOMAIN` can run it; the raw folder sensor adds
one for each new folder under the raw root (NEXA_RAW_ROOT), and this command does it by hand.

  nexa-domains list                  the domains, and the folders under the raw root that are not domains yet
  nexa-domains add NAME [NAME ...]   a domain per name, each a folder under the raw root (--force: without one)
  nexa-domains remove NAME [...]     drop the partitions; their tables' rows and their runs stay
"""

import argparse
import sys
from pathlib import Path

import dagster as dg

from nexa_assets.cli import ensure_dagster_home
from nexa_assets.partitions import domain_partitions
from nexa_core.data.documents import SUPPORTED_SUFFIXES, domain_folders, folder_files
from resources.environment import Environment


def describe(folder: Path) -> str:
    if not folder.is_dir():
        return f"no folder {folder}"
    files = len(folder_files(folder))
    return f"{files} file{'s' if files != 1 else ''} in {folder}" if files else f"{folder} has no supported files yet"


def list_domains(instance, raw_root: Path) -> int:
    known = sorted(instance.get_dynamic_partitions(domain_partitions.name))
    print(f"domains ({len(known)}), raw root {raw_root}:")
    for name in known:
        print(f"  {name:16s} {describe(raw_root / name)}")
    waiting = [folder.name for folder in domain_folders(raw_root) if folder.name not in known]
    if waiting:
        print(f"folders that are not domains yet (nexa-domains add NAME): {', '.join(waiting)}")
    return 0


def add_domains(instance, raw_root: Path, names: list[str], force: bool) -> int:
    bad = [f"'{n}' is not a folder name" for n in names if Path(n).name != n or n.startswith(".")]
    if not force:
        bad += [f"{n}: no folder {raw_root / n}" for n in names if Path(n).name == n and not (raw_root / n).is_dir()]
    if bad:
        folders = ", ".join(f.name for f in domain_folders(raw_root)) or "none"
        print(
            "nexa-domains add: nothing added.\n  " + "\n  ".join(bad) + f"\nFolders under {raw_root}: {folders}. "
            f"Create the folder with the domain's {', '.join(SUPPORTED_SUFFIXES)} files (or set NEXA_RAW_ROOT), "
            "or pass --force to add the partition anyway.",
            file=sys.stderr,
        )
        return 2
    known = set(instance.get_dynamic_partitions(domain_partitions.name))
    new = list(dict.fromkeys(n for n in names if n not in known))
    instance.add_dynamic_partitions(domain_partitions.name, new)
    for name in dict.fromkeys(names):
        print(f"{name}: {'added' if name in new else 'already a domain'} ({describe(raw_root / name)})")
    if new:
        print(
            f"materialize: dagster asset materialize -m nexa_assets.definitions --select 'raw_documents+' "
            f"--partition {new[0]}  (or nexa-run {' '.join(new)})"
        )
    return 0


def remove_domains(instance, raw_root: Path, names: list[str], force: bool) -> int:
    known = set(instance.get_dynamic_partitions(domain_partitions.name))
    bad = [f"{n}: not a domain" for n in names if n not in known]
    if not force:  # the sensor turns every folder under the raw root into a partition again
        bad += [
            f"{n}: its folder {raw_root / n} is still there, and the raw folder sensor would add it back; "
            "move it out of the raw root first"
            for n in names
            if n in known and (raw_root / n).is_dir()
        ]
    if bad:
        print(
            "nexa-domains remove: nothing removed.\n  "
            + "\n  ".join(bad)
            + f"\nDomains: {', '.join(sorted(known)) or 'none'}. --force removes a partition whose folder is there.",
            file=sys.stderr,
        )
        return 2
    for name in dict.fromkeys(names):
        instance.delete_dynamic_partition(domain_partitions.name, name)
        print(f"{name}: removed (its rows in the Delta tables and its runs are kept)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nexa-domains", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the domains and the folders not yet added")
    for verb, what in (("add", "a domain per folder name under the raw root"), ("remove", "drop domain partitions")):
        command = commands.add_parser(verb, help=what)
        command.add_argument("names", nargs="+", metavar="NAME")
        command.add_argument(
            "--force",
            action="store_true",
            help="add a domain with no folder yet"
            if verb == "add"
            else "remove a domain whose folder is still under the raw root",
        )
    args = parser.parse_args(argv)
    env = Environment.read()
    ensure_dagster_home(env.dagster_home, env.postgres)
    with dg.DagsterInstance.get() as instance:
        if args.command == "list":
            return list_domains(instance, env.raw_root)
        act = add_domains if args.command == "add" else remove_domains
        return act(instance, env.raw_root, args.names, args.force)


if __name__ == "__main__":
    sys.exit(main())
