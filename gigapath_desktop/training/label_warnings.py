"""What to tell a user before training on labels a model cannot learn everything from."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from gigapath_desktop.annotations.classes import ClassMap
from gigapath_desktop.errors import TrainingError
from gigapath_desktop.training.data import RegionData

ONE_CLASS = 0.02  # warn when a region's labels are more than 98 % one class


def label_warnings(train: Sequence[RegionData], shares: Sequence[np.ndarray], names: Sequence[str]) -> list[str]:
    """A warning for each training region whose labels are nearly one class, else one naming the classes no region
    labels; `shares`: each region's labelled share of each class, `names`: the model's classes in label order."""
    one_class = [one_class_warning(region, share, names) for region, share in zip(train, shares)
                 if share.max() > 1 - ONE_CLASS]
    missing = [name for k, name in enumerate(names) if not any(share[k] for share in shares)]
    if missing and not one_class:  # (a one-class warning already says what the region lacks)
        return [missing_class_warning(missing, names)]
    return one_class


def validation_warnings(val: Sequence[RegionData], names: Sequence[str]) -> list[str]:
    """A warning for each validation region whose labels are nearly one class: its Dice says little (a model that
    finds nothing scores 1.0 on a region of glass). A region with no labelled pixel has no Dice to mislead."""
    said = []
    for region in val:
        try:
            shares = region.class_shares(len(names))
        except TrainingError:
            continue
        if shares.max() > 1 - ONE_CLASS:
            said.append(f"the labels of {region.name or 'a validation region'} are {100 * shares.max():.1f} % "
                        f"{names[int(np.argmax(shares))]}: its validation Dice says little about the other classes; "
                        f"validate on a region that holds them too")
    return said


def one_class_warning(region: RegionData, shares: np.ndarray, names: Sequence[str]) -> str:
    """What to say when one class holds more than 98 % of a region's labelled pixels, and what to do about it;
    `names`: the model's classes, in label order."""
    name = region.name or "a training region"
    if list(names) == ClassMap.tissue().names:
        what, other = ("tissue", "background (glass)") if shares[1] > 0.5 else ("background", "tissue")
        return (f"the labels of {name} are {100 * shares.max():.1f} % {what}: the model cannot learn what {other} "
                f"looks like from it; enlarge the region or move it so that it holds both tissue and background")
    top = int(np.argmax(shares))
    others = ", ".join(n for k, n in enumerate(names) if k != top)
    return (f"the labels of {name} are {100 * shares.max():.1f} % {names[top]}: the model cannot learn the other "
            f"classes ({others}) from it; label some of each class in it, or enlarge the region")


def missing_class_warning(missing: Sequence[str], names: Sequence[str]) -> str:
    """What to say when no training region labels some of a K-class model's classes (sparse strokes of Tumor and
    Stroma only: the model never predicts Background, so glass comes out as tissue)."""
    them = "it" if len(missing) == 1 else "them"
    return (f"no training region has labels of {', '.join(missing)}: the model will never predict {them}; label some "
            f"of {them} (a few strokes are enough), or train with dense labels (unlabelled pixels are {names[0]})")
