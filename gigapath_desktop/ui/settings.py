"""Settings remembered between runs (JSON in the platform's config dir) and where autosaves go."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs

from gigapath_desktop.training.config import TrainConfig

MAX_RECENT = 10


def config_dir() -> Path:
    """`$GIGAPATH_CONFIG_DIR`, else the platform's user config dir."""
    env = os.environ.get("GIGAPATH_CONFIG_DIR")
    return Path(env) if env else platformdirs.user_config_path("gigapath-desktop")


def data_dir() -> Path:
    """`$GIGAPATH_DATA_DIR`, else the platform's user data dir (autosaved annotations, runs without a session)."""
    env = os.environ.get("GIGAPATH_DATA_DIR")
    return Path(env) if env else platformdirs.user_data_path("gigapath-desktop")


@dataclass
class Settings:
    recent_slides: list[str] = field(default_factory=list)
    last_folder: str = ""
    tile: int = 2048
    learning_rate: float = TrainConfig.learning_rate
    steps: int = TrainConfig.steps

    @classmethod
    def load(cls) -> "Settings":
        try:
            data = json.loads((config_dir() / "settings.json").read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return cls()

    def save(self) -> None:
        folder = config_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "settings.json.partial"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, folder / "settings.json")

    def remember_slide(self, path: Path) -> None:
        text = str(path.resolve())
        self.recent_slides = [text] + [p for p in self.recent_slides if p != text][: MAX_RECENT - 1]
        self.last_folder = str(path.resolve().parent)
