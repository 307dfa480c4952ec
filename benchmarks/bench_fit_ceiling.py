"""What the network scores on pixels it was fitted to: the convergence suite's runs trained on their *validation*
region itself (the same defaults, seed and 150 steps) and scored there, beside the suite's held-out Dice.

A run whose fitted Dice is itself near 0.97 cannot reach 0.97 on other pixels however well it generalises: the gap
between the two columns is what the training region leaves unlearnt (pens of another colour, fainter strands), the
fitted column what the network of this size places wrong at edges after 150 steps. The synthetic cases' slides are
made by `bench_convergence.py` (the same files); the real slides' case fits the CMU skin slide.

Writes benchmarks/results/fit_ceiling.json and the table between the markers in README.md.
    python benchmarks/bench_fit_ceiling.py [--cases "a;b"] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_convergence as suite  # noqa: E402
from common import RESULTS, machine, replace_readme_block, run_child, write_result  # noqa: E402

MODELS = suite.WORK / "ceiling-models"
BELOW_TARGET = "sparse 5%;thin strands;real slides"  # the two-class cases with runs under 0.97


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=BELOW_TARGET, help="case names separated by ';'")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    path = RESULTS / "fit_ceiling.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    for name in args.cases.split(";"):
        for seed in map(int, args.seeds.split(",")):
            result = run_child(__file__, name, seed)
            print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
            runs = [r for r in runs if (r["case"], r["seed"]) != (name, seed)] + [result]
            write_result("fit_ceiling", {"steps": suite.STEPS, "runs": runs})
    update_readme(runs)


def run(name: str, seed: int) -> dict:
    _, val = suite.regions(name, seed)
    return suite.fit(name, seed, val, val, MODELS / f"{suite.slug(name)}-{seed}.keras", suite.default_fold())


def update_readme(runs: list[dict]) -> None:
    held_out = {(r["case"], r["seed"]): r for r in json.loads((RESULTS / "convergence.json").read_text())["runs"]}
    rows = ["| case | seed | held-out Dice (suite) | fitted to the validation region itself | fitted − held out | "
            "the model's own, held out / fitted |", "|---|---|---|---|---|---|"]
    order = list(suite.cases())
    for r in sorted(runs, key=lambda r: (order.index(r["case"]), r["seed"])):
        other = held_out.get((r["case"], r["seed"]))
        if other is None:
            continue
        rows.append(f"| {r['case']} | {r['seed']} | {other['val_dice']:.4f} | {r['val_dice']:.4f} | "
                    f"{r['val_dice'] - other['val_dice']:.4f} | {other['model_dice']:.4f} / {r['model_dice']:.4f} |")
    summary = (f"Measured {time.strftime('%Y-%m-%d')} on {machine()['cpus']} CPU cores: each run trained with the "
               f"defaults for {suite.STEPS} steps on its validation region and scored there as the suite scores "
               f"(the mask `predict` writes), beside the suite's run trained on the other half.")
    replace_readme_block("fit-ceiling", "\n".join([summary, "", *rows]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        print(json.dumps(run(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
