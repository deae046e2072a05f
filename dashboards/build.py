"""Write every dashboard's JSON and the provisioning files into a directory.

Layout (what ``dashboards/generated/`` holds, and what a Grafana container mounts)::

    dashboards/<uid>.json
    provisioning/datasources/bayou.yaml
    provisioning/dashboards/bayou.yaml

Output is stable: sorted keys, two-space indent, one trailing newline; the same inputs give
the same bytes, so the committed files can be compared with a fresh build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dashboards.catalog import all_dashboards
from dashboards.provisioning import Sources, dashboards_config, datasources_config, to_yaml

DEFAULT_OUT = Path("dashboards/generated")


def dumps(data: dict[str, Any]) -> str:
    """JSON as the build writes it."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def render(sources: Sources) -> dict[str, str]:
    """Every file of a build: path relative to the output directory → content."""
    files = {f"dashboards/{uid}.json": dumps(d) for uid, d in sorted(all_dashboards().items())}
    files["provisioning/datasources/bayou.yaml"] = to_yaml(datasources_config(sources))
    files["provisioning/dashboards/bayou.yaml"] = to_yaml(dashboards_config())
    return files


def build(out: Path, sources: Sources | None = None) -> list[Path]:
    """Write the build into ``out`` (created if missing); return the files written."""
    written = []
    for relative, text in render(sources or Sources()).items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
