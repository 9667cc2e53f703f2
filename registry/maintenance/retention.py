"""Retention policies: which tags each repository keeps; the others are removed (untagged).

    storage:
      retention:
        - repositories: ["team/*"]        # shell-style patterns on the whole name (`*` crosses `/`)
          keeplast: 10                    # the 10 tags written most recently
          keeptags: ["^v\\d+", "^latest$"]  # tags a regular expression finds (searched, so anchor it)
          keepdays: 30                    # tags written within the last 30 days

A tag is kept when ANY rule matching its repository keeps it; a repository no rule matches is
left alone. "Written" is when the tag was last pushed: the mtime of its current link. Only tags
go: the manifests stay (pullable by digest) until a garbage collection with deleteuntagged
removes those no tag reaches, and frees their blobs.

A tag pushed again between the evaluation and its deletion is left alone (its link's mtime
changed); a push landing in the instant between that check and the delete can still lose its tag.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from dataclasses import dataclass, field

from .. import layout
from ..config import schema
from ..domain import Registry
from ..links import delete_quietly
from ..references import Digest

log = logging.getLogger("registry.retention")

DAY = 86400.0


@dataclass(frozen=True)
class RetentionRule:
    repositories: tuple[str, ...]
    keep_last: int | None = None
    keep_tags: tuple[re.Pattern[str], ...] = ()
    keep_days: float | None = None

    def applies_to(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.repositories)

    def keeps(self, newest_first: list[tuple[str, float]], now: float) -> set[str]:
        """The tags this rule keeps, of a repository's (tag, written) newest first."""
        kept = {tag for tag, _ in newest_first[:self.keep_last or 0]}
        kept.update(tag for tag, _ in newest_first if any(p.search(tag) for p in self.keep_tags))
        if self.keep_days is not None:
            kept.update(tag for tag, written in newest_first if written >= now - self.keep_days * DAY)
        return kept


@dataclass
class RetentionReport:
    dry_run: bool = False
    deleted: list[tuple[str, str, Digest | None]] = field(default_factory=list)  # (repository, tag, its target)
    repositories: int = 0  # repositories a rule matched
    skipped: int = 0  # tags pushed again while the policy was being applied

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        text = f"{verb} {len(self.deleted)} tag(s) in {self.repositories} repositor{'y' if self.repositories == 1 else 'ies'}"
        if self.skipped:
            text += f"; kept {self.skipped} tag(s) pushed again meanwhile"
        return text


@dataclass(frozen=True)
class RetentionPolicy:
    rules: tuple[RetentionRule, ...] = ()

    @classmethod
    def from_settings(cls, rules: list[schema.RetentionRule]) -> RetentionPolicy:
        """The `storage.retention` rules (none: nothing is deleted)."""
        return cls(tuple(RetentionRule(tuple(rule.repositories), rule.keeplast, tuple(rule.keeptags), rule.keepdays)
                         for rule in rules))

    async def apply(self, registry: Registry, dry_run: bool = False, now: float | None = None) -> RetentionReport:
        report = RetentionReport(dry_run=dry_run)
        now = time.time() if now is None else now
        manifests = registry.manifests
        names = await registry.backend.find_dirs_containing(layout.REPOSITORIES, layout.REPOSITORY_MARKER,
                                                            skip=layout.is_internal)
        for name in sorted(names):
            rules = [rule for rule in self.rules if rule.applies_to(name)]
            if not rules:
                continue
            report.repositories += 1
            targets = await manifests.tag_targets(name)
            newest_first = sorted(((tag, written) for tag, _, written in targets), key=lambda t: (-t[1], t[0]))
            kept = set().union(*(rule.keeps(newest_first, now) for rule in rules))
            for tag, target, written in sorted(targets, key=lambda t: t[0]):
                if tag in kept:
                    continue
                if not dry_run:
                    if await manifests.tag_written_at(name, tag) != written:  # pushed again (or gone)
                        report.skipped += 1
                        continue
                    await delete_quietly(registry.backend, layout.tag_dir(name, tag))
                report.deleted.append((name, tag, target))
        return report

    async def apply_logged(self, registry: Registry) -> None:
        """For the background garbage collection: apply, and log what went."""
        report = await self.apply(registry)
        for name, tag, target in report.deleted:
            log.info("retention: deleted tag %s:%s (%s)", name, tag, target)
        if report.deleted:
            log.warning("retention: %s", report.summary())
