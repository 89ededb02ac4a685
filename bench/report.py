"""Figures, the table they are printed in, and the JSON they are saved as."""

from __future__ import annotations

import json
import operator
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


@dataclass
class Figure:
    """One row of the table: the median of ``values`` (one per run), checked against a target."""

    section: str
    name: str
    values: list[float]
    unit: str = ""
    #: (``"<="``, 1.10) and the like; None: a figure without a target.
    target: tuple[str, float] | None = None
    note: str = ""
    #: How many decimals to print.
    digits: int = 2

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def passed(self) -> bool | None:
        if self.target is None or self.median is None:
            return None
        op, threshold = self.target
        return _COMPARE[op](self.median, threshold)

    @property
    def result(self) -> str:
        if self.median is None:
            return "n/a"
        return {True: "PASS", False: "MISS", None: ""}[self.passed]

    def median_text(self) -> str:
        if self.median is None:
            return "not available"
        return f"{self.median:,.{self.digits}f}" + (f" {self.unit}" if self.unit else "")

    def range_text(self) -> str:
        if len(self.values) < 2:
            return ""
        return f"{min(self.values):,.{self.digits}f}–{max(self.values):,.{self.digits}f}"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op, threshold = self.target
        symbol = {"<=": "≤", ">=": "≥"}.get(op, op)
        return f"{symbol} {threshold:g}" + (f" {self.unit}" if self.unit and self.unit != "×" else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "median": self.median, "runs": len(self.values), "result": self.result}


@dataclass
class Report:
    mode: str
    machine: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    #: Section title -> the error that stopped it (a traceback's last line).
    errors: dict[str, str] = field(default_factory=dict)
    #: Section title -> lines saying what exactly was measured.
    notes: dict[str, list[str]] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def table(self) -> str:
        header = ("section", "figure", "median", "min–max", "runs", "target", "result")
        rows = [(f.section, f.name, f.median_text(), f.range_text(), str(len(f.values)), f.target_text(), f.result)
                for f in self.in_order()]
        rows += [(section, "CRASHED: " + error, "", "", "", "", "ERROR") for section, error in self.errors.items()]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [_line(header, widths), _line(tuple("-" * w for w in widths), widths)]
        previous = None
        for row in rows:
            if previous is not None and row[0] != previous:
                lines.append("")
            lines.append(_line(row, widths))
            previous = row[0]
        return "\n".join(lines)

    def printed(self) -> str:
        """The table and each section's notes, as a benchmark's ``main`` prints them."""
        return self.table() + "".join(f"\n\n{section}:\n" + "\n".join(f"  - {note}" for note in notes)
                                      for section, notes in self.notes.items())

    def markdown(self) -> str:
        """The table as Markdown, for the README."""
        lines = ["| section | figure | median | min–max | runs | target | result |", "|---|---|---|---|---|---|---|"]
        for f in self.in_order():
            lines.append(f"| {f.section} | {f.name} | {f.median_text()} | {f.range_text()} | {len(f.values)} | "
                         f"{f.target_text()} | {f.result} |")
        return "\n".join(lines)

    def in_order(self) -> list[Figure]:
        """The figures by section (sections do not run in their numbers' order)."""
        return sorted(self.figures, key=lambda figure: figure.section)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "machine": self.machine, "figures": [f.to_dict() for f in self.figures],
                "errors": self.errors, "notes": self.notes}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
