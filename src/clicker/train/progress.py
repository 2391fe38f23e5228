"""A live progress bar for training: iteration, train and held-out success, world tokens."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class TrainProgress:
    def __init__(self, total: int, start: int = 0, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self._bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._task = self._bar.add_task("train", total=total, completed=start, status="")
        self._bar.start()

    def update(self, completed: int, *, train: float | None = None,
               held_out: float | None = None, world_tokens: int = 0) -> None:
        if not self.enabled:
            return
        parts = []
        if train is not None:
            parts.append(f"train {train:.2f}")
        if held_out is not None:
            parts.append(f"held-out {held_out:.2f}")
        parts.append(f"world tokens {world_tokens:,}")
        self._bar.update(self._task, completed=completed, status="  ".join(parts))

    def close(self) -> None:
        if self.enabled:
            self._bar.stop()
