"""Settings remembered between runs (JSON in the platform's config dir) and where autosaves go."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs

from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.mpp import MPP_TEXT, is_mpp
from gigapath_desktop.outputs import atomic_path, keep_aside
from gigapath_desktop.slides import Region
from gigapath_desktop.training.config import TrainConfig
from gigapath_desktop.training.plan import GIB, StepPlan, estimate, plan_step

MAX_RECENT = 10


def config_dir() -> Path:
    """`$GIGAPATH_CONFIG_DIR`, else the platform's user config dir."""
    env = os.environ.get("GIGAPATH_CONFIG_DIR")
    return Path(env) if env else platformdirs.user_config_path("gigapath-desktop")


def data_dir() -> Path:
    """`$GIGAPATH_DATA_DIR`, else the platform's user data dir (autosaved annotations, runs without a session)."""
    env = os.environ.get("GIGAPATH_DATA_DIR")
    return Path(env) if env else platformdirs.user_data_path("gigapath-desktop")


TILES = (64, 8192)  # the tile sizes the app offers, and 0: "auto" (TrainConfig also takes None: the whole region)
AUTO = 0


@dataclass(frozen=True)
class TrainingChoice:
    """The training settings a user picks in the app (checked like every TrainConfig, the tile as the app offers)."""

    tile: int = AUTO  # AUTO: planned from the memory budget
    learning_rate: float = TrainConfig.learning_rate
    steps: int = TrainConfig.steps
    memory_budget: float = TrainConfig.memory_budget  # GiB
    on_project: bool = False  # train on the Train regions of every project slide, not the open slide's
    sparse: bool = False  # pixels no label covers are ignored, instead of being the first class
    mpp: float | None = None  # train (and so predict) at this many µm/px on every slide; None: at its own level
    fold: int = TrainConfig.fold  # a new model's pixel fold (TrainConfig.fold)

    def __post_init__(self) -> None:
        if self.mpp is not None and not is_mpp(self.mpp):
            raise GigaPathError(f"the resolution must be {MPP_TEXT}, or the slides' own, got {self.mpp!r}")
        if not (isinstance(self.on_project, bool) and isinstance(self.sparse, bool)):
            raise GigaPathError(f"on_project and sparse must be true or false, got {self.on_project!r} and "
                                f"{self.sparse!r}")
        if (isinstance(self.tile, bool) or not isinstance(self.tile, int)
                or not (self.tile == AUTO or TILES[0] <= self.tile <= TILES[1])):
            raise GigaPathError(f"tile must be auto or a whole number of pixels from {TILES[0]} to {TILES[1]}, got "
                                f"{self.tile!r}")
        self.config()

    @classmethod
    def from_json(cls, data: dict) -> "TrainingChoice":
        """The choices saved in `data` (fields it lacks take their defaults; others, of a newer version, are left)."""
        return cls(**{k: v for k, v in dict(data).items() if k in cls.__dataclass_fields__})

    @property
    def config_tile(self) -> int | str:
        return "auto" if self.tile == AUTO else self.tile

    def config(self, **extra: object) -> TrainConfig:
        return TrainConfig(steps=self.steps, learning_rate=self.learning_rate, tile=self.config_tile,
                           memory_budget=self.memory_budget, fold=self.fold, **extra)  # type: ignore[arg-type]

    def plan(self, region: Region, slide_mpp: float | None = None) -> StepPlan:
        """How a step over `region` (of a slide of `slide_mpp` µm/px, None: not recorded) is computed with these
        settings, at the chosen resolution; GigaPathError when the budget is too small."""
        scale = slide_mpp / self.mpp if self.mpp and slide_mpp else 1.0
        height, width = max(1, round(region.height * scale)), max(1, round(region.width * scale))
        if self.tile == AUTO:
            return plan_step(height, width, self.memory_budget * GIB, fold=self.fold)
        return estimate(height, width, self.tile, fold=self.fold)


@dataclass
class Settings:
    recent_slides: list[str] = field(default_factory=list)
    last_folder: str = ""
    training: TrainingChoice = field(default_factory=TrainingChoice)  # the training choices last made in the app
    remote_url: str = ""  # the job server last used (its token is in the keyring, see credentials.py)
    last_project: str = ""  # the project open when the app last closed: it opens again at the next start
    window_state: str = ""  # where the docks and toolbars were, and which were closed (Qt's saveState, base64)

    def __post_init__(self) -> None:
        if not isinstance(self.remote_url, str):
            raise GigaPathError(f"remote_url must be a URL, got {self.remote_url!r}")
        if not (isinstance(self.recent_slides, list) and all(isinstance(p, str) for p in self.recent_slides)):
            raise GigaPathError(f"recent_slides must be a list of paths, got {self.recent_slides!r}")
        if not all(isinstance(v, str) for v in (self.last_folder, self.last_project, self.window_state)):
            raise GigaPathError(f"last_folder, last_project and window_state must be text, got {self.last_folder!r}, "
                                f"{self.last_project!r} and {self.window_state!r}")

    @classmethod
    def from_json(cls, data: dict) -> "Settings":
        """Settings from their JSON; a file written before the training choices were nested (their fields at the
        top level) keeps its choices."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "training"},
                   training=TrainingChoice.from_json(data.get("training", data)))

    @classmethod
    def load(cls) -> tuple["Settings", str | None]:
        """The saved settings, or the defaults and a note saying why (a damaged file is kept aside, renamed)."""
        path = config_dir() / "settings.json"
        try:
            data = json.loads(path.read_text())
            return cls.from_json(data), None
        except FileNotFoundError:
            return cls(), None
        except (OSError, ValueError, TypeError, AttributeError, RecursionError, GigaPathError) as exc:
            try:
                aside = f"it was kept as {keep_aside(path)}"
            except (OSError, GigaPathError) as move:
                aside = f"it could not be moved aside ({move})"
            return cls(), f"the settings file {path} could not be read ({exc}); starting with the defaults, {aside}"

    def save(self) -> None:
        folder = config_dir()
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "settings.json") as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1))

    def remember_slide(self, path: Path) -> None:
        text = str(path.resolve())
        self.recent_slides = [text] + [p for p in self.recent_slides if p != text][: MAX_RECENT - 1]
        self.last_folder = str(path.resolve().parent)


def exports_dir(slide: Path, session: Path | None = None) -> Path:
    """Where exports of `slide` go by default: the session's exports folder, else one folder per slide under
    `$GIGAPATH_EXPORT_DIR` or the user's documents (never the slide's own folder, often read-only or shared)."""
    if session is not None:
        return session / "exports"
    return documents_dir() / slide.stem


def documents_dir() -> Path:
    """The user's own folder for what the app writes (exports, sessions): `$GIGAPATH_EXPORT_DIR` or
    Documents/GigaPath Desktop. Save dialogs start here, never in the folder of the last slide opened (the bundled
    demo slide's is inside the app)."""
    env = os.environ.get("GIGAPATH_EXPORT_DIR")
    return Path(env) if env else platformdirs.user_documents_path() / "GigaPath Desktop"
