"""Banking77 loading, stratified seeded splits and clear data errors."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from mipro_bench.data import DataError, load_banking77, make_splits


@pytest.fixture
def tiny(tiny_data_dir: Path):
    return load_banking77(tiny_data_dir)


def test_tiny_loads_with_case_insensitive_labels(tiny) -> None:
    assert len(tiny.labels) == 6
    # one train row spells the intent in lower case; it maps to the canonical name
    assert {ex.label for ex in tiny.train} == set(tiny.labels)
    assert "Refund_not_showing_up" in {ex.label for ex in tiny.train}


def test_split_round_robin_on_tiny(tiny) -> None:
    splits = make_splits(tiny, train_size=12, val_size=6, test_size=6, seed=3)
    assert Counter(ex.label for ex in splits.train).most_common(1)[0][1] == 2
    assert len(splits.val.intents()) == 6
    assert {ex.id for ex in splits.train}.isdisjoint({ex.id for ex in splits.val})


def test_split_larger_than_pool_is_a_clear_error(tiny) -> None:
    with pytest.raises(DataError, match="larger than the"):
        make_splits(tiny, train_size=500, val_size=1, test_size=1)


@pytest.mark.parametrize("size", [0, -3])
def test_nonpositive_sizes_rejected(tiny, size: int) -> None:
    with pytest.raises(DataError, match="at least 1"):
        make_splits(tiny, train_size=size, val_size=1, test_size=1)


def _copy(tiny_data_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(tiny_data_dir, target)
    return target


def test_missing_file_names_the_file(tiny_data_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_data_dir, tmp_path)
    (d / "test.csv").unlink()
    with pytest.raises(DataError) as err:
        load_banking77(d)
    assert "test.csv" in str(err.value) and "missing" in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_columns(tiny_data_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_data_dir, tmp_path)
    (d / "train.csv").write_text("query,label\nhello,card_arrival\n")
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) text, category"):
        load_banking77(d)


def test_unknown_category(tiny_data_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_data_dir, tmp_path)
    with (d / "test.csv").open("a") as fh:
        fh.write("Where is my llama?,llama_delivery\n")
    with pytest.raises(DataError, match=r"test\.csv: line \d+: unknown category 'llama_delivery'"):
        load_banking77(d)


def test_bad_categories_json(tiny_data_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_data_dir, tmp_path)
    (d / "categories.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DataError, match=r"categories\.json: expected a non-empty JSON list"):
        load_banking77(d)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        load_banking77(tmp_path / "nowhere")


def test_hub_offline_fails_fast_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BANKING77_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="BANKING77_DIR"):
        load_banking77()


@pytest.fixture(scope="module")
def real(real_data_dir: Path):
    return load_banking77(real_data_dir)


@pytest.mark.integration
class TestRealBanking77:
    @pytest.fixture
    def data(self, real):
        return real

    def test_shape(self, data) -> None:
        assert len(data.labels) == 77
        assert len(data.train) == 10003 and len(data.test) == 3080

    def test_77_covers_every_intent(self, data) -> None:
        splits = make_splits(data, train_size=77, val_size=77, test_size=77, seed=0)
        assert len(splits.train.intents()) == 77
        assert len(splits.val.intents()) == 77
        assert len(splits.test.intents()) == 77

    def test_154_is_exactly_two_each(self, data) -> None:
        splits = make_splits(data, train_size=154, val_size=10, test_size=10, seed=0)
        assert set(Counter(ex.label for ex in splits.train).values()) == {2}

    def test_digest_depends_on_seed_only(self, data) -> None:
        a = make_splits(data, train_size=100, val_size=50, test_size=100, seed=7)
        b = make_splits(data, train_size=100, val_size=50, test_size=100, seed=7)
        c = make_splits(data, train_size=100, val_size=50, test_size=100, seed=8)
        assert a.digests() == b.digests()
        assert a.train.digest != c.train.digest and a.val.digest != c.val.digest

    def test_train_val_disjoint_test_from_other_file(self, data) -> None:
        splits = make_splits(data, train_size=500, val_size=300, test_size=200, seed=1)
        train_ids = {ex.id for ex in splits.train}
        assert train_ids.isdisjoint(ex.id for ex in splits.val)
        assert all(ex.id.startswith("test:") for ex in splits.test)

    def test_small_split_is_not_the_first_rows(self, data) -> None:
        splits = make_splits(data, train_size=5, val_size=3, test_size=3, seed=0)
        assert len(splits.train.intents()) == 5


@pytest.mark.parametrize("argv", [["--train-size", "x"], ["--seed", "-1"], ["--test-size", "0"]])
def test_data_cli_bad_option_is_one_line_exit_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mipro_bench import data

    monkeypatch.setattr("sys.argv", ["python -m mipro_bench.data", *argv])
    with pytest.raises(SystemExit) as exit_info:
        data.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "usage:" not in err


def test_data_cli_missing_dir_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mipro_bench import data

    monkeypatch.setattr("sys.argv", ["x", "--data-dir", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as exit_info:
        data.main()
    assert exit_info.value.code == 2
    assert "no such directory" in capsys.readouterr().err
