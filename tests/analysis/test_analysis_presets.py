"""The paper's experiments as `launch --preset` entries, and the paper's numbers in reports."""

from __future__ import annotations

import math

import pytest

from study.analysis.metrics import TrialPoint
from study.analysis.paper import REFERENCES, reference_for
from study.analysis.robustness import compare_with_paper, infer_preset
from study.analysis.summary import analyze_points
from study.cli import build_parser
from study.commands.launch import merged_config
from study.config import merge, normalize_mapping
from study.presets import PRESETS

PAPER = sorted(name for name in PRESETS if name.startswith("paper-"))
CIFAR = ("paper-toy", "paper-toy-nobn", "paper-resnet20", "paper-wrn-cifar100")


def _config(name: str):
    return merge(preset=normalize_mapping(PRESETS[name], source=name)).config


def test_the_issue_names_every_paper_preset_and_each_has_the_papers_numbers():
    assert {
        "paper-toy",
        "paper-mnist",
        "paper-resnet20",
        "paper-wrn-cifar100",
        "paper-resnet50-imagenet",
    } <= set(PAPER)
    for name in PAPER:
        assert reference_for(name) is REFERENCES[name]
        assert _config(name).name == name  # `report --study <preset>` finds it
        expected = ("sgd", "insgd-l1", "insgd-l2")
        if name == "paper-mnist":  # dense enough to decide, with the frozen control
            expected += ("insgd-l2-frozen",)
        assert _config(name).variants == expected


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_presets_use_the_papers_setup(name):
    c = _config(name)
    assert (c.epochs, c.batch_size, c.seeds) == (200, 128, 3)
    assert c.train["momentum"] == 0.9 and c.train["weight_decay"] == 5e-4
    assert c.train["schedule"] == "multistep" and c.train["augment"] is True
    assert c.train_config("insgd-l2", 0.1, 0.01, seed=0).effective_beta == 0.9  # beta = momentum


def test_the_toy_presets_cover_the_papers_lrs_and_beyond_with_and_without_bn():
    from study.search.space import log_points

    toy, nobn = _config("paper-toy"), _config("paper-toy-nobn")
    lrs = log_points(toy.lr_min, toy.lr_max, toy.lr_points)
    assert lrs[0] == 0.01 and 0.1 in [round(x, 12) for x in lrs] and max(lrs) > 0.25
    assert (toy.train["batchnorm"], nobn.train["batchnorm"]) == (True, False)
    # a GPU per Ray trial: fused (auto) the 45 toy CNNs run as bundles that fill it
    from study.run.fusing import fuse_size

    assert toy.gpus_per_trial == nobn.gpus_per_trial == 1.0 and toy.fuse == "auto"
    assert [fuse_size(c, pending=45, slots=1) for c in (toy, nobn)] == [23, 23]
    assert _config("paper-resnet50-imagenet").epochs == 90


def test_paper_mnist_is_dense_cpu_sized_and_flags_still_override():
    from study.search.space import log_points

    c = _config("paper-mnist")
    assert (c.dataset, c.model, c.train["batchnorm"]) == ("mnist5k", "mnist-toy", False)
    assert c.gpus_per_trial == 0 and c.grid_size == 240 and c.epochs <= 3
    lrs = log_points(c.lr_min, c.lr_max, c.lr_points)
    # quarter decades from 0.001 to 3.16
    assert len(lrs) == 15 and lrs[0] == 1e-3 and lrs[-1] == pytest.approx(10**0.5)
    steps = [math.log10(b) - math.log10(a) for a, b in zip(lrs[:-1], lrs[1:], strict=True)]
    assert steps == pytest.approx([0.25] * 14)
    assert c.seeds == 4
    args = build_parser().parse_args(
        ["launch", "--preset", "paper-mnist", "--epochs", "1", "--name", "mine"]
    )
    merged = merged_config(args).config
    assert (merged.epochs, merged.name, merged.model) == (1, "mine", "mnist-toy")


def test_a_stored_study_is_recognized_as_the_paper_preset_it_ran():
    for name in PAPER:
        stored = _config(name).study_dict()  # what launch stores: no preset name
        assert infer_preset("anything", stored) == name
    assert infer_preset("default", _config("default").study_dict()) is None
    assert infer_preset("x", {"preset": "paper-resnet20"}) == "paper-resnet20"


def test_paper_rows_meet_our_nearest_lr_and_say_not_run_otherwise():
    points = [
        TrialPoint(v, lr, acc, seed=s, setting="toy-cnn/cifar10")
        for v, accs in (("sgd", (0.79, 0.80, 0.60)), ("insgd-l2", (0.78, 0.80, 0.75)))
        for lr, acc in zip((0.01, 0.1, 0.316), accs, strict=True)
        for s in (0, 1)
    ]
    rows = compare_with_paper(analyze_points(points), REFERENCES["paper-toy"])
    at = {(r.lr, r.variant): r for r in rows}
    assert at[(0.25, "sgd")].ours_lr == 0.316 and at[(0.25, "sgd")].ours_mean == pytest.approx(60)
    assert at[(0.25, "insgd-l2")].paper_mean == 74.68
    assert at[(0.01, "insgd-l1")].ours_mean is None  # no insgd-l1 trials: "not run"
    nobn = compare_with_paper(analyze_points(points), REFERENCES["paper-toy-nobn"])
    assert all(r.ours_mean is None for r in nobn)  # our trials had BN
