"""Print inferd's requirements for a set of extras, one a line, as a requirements file.

    python scripts/requirements.py                      the base install (gateway, worker)
    python scripts/requirements.py llamacpp,embeddings  plus those extras

The image build installs these (pinned by constraints.txt) before it copies the source, so a
code change rebuilds only the layer that installs inferd itself (``pip install --no-deps .``).
Extras that name inferd's own extras (``all = ["inferd[llamacpp,...]"]``) are expanded.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

_SELF = re.compile(r"^inferd\[([^\]]+)\]$")


def requirements(pyproject: dict[str, object], extras: list[str]) -> list[str]:
    """The base dependencies plus those of ``extras``, in order, without repeats."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(requirement: str) -> None:
        match = _SELF.match(requirement.replace(" ", ""))
        if match:
            for extra in match.group(1).split(","):
                add_extra(extra)
        elif requirement not in out:
            out.append(requirement)

    def add_extra(extra: str) -> None:
        if extra in seen_extras:
            return
        if extra not in optional:
            raise SystemExit(f"inferd has no extra {extra!r} (it has: {', '.join(optional)})")
        seen_extras.add(extra)
        for requirement in optional[extra]:
            add(requirement)

    for requirement in project["dependencies"]:
        add(requirement)
    for extra in extras:
        add_extra(extra)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("extras", nargs="?", default="",
                        help="comma-separated extras (none: the base install)")
    parser.add_argument("--pyproject", type=Path,
                        default=Path(__file__).resolve().parent.parent / "pyproject.toml")
    args = parser.parse_args()
    with args.pyproject.open("rb") as file:
        pyproject = tomllib.load(file)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    print("\n".join(requirements(pyproject, extras)))


if __name__ == "__main__":
    main()
