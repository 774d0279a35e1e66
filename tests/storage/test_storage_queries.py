"""The query API: every filter column, typed values, ordering, and the JSON contract."""

from __future__ import annotations

import math
import operator
from typing import Any

import pytest

import storage
from storage import queries
from storage.errors import StorageError

#: The keys `insgd-study query --format json` promises (issue: the documented contract).
CONTRACT = {"study", "trial_number", "state", "optimizer", "norm", "lr", "eps", "seed",
            "val_accuracy", "best_val_accuracy", "diverged", "stopped_early",
            "epochs_completed", "node_id", "hostname", "wall_seconds"}  # fmt: skip


def _populate(writer: storage.ResultWriter, make_epoch) -> None:
    """Two studies; the first has trials that differ in every filterable column."""
    writer.create_study("grid", {"sampler": "grid"}, "v1")
    writer.create_study("other", {"sampler": "tpe"}, "v1")
    norms = ["none", "l1", "l2"]
    for n in range(9):
        optimizer = "sgd" if n % 3 == 0 else "insgd"
        config = {
            "optimizer": optimizer, "norm": norms[n % 3], "normalizer": ["log", "nlms"][n % 2],
            "granularity": ["layer", "channel"][n % 2], "lr": [0.01, 0.1, 1.0][n // 3],
            "eps": [0.01, 0.001][n % 2], "beta": [0.9, 0.5][n % 2], "momentum": [0.9, 0.0][n % 2],
            "weight_decay": [5e-4, 0.0][n % 2], "batch_size": [64, 128][n % 2],
            "seed": n % 2, "model": ["mlp", "toy-cnn"][n % 2],
            "dataset": ["digits", "cifar10"][n % 2], "epochs": 2 + n % 2,
        }  # fmt: skip
        where = {"node_id": f"node{n % 3}", "hostname": f"host{n % 2}", "device_name": f"d{n % 3}"}
        variant = "sgd" if n % 3 == 0 else f"insgd-{norms[n % 3]}" + ("-frozen" if n > 5 else "")
        writer.start_trial("grid", n, {"config": config, "variant": variant, **where})
        if n == 8:
            continue  # stays RUNNING, with no results at all (NULLs)
        epochs = [make_epoch(e, val_accuracy=0.5 + n / 100 + e / 1000) for e in range(1 + n % 2)]
        state = ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"][n % 4]
        writer.finish_trial(
            "grid",
            n,
            {"state": state, "stopped_early": state == "PRUNED", "diverged": n == 7,
             "wall_seconds": 10.0 + n, "final_train_loss": 0.1 * n},
            epochs,
        )  # fmt: skip
    writer.finish_trial("other", 0, {"optimizer": "insgd", "norm": "l2", "lr": 0.1}, [])


def _matches(actual: Any, compare: Any, value: Any) -> bool:
    if actual is None:
        return compare is operator.ne  # NULL is "not equal" to any value
    return bool(compare(actual, value))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def test_every_filter_column_selects_exactly_the_matching_trials(writer, make_epoch) -> None:
    _populate(writer, make_epoch)
    everything = queries.list_trials(writer.engine)
    assert len(everything) == 10
    ops = {"=": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le,
           ">": operator.gt, "<": operator.lt}  # fmt: skip
    checked = 0
    for column, kind in queries.FILTER_COLUMNS.items():
        values = sorted({v for r in everything if (v := r.to_json_dict()[column]) is not None})
        assert len(values) >= 2, f"fixture does not vary {column}"
        cases = [(op, v) for op in ("=", "!=") for v in values]
        if kind in ("number", "integer"):  # ranges around the middle value
            cases += [(op, values[len(values) // 2]) for op in (">=", "<=", ">", "<")]
        for op, value in cases:
            got = queries.list_trials(writer.engine, where=[f"{column}{op}{_text(value)}"])
            expected = [
                (r.study, r.trial_number)
                for r in everything
                if _matches(r.to_json_dict()[column], ops[op], value)
            ]
            assert [(r.study, r.trial_number) for r in got] == expected, (column, op, value)
            checked += 1
    assert checked > 100


def test_combined_filters_ordering_and_the_json_contract(writer, make_epoch) -> None:
    """One populated database per backend, several checks (a PostgreSQL database costs ~1 s)."""
    _populate(writer, make_epoch)
    engine = writer.engine
    _check_combined_filters(engine)
    _check_ordering_and_limit(engine)
    _check_json_contract_and_epochs(engine)


def _check_combined_filters(engine) -> None:
    numbers = lambda rows: [r.trial_number for r in rows]  # noqa: E731
    # Repeated equality on one column = any of them; different columns must all hold.
    assert numbers(queries.list_trials(engine, "grid", ["norm=l1", "norm=l2", "lr>=0.1"])) == [
        4,
        5,
        7,
        8,
    ]
    assert numbers(queries.list_trials(engine, "grid", {"norm": ["l1", "l2"], "lr": 0.01})) == [
        1,
        2,
    ]
    assert numbers(queries.list_trials(engine, "grid", [("lr", ">", 0.01), ("lr", "<", 1)])) == [
        3,
        4,
        5,
    ]
    # Booleans take true/false/1/0, in any case; states and norms are case-insensitive.
    for word in ("true", "TRUE", "1"):
        assert numbers(queries.list_trials(engine, "grid", [f"diverged={word}"])) == [7]
    assert numbers(queries.list_trials(engine, "grid", ["stopped_early=0", "state=pruned"])) == []
    assert numbers(queries.list_trials(engine, "grid", ["norm=NONE", "state=complete"])) == [0]
    # A value is a bound parameter: quotes are just characters of a model name.
    assert queries.list_trials(engine, where=["model=mlp' OR '1'='1"]) == []
    assert len(queries.list_trials(engine)) == 10


def _check_ordering_and_limit(engine) -> None:
    rows = queries.list_trials(engine, "grid", order_by=["-val_accuracy"])
    accuracies = [r.final_val_accuracy for r in rows]
    assert accuracies[-1] is None  # NULLs last on both backends
    assert accuracies[:-1] == sorted(accuracies[:-1], reverse=True)
    rows = queries.list_trials(engine, order_by=["lr", "seed:desc"], limit=4)
    assert [(r.lr, r.seed, r.study, r.trial_number) for r in rows] == [
        (0.01, 1, "grid", 1),
        (0.01, 0, "grid", 0),
        (0.01, 0, "grid", 2),
        (0.1, 1, "grid", 3),
    ]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (["colour=red"], "unknown column 'colour'; choose from: study, trial_number"),
        (["lr=fast"], "lr takes a number, got 'fast'"),
        (["lr=nan"], "lr takes a number"),
        (["seed=1.5"], "seed takes an integer"),
        (["diverged=yes"], "diverged takes true/false/1/0"),
        (["state=DONE"], "state takes one of COMPLETE, PRUNED, FAIL, RUNNING"),
        (["norm=l3"], "norm takes one of none, l1, l2"),
        (["norm>=l1"], "needs a numeric column"),
        (["lr"], "expected KEY=VALUE"),
        ([("lr", "~", 1)], "unknown operator"),
    ],
)
def test_bad_filters_are_storage_errors(sqlite_engine, where, message) -> None:
    with pytest.raises(StorageError, match=message):
        queries.list_trials(sqlite_engine, where=where)


def test_unknown_study_or_order_column_is_an_error(sqlite_engine) -> None:
    storage.ResultWriter(sqlite_engine).create_study("real", {}, "v")
    with pytest.raises(StorageError, match="no study named 'nope' .*; studies: real"):
        queries.list_trials(sqlite_engine, "nope")
    with pytest.raises(StorageError, match="no study named 'nope'"):
        queries.trial_epochs(sqlite_engine, "nope", 0)
    with pytest.raises(StorageError, match="has no trial number 3"):
        queries.trial_epochs(sqlite_engine, "real", 3)
    with pytest.raises(StorageError, match="unknown column 'colour'"):
        queries.list_trials(sqlite_engine, order_by="-colour")


def _check_json_contract_and_epochs(engine) -> None:
    rows = queries.list_trials(engine, "grid")
    for row in rows:
        record = row.to_json_dict()
        assert CONTRACT <= set(record) and list(record) == list(queries.JSON_KEYS)
        assert record["val_accuracy"] == row.final_val_accuracy
        if record["val_accuracy"] is not None:
            assert 0.0 <= record["val_accuracy"] <= 1.0
            assert record["best_val_accuracy"] >= record["val_accuracy"]
    seven = rows[7].to_json_dict()
    assert seven == {**seven, "study": "grid", "trial_number": 7, "state": "FAIL",
                     "optimizer": "insgd", "norm": "l1", "lr": 1.0, "eps": 0.001, "seed": 1,
                     "val_accuracy": 0.5 + 7 / 100 + 1 / 1000, "diverged": True,
                     "stopped_early": False, "epochs_completed": 2, "node_id": "node1",
                     "hostname": "host1", "wall_seconds": 17.0}  # fmt: skip
    assert math.isclose(seven["best_val_accuracy"], 0.571)
    assert rows[0].norm == "none" and rows[8].state == "RUNNING"

    epochs = queries.trial_epochs(engine, "grid", 7)
    assert [(e.study, e.trial_number, e.epoch) for e in epochs] == [("grid", 7, 0), ("grid", 7, 1)]
    assert epochs[1].images_per_second == 1001.0
    everything = queries.study_epochs(engine, "grid")
    assert [(e.trial_number, e.epoch) for e in everything][:4] == [(0, 0), (1, 0), (1, 1), (2, 0)]
    assert len(everything) == sum(1 + n % 2 for n in range(8))
    studies = queries.list_studies(engine)
    assert [(s.name, s.config) for s in studies] == [
        ("grid", {"sampler": "grid"}),
        ("other", {"sampler": "tpe"}),
    ]
