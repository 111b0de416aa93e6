"""Wall-clock of Selective-Backprop against standard training, on scikit-learn's digits.

Both runs train the same MLP from the same start for the same number of epochs (every
example forwarded once per epoch) and report test accuracy, examples back-propagated and
seconds. Selective-Backprop pays one extra no-grad forward per example and saves the
forward+backward of the examples it skips, so the saving grows with the cost of the
backward pass (``--hidden``) and with the selectivity (``--beta``).

    python benchmarks/selective_backprop.py --epochs 20 --hidden 512 --beta 1 --target 0.96
"""

from __future__ import annotations

import argparse
import time

import torch

import optimkit


def digits(seed=0):
    from sklearn.datasets import load_digits  # dev/bench extra

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]]


def model(hidden, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    )


def run(args, selective: bool) -> dict:
    x, y, x_test, y_test = digits(args.seed)
    net = model(args.hidden, args.seed)
    opt = optimkit.Adam(net.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    sb = optimkit.SelectiveBackprop(net, loss_fn, opt, args.batch_size, beta=args.beta,
                                    generator=torch.Generator().manual_seed(args.seed))
    order = torch.Generator().manual_seed(args.seed + 1)
    backpropagated, seconds, curve = 0, 0.0, []
    for _ in range(args.epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), args.batch_size):
            idx = perm[i:i + args.batch_size]
            if selective:
                sb.step(x[idx], y[idx])
            else:
                loss_fn(net(x[idx]), y[idx]).mean().backward()
                opt.step()
                opt.zero_grad()
                backpropagated += len(idx)
        seconds += time.perf_counter() - start
        with torch.no_grad():  # evaluation is not timed
            curve.append((seconds, (net(x_test).argmax(1) == y_test).float().mean().item()))
    count = sb.examples_backpropagated if selective else backpropagated
    to_target = next((t for t, acc in curve if acc >= args.target), None)
    return {"seconds": seconds, "accuracy": curve[-1][1], "backpropagated": count,
            "to_target": to_target}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.96,
                        help="test accuracy for the time-to-target column")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="best of N timings")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for name, selective in (("standard", False), ("selective-backprop", True)):
        runs = [run(args, selective) for _ in range(args.repeats)]
        results[name] = min(runs, key=lambda r: r["seconds"])
    print(f"digits MLP hidden={args.hidden}, {args.epochs} epochs, batch {args.batch_size}, "
          f"beta={args.beta}, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'':<20}{'seconds':>10}{'accuracy':>10}{'backprop':>10}"
          f"{f'to {args.target:.2f}':>12}")
    for name, r in results.items():
        to = "never" if r["to_target"] is None else f"{r['to_target']:.2f}s"
        print(f"{name:<20}{r['seconds']:>10.2f}{r['accuracy']:>10.4f}"
              f"{r['backpropagated']:>10}{to:>12}")
    base, sb = results["standard"], results["selective-backprop"]
    saving = 1 - sb["seconds"] / base["seconds"]
    print(f"wall-clock saving: {100 * saving:.1f}%  "
          f"(back-propagated {100 * sb['backpropagated'] / base['backpropagated']:.0f}% "
          f"of the examples; accuracy {sb['accuracy'] - base['accuracy']:+.4f})")
    if base["to_target"] and sb["to_target"]:
        print(f"time to {args.target:.2f} accuracy: {sb['to_target']:.2f}s vs "
              f"{base['to_target']:.2f}s ({100 * (1 - sb['to_target'] / base['to_target']):.1f}% "
              "saved)")
    return results


if __name__ == "__main__":
    main()
