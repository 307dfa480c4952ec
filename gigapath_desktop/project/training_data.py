"""What a training reads, as the training panel says it: its Train and Validation regions, each on its slide.

The panel says this instead of the open slide's region choices when training on the project (every project slide's
regions count, not the open slide's) and while a training runs (what it reads stays put when another slide opens).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from gigapath_desktop.annotations import Annotation, Role
from gigapath_desktop.project.settings import TrainingChoice
from gigapath_desktop.slides import Region

Placed = tuple[tuple[Path, Region], ...]  # (slide, level-0 region) pairs


@dataclass(frozen=True)
class TrainingData:
    """The Train and the Validation regions a training reads, each with its slide, and the classes of the labels
    of each slide that has a region."""

    train: Placed = ()
    validation: Placed = ()
    labels: tuple[tuple[Path, frozenset[str]], ...] = ()
    resolutions: tuple[tuple[Path, float | None], ...] = ()  # each slide's µm/px (None: not recorded)

    @classmethod
    def of(cls, slides: Iterable[tuple[Path, tuple[int, int], float | None, Iterable[Annotation]]]) -> "TrainingData":
        """The Train and Validation regions among each (slide, dimensions, µm/px, annotations), clipped to the slide
        as training clips them, and the label classes of the slides they lie on."""
        train, validation, labels, resolutions = [], [], [], []
        for slide, dimensions, mpp, shapes in slides:
            resolutions.append((slide, mpp))
            placed = len(train) + len(validation)
            classes: set[str] = set()
            for annotation in shapes:
                region = Region.around(annotation.bounds, dimensions) if annotation.role.is_area else None
                if region is not None:
                    (train if annotation.role is Role.REGION else validation).append((slide, region))
                elif annotation.role is Role.LABEL:
                    classes.add(annotation.cls.name)
            if len(train) + len(validation) > placed:
                labels.append((slide, frozenset(classes)))
        return cls(tuple(train), tuple(validation), tuple(labels), tuple(resolutions))

    def unlabelled(self) -> list[Path]:
        """The slides with a region but no label to learn from."""
        return [slide for slide, classes in self.labels if not classes]

    def plan_text(self, choice: TrainingChoice) -> str:
        """The step plan of the largest Train region at the chosen resolution (the one that sets the peak memory);
        GigaPathError when the memory budget is too small for it."""
        if not self.train:
            return "no Train region"
        resolutions = dict(self.resolutions)
        plans = [choice.plan(region, resolutions.get(slide)) for slide, region in self.train]
        plan = max(plans, key=lambda p: p.peak_bytes).describe()
        text = plan if len(self.train) == 1 else f"the largest of {len(self.train)} regions, {plan}"
        unknown = list(dict.fromkeys(s.name for s, _ in self.train if resolutions.get(s) is None))
        if choice.mpp and unknown:  # said before Start, not in a dialog once the run has begun
            text += (f"; {', '.join(unknown)} record{'s' * (len(unknown) == 1)} no µm/px: read at its own pixels "
                     "(Tools > Slide resolution… gives a project slide one)")
        return text


def describe(regions: Placed) -> str:
    """"none", "1 region on a.svs", "3 regions on 2 slides"."""
    if not regions:
        return "none"
    slides = list(dict.fromkeys(slide for slide, _ in regions))
    where = slides[0].name if len(slides) == 1 else f"{len(slides)} slides"
    return f"{len(regions)} region{'s' * (len(regions) > 1)} on {where}"
