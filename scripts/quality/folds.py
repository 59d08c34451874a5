"""K-fold splits of a JSONL file, and the summary of `rlhf moderate|reward|dpo eval --json` over folds.

    folds.py DATA.jsonl OUT_DIR --folds 5 --seed 0                 # OUT_DIR/fold{k}/{train,test}.jsonl
    folds.py --summarise [--json OUT.json] EVAL.json...            # mean ± std over the folds
    folds.py --table BASE_DIR NAME_DIR...                          # one markdown row per recipe
"""

import argparse
import json
import random
import statistics
from pathlib import Path


def split(data, out, folds, seed):
    lines = [l for l in open(data) if l.strip()]
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    for k in range(folds):
        test = set(order[k::folds])
        fold = Path(out) / f"fold{k}"
        fold.mkdir(parents=True, exist_ok=True)
        with open(fold / "train.jsonl", "w") as tr, open(fold / "test.jsonl", "w") as te:
            for i, line in enumerate(lines):
                (te if i in test else tr).write(line)


def mean_sd(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(paths):
    """{metric: [mean, sd]} over the folds, printed as a table."""
    reports = [json.load(open(p)) for p in paths]
    summary = {"folds": len(reports)}
    if "rewards/accuracies" in reports[0]:  # dpo eval: the implicit reward's
        for key in ("rewards/accuracies", "rewards/margins", "loss"):
            summary[key] = mean_sd([r[key] for r in reports])
            print(f"{key:<18} {summary[key][0]:6.3f} ± {summary[key][1]:5.3f}")
        return summary
    if "accuracy" in reports[0]:  # reward eval
        for key in ("accuracy", "mean_margin", "loss"):
            summary[key] = mean_sd([r[key] for r in reports])
            print(f"{key:<18} {summary[key][0]:6.3f} ± {summary[key][1]:5.3f}")
        return summary
    print(f"{'category':<18} {'AUPRC (mean ± std over ' + str(len(reports)) + ' folds)':<30} known positives")
    def show(name, values, known="", positives=""):
        summary[name] = mean_sd(values)
        print(f"{name:<18} {summary[name][0]:6.3f} ± {summary[name][1]:5.3f}   {known:>6} {positives:>9}")
    for c, category in enumerate(reports[0]["categories"]):
        rows = [r["categories"][c] for r in reports]
        show(category["category"], [r["auprc"] for r in rows], sum(r["known"] for r in rows), sum(r["positives"] for r in rows))
        if rows[0].get("ece") is not None:
            summary[category["category"] + " ECE"] = mean_sd([r["ece"] for r in rows])
    show("macro average", [r["macro_auprc"] for r in reports])
    show("any category", [r["any"]["auprc"] for r in reports], sum(r["any"]["known"] for r in reports), sum(r["any"]["positives"] for r in reports))
    if reports[0].get("ece") is not None:
        show("ECE", [r["ece"] for r in reports])
    return summary


def fold_values(d, key):
    """Per fold, the headline figure of an eval JSON (`accuracy`, `any`, `macro`)."""
    values = []
    for path in sorted(Path(d).glob("fold*/eval.json")):
        r = json.load(open(path))
        values.append({"accuracy": r.get("accuracy"), "any": r.get("any", {}).get("auprc"), "macro": r.get("macro_auprc")}[key])
    return values


def table(dirs):
    """One markdown row per recipe directory of scripts/quality/cv: mean ± sd over the folds,
    and the mean ± sd of its per-fold difference from the first (the baseline), which cancels
    how hard each fold is."""
    base = Path(dirs[0])
    keys = ["accuracy"] if "accuracy" in json.load(open(base / "fold0/eval.json")) else ["any", "macro"]
    for d in map(Path, dirs):
        times = [int(t) for t in open(d / "times").read().split()]
        args = open(d / "args").read().strip() or "(shipped config)"
        cells = []
        for key in keys:
            values, baseline = fold_values(d, key), fold_values(base, key)
            m, sd = mean_sd(values)
            cell = f"{m:.3f} ± {sd:.3f}"
            if d != base:
                diff = mean_sd([a - b for a, b in zip(values, baseline)])
                cell += f" ({diff[0]:+.3f} ± {diff[1]:.3f})"
            cells.append(cell)
        print(f"| {d.name} | `{args}` | " + " | ".join(cells) + f" | {statistics.mean(times):.0f} s |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summarise", action="store_true")
    parser.add_argument("--json", help="with --summarise: also write the summary here")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.summarise:
        summary = summarise(args.paths)
        if args.json:
            json.dump(summary, open(args.json, "w"), indent=1)
    elif args.table:
        table(args.paths)
    else:
        split(args.paths[0], args.paths[1], args.folds, args.seed)
