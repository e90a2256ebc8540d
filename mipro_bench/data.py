"""Banking77 loading and seeded, intent-stratified splits.

The earlier benchmark took "the first N rows" of train.csv, which is grouped by
intent (the first 200 rows hold two intents), so its splits measured almost
nothing. Every split here is drawn round-robin over intents with a fixed seed,
and carries a digest of its row ids so two runs can prove they used the same
panel.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mipro_bench.errors import UserError

ENV_DATA_DIR = "BANKING77_DIR"
HF_DATASET = "PolyAI/banking77"
REQUIRED_FILES = ("train.csv", "test.csv", "categories.json")
REQUIRED_COLUMNS = ("text", "category")
# The default panel (what the benchmark, the CLIs and the floors' calibration use).
DEFAULT_TRAIN_SIZE = 100
DEFAULT_VAL_SIZE = 50
DEFAULT_TEST_SIZE = 308  # 4 per intent: a stratified, paired panel


class DataError(UserError):
    """A data problem the user can fix; its message is one line naming file and problem."""


@dataclass(frozen=True)
class Example:
    """One labelled query. `id` is stable across runs: '<file>:<row index>'."""

    id: str
    text: str
    label: str


@dataclass(frozen=True)
class Banking77:
    """The whole data set: both files and the 77 intent names in canonical order."""

    train: tuple[Example, ...]
    test: tuple[Example, ...]
    labels: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Split:
    """A named, ordered panel of examples with a digest of its ids."""

    name: str
    examples: tuple[Example, ...]
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", split_digest(self.examples))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    def intents(self) -> set[str]:
        return {ex.label for ex in self.examples}


@dataclass(frozen=True)
class Splits:
    """The train/val/test panel every optimizer of one run shares."""

    train: Split
    val: Split
    test: Split
    labels: tuple[str, ...]
    seed: int
    source: str

    def by_name(self, name: str) -> Split:
        try:
            return {"train": self.train, "val": self.val, "test": self.test}[name]
        except KeyError:
            raise KeyError(f"unknown split {name!r}; expected train, val or test") from None

    def digests(self) -> dict[str, str]:
        return {"train": self.train.digest, "val": self.val.digest, "test": self.test.digest}


def split_digest(examples: Sequence[Example]) -> str:
    """sha256 over the ordered ids: same panel, same order, same digest."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.id.encode())
        h.update(b"\n")
    return h.hexdigest()


def default_data_dir() -> Path | None:
    """The local directory from BANKING77_DIR, if set."""
    value = os.environ.get(ENV_DATA_DIR)
    return Path(value).expanduser() if value else None


def load_banking77(data_dir: str | os.PathLike[str] | None = None) -> Banking77:
    """Load from a local directory (argument or BANKING77_DIR), else from the HF hub."""
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if directory is not None:
        return load_local(directory)
    return load_hub()


def load_local(directory: Path) -> Banking77:
    if not directory.is_dir():
        raise DataError(
            f"{directory}: no such directory; point --data-dir or {ENV_DATA_DIR} at a folder "
            f"holding {', '.join(REQUIRED_FILES)}"
        )
    # A local directory means "no hub": never let datasets/huggingface_hub retry the network.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    labels = _read_categories(directory / "categories.json")
    canonical = {name.lower(): name for name in labels}
    train = _read_rows(directory / "train.csv", "train", canonical)
    test = _read_rows(directory / "test.csv", "test", canonical)
    return Banking77(train=train, test=test, labels=labels, source=f"local:{directory.resolve()}")


def _read_categories(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise DataError(f"{path}: file missing (expected a JSON list of the intent names)")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise DataError(f"{path}: expected a non-empty JSON list of intent names (strings)")
    lowered = [v.lower() for v in value]
    if len(set(lowered)) != len(lowered):
        raise DataError(f"{path}: intent names repeat (compared case-insensitively)")
    return tuple(value)


def _read_rows(path: Path, prefix: str, canonical: dict[str, str]) -> tuple[Example, ...]:
    if not path.is_file():
        raise DataError(f"{path}: file missing (expected CSV with columns text,category)")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)}; found "
                    f"{', '.join(columns) or 'none'} (expected text,category)"
                )
            rows: list[Example] = []
            for index, row in enumerate(reader):
                text = (row.get("text") or "").strip()
                category = (row.get("category") or "").strip()
                label = canonical.get(category.lower())
                if label is None:
                    raise DataError(
                        f"{path}: line {index + 2}: unknown category {category!r} "
                        "(not in categories.json)"
                    )
                if not text:
                    raise DataError(f"{path}: line {index + 2}: empty text")
                rows.append(Example(id=f"{prefix}:{index}", text=text, label=label))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return tuple(rows)


def load_hub() -> Banking77:
    """PolyAI/banking77 from the Hugging Face hub (needs network and `datasets`)."""
    hint = (
        f"set {ENV_DATA_DIR} (or --data-dir) to a folder with {', '.join(REQUIRED_FILES)}, "
        "e.g. ../shared/banking77"
    )
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DataError(f"Banking77: the Hugging Face hub is switched off (offline); {hint}")
    try:
        import datasets  # heavy; only users with network need it
        from huggingface_hub import constants as hub_constants

        hub_constants.HF_HUB_ETAG_TIMEOUT = 5
        hub_constants.HF_HUB_DOWNLOAD_TIMEOUT = 10
        ds = datasets.load_dataset(HF_DATASET)
    except Exception as exc:  # network, auth, missing package: all end the same way
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DataError(
            f"Banking77: could not load {HF_DATASET} from the hub ({reason}); {hint}"
        ) from None
    labels = tuple(ds["train"].features["label"].names)
    return Banking77(
        train=tuple(
            Example(id=f"train:{i}", text=r["text"], label=labels[r["label"]])
            for i, r in enumerate(ds["train"])
        ),
        test=tuple(
            Example(id=f"test:{i}", text=r["text"], label=labels[r["label"]])
            for i, r in enumerate(ds["test"])
        ),
        labels=labels,
        source=f"hub:{HF_DATASET}",
    )


def stratified_sample(
    pool: Sequence[Example], size: int, labels: Sequence[str], rng: random.Random
) -> list[Example]:
    """Draw `size` examples round-robin over intents (in shuffled intent order).

    Each intent's examples are shuffled once; round r takes the r-th example of
    every intent that still has one. So 77 draws cover 77 intents and 154 draw
    exactly two of each, whenever the pool allows.
    """
    if size < 0:
        raise DataError(f"split size must be >= 0, got {size}")
    if size > len(pool):
        raise DataError(f"split size {size} is larger than the {len(pool)} available examples")
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in pool:
        by_label[ex.label].append(ex)
    order = [name for name in labels if by_label.get(name)]
    for name in order:
        rng.shuffle(by_label[name])
    rng.shuffle(order)
    chosen: list[Example] = []
    depth = 0
    while len(chosen) < size:
        for name in order:
            bucket = by_label[name]
            if depth < len(bucket):
                chosen.append(bucket[depth])
                if len(chosen) == size:
                    break
        depth += 1
    return chosen


def make_splits(
    data: Banking77, *, train_size: int, val_size: int, test_size: int, seed: int = 0
) -> Splits:
    """Seeded stratified train/val (from the train file) and test (from the test file).

    Val is drawn from what train left over, so the two never overlap; test comes
    from a different file, so it is disjoint from both.
    """
    for name, size in (("train", train_size), ("val", val_size), ("test", test_size)):
        if size < 1:
            raise DataError(f"--{name}-size must be at least 1, got {size}")
    rng = random.Random(f"banking77-splits:{seed}")
    train = stratified_sample(data.train, train_size, data.labels, rng)
    taken = {ex.id for ex in train}
    rest = [ex for ex in data.train if ex.id not in taken]
    val = stratified_sample(rest, val_size, data.labels, rng)
    test = stratified_sample(data.test, test_size, data.labels, random.Random(f"test:{seed}"))
    return Splits(
        train=Split("train", tuple(train)),
        val=Split("val", tuple(val)),
        test=Split("test", tuple(test)),
        labels=data.labels,
        seed=seed,
        source=data.source,
    )


def summary(splits: Splits) -> dict[str, object]:
    """A short, JSON-ready description of a panel (sizes, intents covered, digests)."""
    return {
        "source": splits.source,
        "seed": splits.seed,
        "labels": len(splits.labels),
        "splits": {
            s.name: {"size": len(s), "intents": len(s.intents()), "digest": s.digest}
            for s in (splits.train, splits.val, splits.test)
        },
    }


def main() -> None:
    """`python -m mipro_bench.data`: print the panel a run would use (a quick data check)."""
    import sys

    # The parser is the one every CLI shares (one-line errors, checked numbers).
    from mipro_bench.argtypes import OneLineParser, non_negative_int, positive_int

    prog = "python -m mipro_bench.data"
    parser = OneLineParser(prog=prog, description="Summarize the Banking77 splits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-size", type=positive_int, default=DEFAULT_TRAIN_SIZE)
    parser.add_argument("--val-size", type=positive_int, default=DEFAULT_VAL_SIZE)
    parser.add_argument("--test-size", type=positive_int, default=DEFAULT_TEST_SIZE)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    args = parser.parse_args()
    try:
        splits = make_splits(
            load_banking77(args.data_dir),
            train_size=args.train_size,
            val_size=args.val_size,
            test_size=args.test_size,
            seed=args.seed,
        )
    except DataError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary(splits), indent=2))


if __name__ == "__main__":
    main()
