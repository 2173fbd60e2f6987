"""Stage export_digits: scikit-learn's bundled digits -> data/raw/digits as an ImageFolder (real, offline)."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from stages import cli
from stages.datasets import export_digits
from stages.paths import EMBEDDED_DIGITS_ROOT


def run(root: Path) -> int:
    if root.exists():
        shutil.rmtree(root)
    return export_digits(root)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    with cli.reporting_errors():
        print(f"exported {run(Path(EMBEDDED_DIGITS_ROOT))} digit images to {EMBEDDED_DIGITS_ROOT}")


if __name__ == "__main__":
    main()
