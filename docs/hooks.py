"""mkdocs hooks: files of the site that live outside ``docs/``.

The Benchmarks page includes ``benchmarks/RESULTS.md`` (a snippet), whose plots are referenced as
``plots/<name>.png``; this hook adds ``benchmarks/plots/*.png`` to the site under ``plots/`` so
that those links resolve without a second copy of the images in the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

PLOTS = Path(__file__).resolve().parent.parent / "benchmarks" / "plots"


def on_files(files: Files, config: Any) -> Files:
    """Add the benchmark plots to the site."""
    for png in sorted(PLOTS.glob("*.png")):
        files.append(
            File(
                f"plots/{png.name}",
                src_dir=str(PLOTS.parent),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files
