"""How much of a PPO iteration is matrix products, on both sides: runs the suite's PPO
benchmark once for rlhf and once for TRL's PPOTrainer under `perf record`, and prints each
side's seconds per iteration, the part of it spent in matrix products (the BLAS kernels both
sides call through LibTorch: every symbol with "gemm" or "gemv" in its name), and the ratio
rlhf would reach if everything but its products took no time: the most that work outside the
products can buy. Run through scripts/bench/products (it builds rlhf and the TRL venv).

A product's time is counted as thread time over the thread count: LibTorch runs a product on
all its threads at once. Needs `perf` (Debian: apt-get install linux-perf)."""

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the suite: its inputs, commands and readers)

PRODUCT = re.compile(r"gemm|gemv", re.IGNORECASE)


def symbol_samples(data):
    """{symbol: samples} of a perf.data file; a symbol perf cannot name goes by its library."""
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso,sym", "-n",
                             "-g", "none", "--percent-limit", "0"],
                            check=True, capture_output=True, text=True).stdout
    samples = {}
    for line in report.splitlines():
        # "    65.03%         23481  libtorch_cpu.so  [.] mkl_blas_def_sgemm_kernel_0_zen"
        m = re.match(r"\s*[0-9.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(.*)$", line)
        if m:
            dso, sym = m.group(2), m.group(3).strip()
            name = dso if sym.startswith("0x") else sym
            samples[name] = samples.get(name, 0) + int(m.group(1))
    return samples


def short(symbol):
    """A readable name: LibTorch's element-wise loops are templates named after their kernel."""
    kernel = re.search(r"::(\w+_(?:kernel|impl))\b", symbol)
    return kernel.group(1) if kernel else symbol[:60]


def profile(side, cmd_and_reader, work, name, frequency):
    cmd, reader = cmd_and_reader
    data = work / f"{name}.perf.data"
    out, err, _, _ = run.run(["perf", "record", "-q", "-F", str(frequency), "-o", str(data), "--", *cmd],
                             work, name)
    value = reader(out, err)["s/iteration"]
    samples = symbol_samples(data)
    products = sum(n for sym, n in samples.items() if PRODUCT.search(sym))
    others = sorted(((n, sym) for sym, n in samples.items() if not PRODUCT.search(sym)), reverse=True)
    return {"side": side, "s/iteration": value, "products": products, "total": sum(samples.values()),
            "others": others[:6]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", help="a preset or models/... directory (default small)")
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frequency", type=int, default=499, help="perf samples a second a thread")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("products: `perf` is not installed (Debian: apt-get install linux-perf)")
    work = run.ROOT / "target/bench/suite"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    inputs = run.Inputs(work, args.threads, "cpu")
    bench = run.ppo_bench(inputs, args.model, args.rollouts, args.iterations)
    run.log(f"{bench.group}: {bench.name}, {args.iterations} iterations, {args.threads} threads, "
            f"perf at {args.frequency} Hz")
    sides = [profile("rlhf", bench.ours, logs, "products.rlhf", args.frequency),
             profile(bench.reference, bench.theirs, logs, "products.reference", args.frequency)]
    for side in sides:
        # Every iteration (the first, warm-up one too) runs the same products.
        side["products_s"] = side["products"] / args.frequency / args.threads / args.iterations
        print(f"{side['side']}: {side['s/iteration']:.2f} s/iteration, of which matrix products "
              f"{side['products_s']:.2f} s ({100 * side['products'] / side['total']:.0f} % of its "
              "CPU time, start-up included)")
    ours, theirs = sides
    print(f"ratio: {theirs['s/iteration'] / ours['s/iteration']:.2f}×; with everything but rlhf's "
          f"products free: {theirs['s/iteration'] / ours['products_s']:.2f}×")
    print("rlhf's largest other symbols (share of its CPU time): " + "; ".join(
        f"{short(sym)} {100 * n / ours['total']:.1f} %" for n, sym in ours["others"]))


if __name__ == "__main__":
    main()
