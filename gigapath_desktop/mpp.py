"""µm per pixel: the one range every entry point accepts (slides, models, training specs, the command line)."""
from __future__ import annotations

from gigapath_desktop.errors import GigaPathError

# 1 nm (far finer than light resolves, ~0.2 µm) to 1 mm (a whole slide in a few dozen pixels). Outside it pixel
# areas and scales under- or overflow (1e-300 µm/px is a pixel of 0 µm²).
MPP_RANGE = (1e-3, 1e3)
MPP_TEXT = f"a positive number of µm per pixel from {MPP_RANGE[0]:g} to {MPP_RANGE[1]:g}"


def is_mpp(value: object) -> bool:
    """Whether `value` is a µm/px within MPP_RANGE (NaN, infinities, bools and non-numbers are not)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and MPP_RANGE[0] <= value <= MPP_RANGE[1])


def check_option(option: str, value: float | None) -> None:
    """A command-line µm/px option (None: not given) in range, else the one error line naming it."""
    if value is not None and not is_mpp(value):
        raise GigaPathError(f"{option} must be {MPP_TEXT}, got {value}")
