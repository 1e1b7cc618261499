"""A parameter change is said one way everywhere: the commit message, `cdl run --save`, the Parameters dialog, the
runs dialog, the tuning dashboard and a stale reason."""

from runtime.domain.text import UNSET, change_text, changes_text


def test_a_change_reads_as_a_person_writes_it() -> None:
    assert changes_text({"epochs": (20, 3), "lr": (0.001, 0.0003182417)}) == "epochs 20 → 3; lr 0.001 → 0.0003182"
    assert changes_text({"use_tuned": (True, False)}, sep=", ", prefix="model.train.") == \
        "model.train.use_tuned true → false"
    assert change_text("canary", UNSET, 0) == "canary unset → 0"
    assert change_text("optimizer", "adam", "") == 'optimizer adam → ""'
    assert change_text("layers", None, [64, 32]) == "layers null → [64, 32]"


def test_floats_apart_past_four_digits_are_said_in_full() -> None:
    assert change_text("dropout", 0.30001, 0.30002) == "dropout 0.30001 → 0.30002"


def test_a_long_value_is_cut() -> None:
    said = change_text("stems", "x" * 100, "y")
    assert said == "stems " + "x" * 39 + "… → y" and len(said.split(" → ")[0]) == len("stems ") + 40
