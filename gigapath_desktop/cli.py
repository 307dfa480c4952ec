"""`gigapath-desktop` command line: one subcommand per job; bad input ends in a one-line message and exit code 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from gigapath_desktop import __version__
from gigapath_desktop.errors import GigaPathError

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Command = getattr(args, "command", cmd_gui)
    try:
        return command(args)
    except GigaPathError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gigapath-desktop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands")

    p = sub.add_parser("gui", help="open the desktop app (the default)")
    p.add_argument("slide", nargs="?", help="slide to open (default: the bundled demo slide)")
    p.set_defaults(command=cmd_gui)

    p = sub.add_parser("info", help="print a slide's levels, resolution and properties")
    p.add_argument("slide")
    p.set_defaults(command=cmd_info)

    p = sub.add_parser("make-slide", help="write a synthetic pyramidal H&E-like TIFF and its tissue mask")
    p.add_argument("out", help="output .tif (the mask goes to OUT.mask.tif)")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mpp", type=float, default=0.5, help="microns per level-0 pixel written in the TIFF")
    p.set_defaults(command=cmd_make_slide)

    p = sub.add_parser("detect-tissue", help="detect tissue and write it as QuPath GeoJSON label annotations")
    p.add_argument("slide")
    p.add_argument("--out", required=True, help="output .geojson")
    p.set_defaults(command=cmd_detect_tissue)
    return parser


def cmd_gui(args: argparse.Namespace) -> int:
    print("error: the desktop window is not built yet; use the subcommands (see --help)", file=sys.stderr)
    return 1


def cmd_info(args: argparse.Namespace) -> int:
    from gigapath_desktop.slides import open_slide

    with open_slide(args.slide) as slide:
        print(f"file:        {slide.path}")
        print(f"format:      {slide.vendor}")
        print(f"mpp:         {slide.mpp or 'not recorded'}")
        for level, (dims, ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples)):
            print(f"level {level}:     {dims[0]} x {dims[1]}  (downsample {ds:g})")
        print(f"associated:  {', '.join(slide.associated_image_names) or 'none'}")
    return 0


def cmd_make_slide(args: argparse.Namespace) -> int:
    from gigapath_desktop.slides.synthetic import make_slide

    if args.width < 1 or args.height < 1:
        raise GigaPathError(f"--width and --height must be positive, got {args.width} x {args.height}")
    with tqdm(total=None, unit="tile", desc="make-slide", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        image, mask = make_slide(args.out, args.width, args.height, seed=args.seed, mpp=args.mpp, progress=progress)
    print(f"wrote {image} and {mask}")
    return 0


def cmd_detect_tissue(args: argparse.Namespace) -> int:
    from gigapath_desktop.annotations import detect_tissue, write_geojson
    from gigapath_desktop.slides import open_slide

    with open_slide(args.slide) as slide:
        annotations = detect_tissue(slide)
    write_geojson(annotations, Path(args.out))
    print(f"wrote {len(annotations)} tissue polygons to {args.out}")
    return 0
