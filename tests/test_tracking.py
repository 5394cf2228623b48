"""Experiment tracking through Accelerate's trackers (``log_with``; off by default)."""

from __future__ import annotations

from accelerate.tracking import GeneralTracker

from lumebench.models.tiny import build_model
from lumebench.train.batches import causal_lm_loss
from lumebench.train.loop import TrainConfig, train
from test_train_loop import CFG, SMALL, batches, tok  # noqa: F401  (fixtures)


class MemoryTracker(GeneralTracker):
    """A real Accelerate tracker that keeps what it is given in memory."""

    name = "memory"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.config: dict = {}
        self.records: list[tuple[int, dict]] = []

    @property
    def tracker(self):
        return self.records

    def store_init_configuration(self, values: dict):
        self.config = dict(values)

    def log(self, values: dict, step: int | None = None, **kwargs):
        self.records.append((step, dict(values)))


def test_losses_lr_and_evaluations_reach_the_tracker(tok, batches, tmp_path):  # noqa: F811
    tracker = MemoryTracker()
    model = build_model(tok, SMALL)
    res = train(model, causal_lm_loss, batches, TrainConfig(**CFG, log_with=[tracker]), out_dir=tmp_path,
                on_epoch_end=lambda epoch, step, m: {"forget_regurgitation": 0.5 + epoch / 10})
    assert tracker.config["lr"] == CFG["lr"] and tracker.config["log_with"] == "memory"
    steps = [(s, v) for s, v in tracker.records if "train/loss" in v]
    assert [s for s, _ in steps] == list(range(1, res.steps + 1))
    assert [v["train/loss"] for _, v in steps] == [h["loss"] for h in res.history]
    assert [v["train/lr"] for _, v in steps] == [h["lr"] for h in res.history]
    evals = [(s, v["eval/forget_regurgitation"]) for s, v in tracker.records if "eval/forget_regurgitation" in v]
    assert evals == [(4, 0.5), (8, 0.6), (12, 0.7)]


def test_tracking_is_off_by_default():
    assert TrainConfig().log_with is None
