"""The typed report of a ``predict`` run: every scene's outcome, what the run wrote, the
summary table the command prints, and the same as JSON (``resseg predict --report``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from resseg_ray.inference.batch import SceneReport
from resseg_ray.jsondoc import dump_json

FORMAT = "resseg-predict-report/1"
"""The ``format`` of the JSON report."""


def status(report: SceneReport) -> str:
    """``done``, ``skipped`` (its outputs were complete) or ``failed``."""
    return "failed" if report.error else "skipped" if report.skipped else "done"


@dataclass(frozen=True)
class PredictReport:
    """What a ``predict`` run did: each scene's outcome in the order given, where the outputs
    are, the STAC catalog it wrote, and which buildings it left out as already mapped."""

    scenes: list[SceneReport]
    out: str
    polygons: bool = False
    """Whether building polygons were asked for (the table then counts them)."""
    existing: str | None = None
    """The ``--existing`` buildings, when given."""
    catalog: str | None = None
    """The STAC catalog written (None: none, ``--no-stac`` or no scene finished)."""
    catalog_items: int = 0

    def of(self, state: str) -> list[SceneReport]:
        """The scenes whose :func:`status` is ``state``."""
        return [r for r in self.scenes if status(r) == state]

    @property
    def megapixels(self) -> float:
        """Megapixels segmented in this run (skipped and failed scenes not counted)."""
        return sum(r.megapixels for r in self.of("done"))

    @property
    def seconds(self) -> float:
        """Seconds spent segmenting the scenes done in this run."""
        return sum(r.seconds for r in self.of("done"))

    def table(self) -> str:
        """One row per scene: megapixels, seconds, throughput, runtime, buildings, status."""
        conflating = self.existing is not None
        extra = (f" {'buildings':>9}" if self.polygons else "") + (f" {'mapped':>7}" if conflating else "")
        rows = [f"{'scene':<48} {'Mpx':>7} {'s':>8} {'Mpx/s':>7} {'runtime':<16}{extra}  status"]
        for r in self.scenes:
            counts = ""
            if self.polygons:
                counts = f" {_count(r.buildings):>9}" + (
                    f" {_count(r.already_mapped):>7}" if conflating else ""
                )
            rows.append(
                f"{r.uri[-48:]:<48} {r.megapixels:7.2f} {r.seconds:8.1f} {r.mpx_per_s:7.2f} "
                f"{r.engine or '-':<16}{counts}  {status(r)}"
            )
        return "\n".join(rows)

    def lines(self) -> list[str]:
        """What the command prints after the scenes: the table, the catalog, the summary."""
        out = ["", self.table()]
        if self.catalog is not None:
            out.append(
                f"STAC catalog {self.catalog}: {self.catalog_items} items, valid (pystac validate_all)"
            )
        if self.existing is not None:
            left = sum(r.already_mapped or 0 for r in self.of("done"))
            out.append(f"{left} predicted buildings left out as already mapped in {self.existing}")
        out.append(
            f"{len(self.of('done'))} segmented ({self.megapixels:.1f} Mpx in {self.seconds:.1f} s), "
            f"{len(self.of('skipped'))} skipped, {len(self.of('failed'))} failed; outputs under {self.out}"
        )
        return out

    def to_json(self) -> str:
        """The report as a JSON document (:data:`FORMAT`): per scene its fields, throughput and
        status, and the run's totals."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "out": self.out,
            "scenes": [{**asdict(r), "mpx_per_s": r.mpx_per_s, "status": status(r)} for r in self.scenes],
            "segmented": len(self.of("done")),
            "skipped": len(self.of("skipped")),
            "failed": len(self.of("failed")),
            "megapixels": self.megapixels,
            "seconds": self.seconds,
            "catalog": self.catalog,
            "catalog_items": self.catalog_items,
            "existing": self.existing,
        }
        return dump_json(doc)


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)
