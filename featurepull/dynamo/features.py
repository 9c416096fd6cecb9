"""Requested features that no found item holds. A misspelt name in ``--features`` would
otherwise be a column of nulls on every row, with found counts that look normal.

The rule, per read (a pull, or one shard of a job): a feature is refused when none of the
items found so far holds it, once ``CHECK_ITEMS`` items have been found — the read stops
there, without reading the rest — or at the end of the read when fewer were found (and at
least one was). A sparse feature (legitimately absent from many items) passes as soon as one
found item holds it; one held by none of the first ``CHECK_ITEMS`` found items, or by none
of a small read's, is refused like a typo, and ``allow_missing_features`` accepts it. Once
every requested feature has been seen the check costs nothing more.

The projection returns only the requested features, so to say what the items do hold, the
reader asks once, without a projection, for the whole items of ``SAMPLE_KEYS`` found keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Hashable, Sequence
from typing import Any

from featurepull.dynamo.layouts import Layout

CHECK_ITEMS = 1_000  # found items after which a feature none of them holds is refused
SAMPLE_KEYS = 3  # found keys whose whole items are read to list what items hold
_LISTED = 40  # names listed in the message at most


class FeatureCheck:
    """Which requested features the found items of one read hold, until all have been seen."""

    def __init__(self, features: Sequence[str], layout: Layout) -> None:
        self.features = list(features)
        self.layout = layout
        self.unseen = set(features)
        self.found = 0
        self.sample: list[Hashable] = []

    @property
    def active(self) -> bool:
        """True while some requested feature has not been seen on a found item."""
        return bool(self.unseen)

    def observe(self, items: Sequence[dict[str, Any]]) -> None:
        """Note the items of one answer (call only while :attr:`active`)."""
        features_of, unseen = self.layout.features_of, self.unseen
        for item in items:
            unseen.difference_update(features_of(item))
            if not unseen:
                break
        self.found += len(items)
        room = SAMPLE_KEYS - len(self.sample)
        self.sample += [self.layout.key_of(item) for item in items[:room]]

    def refused(self, finished: bool) -> list[str]:
        """The features to refuse now (requested order); empty while there is no verdict."""
        if not self.unseen or not self.found or (self.found < CHECK_ITEMS and not finished):
            return []
        return [name for name in self.features if name in self.unseen]


def refusal_message(where: str, check: FeatureCheck, missing: list[str],
                    held: list[str] | None, finished: bool) -> str:
    """What to tell the user: the features, how many items lacked them, what they hold."""
    kind = "feature" if check.layout.name == "feast" else "attribute"
    names = ", ".join(map(repr, missing))
    subject = f"{kind} {names} is" if len(missing) == 1 else f"{kind}s {names} are"
    items = (f"the {check.found:,} item{'s' if check.found != 1 else ''} found" if finished
             else f"the first {check.found:,} items found (the read stopped there)")
    text = f"{subject} held by none of {items} in {where}"
    if held is None:
        text += " (the features they hold could not be listed)"
    else:
        shown = ", ".join(held[:_LISTED]) + (f", … ({len(held)} in all)"
                                             if len(held) > _LISTED else "")
        where_held = "in their values map" if kind == "feature" else "as attributes"
        text += f"; they hold {where_held}: {shown or 'nothing'}"
        guesses = {name: match[0] for name in missing
                   if (match := difflib.get_close_matches(name, held, n=1))}
        if len(missing) == 1 and guesses:
            text += f" (did you mean {guesses[missing[0]]!r}?)"
        elif guesses:
            pairs = ", ".join(f"{guess!r} for {name!r}" for name, guess in guesses.items())
            text += f" (did you mean {pairs}?)"
    it, is_ = ("it", "it is") if len(missing) == 1 else ("them", "they are")
    return (f"{text}. Check --features; if {is_} sparse (absent from most items), pass "
            f"--allow-missing-features to read {it} as null where missing. No rows were "
            "written.")
