"""What every benchmark records beside its figures, and how it writes them."""
from __future__ import annotations

import json
import os
import platform
import resource
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(os.environ.get("GRAPHREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1),
            "python": platform.python_version(), "system": platform.platform()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_results(name: str, figures: dict, table_rows: list[tuple], title: str, notes: str = "",
                  header: tuple = ("figure", "value")) -> Path:
    """bench/results/<name>.json (figures + date, machine, threads) and a Markdown table beside it."""
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {**figures, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "threads": torch.get_num_threads()}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    write_markdown(name, record, table_rows, title, notes, header)
    return path


def write_markdown(name: str, record: dict, table_rows: list[tuple], title: str, notes: str = "",
                   header: tuple = ("figure", "value")) -> None:
    """The table beside the JSON (also used to re-render it from a saved record)."""
    where = record["machine"]
    lines = [f"# {title}", "", f"{record['date']} on {where['cpu']} "
             f"({where['cores']} cores, {where['memory_gb']} GB), torch threads {record['threads']}",
             "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table_rows]
    if notes:
        lines += ["", notes]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
