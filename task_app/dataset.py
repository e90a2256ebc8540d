"""The task app's view of the panel: (split, seed) -> one Banking77 example.

The task app never loads data itself: the caller hands it the session's
`Splits`, so the rollouts of an optimizer and the suite's own evaluation
address the same examples by the same seeds. A seed is an index into the
named split; out-of-range seeds are an error (not wrapped modulo), so a
misconfigured job fails loudly instead of silently re-using examples.

Besides train, val and test there is `trainval` (train followed by val): a
hosted Synth job sends one `env_config` for all its seeds, so it can only
address both its training seeds and its validation seeds in one seed space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mipro_bench.data import Example, Splits

DEFAULT_SPLIT = "train"
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test", "trainval")


class TaskInputError(ValueError):
    """A request naming something the task app does not have (answered with a 4xx)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TaskDataset:
    splits: Splits

    @property
    def labels(self) -> tuple[str, ...]:
        return self.splits.labels

    def examples(self, split: str) -> tuple[Example, ...]:
        if split == "trainval":
            return self.splits.train.examples + self.splits.val.examples
        if split in ("train", "val", "test"):
            return self.splits.by_name(split).examples
        raise TaskInputError(
            "unknown_split",
            f"unknown split {_short(split)}; expected one of {', '.join(SPLIT_NAMES)}",
        )

    def size(self, split: str) -> int:
        return len(self.examples(split))

    def example(self, split: str, seed: Any) -> Example:
        """The example at index `seed` of `split`, or TaskInputError saying why not."""
        examples = self.examples(split)
        # bool is an int in Python; a JSON true is not a seed.
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TaskInputError(
                "invalid_seed", f"seed must be an integer, got {type(seed).__name__}"
            )
        if not 0 <= seed < len(examples):
            raise TaskInputError(
                "seed_out_of_range",
                f"seed {_short(seed)} is out of range for split {split!r}: "
                f"expected 0 <= seed < {len(examples)}",
            )
        return examples[seed]

    def describe(self) -> dict[str, Any]:
        """The taskset description served at /task_info without seeds."""
        return {
            "id": "banking77",
            "name": "Banking77 intent classification",
            "splits": list(SPLIT_NAMES),
            "default_split": DEFAULT_SPLIT,
            "sizes": {name: self.size(name) for name in SPLIT_NAMES},
            "num_labels": len(self.labels),
            "labels": list(self.labels),
            "data_seed": self.splits.seed,
            "source": self.splits.source,
            "digests": self.splits.digests(),
            "seeds": "a seed is an index into the split: 0 <= seed < size",
        }


def _short(value: Any, limit: int = 60) -> str:
    """repr() cut to `limit` characters, so a hostile value cannot bloat an error."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
