"""Per-run metrics: `metrics.jsonl` (one line per iteration, flushed) and TensorBoard events.

On resume, lines from iterations after the restored checkpoint are dropped first, so the file
has no gaps and no duplicate iterations.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tensorboardX import SummaryWriter


class MetricsLog:
    def __init__(self, run_dir: Path, resume_from_iteration: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_from_iteration is not None and self.path.exists():
            self._truncate_after(resume_from_iteration)
        self._file = open(self.path, "a")  # noqa: SIM115 - held open for the run, closed in close()
        self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def _truncate_after(self, iteration: int) -> None:
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill mid-write
                continue
            if row.get("iteration", -1) <= iteration:
                kept.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in kept))
        os.replace(tmp, self.path)

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration}
        row.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in metrics.items()})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        step = int(metrics.get("world/tokens", iteration))
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._tb.add_scalar(k, v, global_step=step)
        self._tb.flush()

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
