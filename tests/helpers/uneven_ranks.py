"""Run under torchrun by tests/test_distributed.py: a training run in which
only rank 1 meets trouble, a non-finite loss or the time limit.
Each rank writes what it ended with to OUT/result-rankN.json.

Usage: uneven_ranks.py DATA_FOLDER OUT {nan,time}
"""

import json
import os
import sys
from pathlib import Path
from typing import Callable

from autocolor.train import ColorizationLoss, TrainConfig, train


def run_config(data: str, out: str, time_limit_min: float | None = None) -> TrainConfig:
    return TrainConfig(model="cae", data=f"folder:{data}", out=out, steps=5, batch_size=8, checkpoint_every=100,
                       eval_every=100, time_limit_min=time_limit_min)


def nan_on_third_batch() -> Callable:
    """A ``ColorizationLoss.forward`` whose third call returns NaN."""
    real, calls = ColorizationLoss.forward, {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        loss = real(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    return forward


def main(data: str, out: str, trouble: str) -> None:
    rank = int(os.environ["RANK"])
    if trouble == "nan" and rank == 1:
        ColorizationLoss.forward = nan_on_third_batch()
    time_limit = 0.0 if trouble == "time" and rank == 1 else None  # rank 1's clock runs out after one step
    result = train(run_config(data, out, time_limit), progress=False)
    # A file per rank: the ranks share one stdout, where their lines may interleave.
    summary = {"rank": rank, "step": result["step"], "spread": result["rank_weight_spread"]}
    (Path(out) / f"result-rank{rank}.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(*sys.argv[1:])
