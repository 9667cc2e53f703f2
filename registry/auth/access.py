"""Who may do what: scopes as the Docker token spec writes them, and the access rules.

Rules map users and groups to repository name patterns and actions:

    auth:
      access:
        groups: {devs: [bob, carol]}
        rules:
          - repositories: ["team/*"]
            groups: [devs]
            actions: [pull, push]
          - repositories: ["public/*"]
            anonymous: true          # anyone, logged in or not
            actions: [pull]
          - repositories: ["*"]
            users: [alice]
            actions: ["*"]           # pull, push, delete

Without an `access` section every authenticated user may do everything and
anonymous clients nothing, as with Distribution's htpasswd.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from ..config import schema

ACTIONS = frozenset({"pull", "push", "delete"})


@dataclass(frozen=True)
class Scope:
    """`repository:<name>:<actions>`, or `registry:catalog:*`."""

    type: str
    name: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> "Scope":
        type_, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        if not type_ or not name:
            raise ValueError(f"invalid scope {text!r}")
        return cls(type_, name, frozenset(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


@dataclass(frozen=True)
class Identity:
    """The caller. `grants` is set for token holders: the token's access claim is what they may do."""

    name: str | None = None
    grants: tuple[Scope, ...] | None = None

    @property
    def anonymous(self) -> bool:
        return self.name is None


ANONYMOUS = Identity()


@dataclass(frozen=True)
class Rule:
    repositories: tuple[str, ...]
    actions: frozenset[str]
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    anonymous: bool = False

    def applies(self, user: str | None, groups: Iterable[str], repository: str) -> bool:
        if not any(fnmatch.fnmatchcase(repository, pattern) for pattern in self.repositories):
            return False
        if self.anonymous:
            return True
        if user is None:
            return False
        return "*" in self.users or user in self.users or bool(self.groups.intersection(groups))


@dataclass
class AccessRules:
    rules: list[Rule] = field(default_factory=list)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    #: no rules configured: authenticated users may do everything
    open_to_users: bool = True

    @classmethod
    def from_settings(cls, access: "schema.Access | None") -> "AccessRules":
        """No `auth.access` section: every authenticated user may do everything."""
        if access is None:
            return cls()
        groups = {group: frozenset(members) for group, members in access.groups.items()}
        rules = [
            Rule(tuple(rule.repositories), ACTIONS if "*" in rule.actions else frozenset(rule.actions),
                 frozenset(rule.users), frozenset(rule.groups), rule.anonymous)
            for rule in access.rules
        ]
        return cls(rules, groups, open_to_users=False)

    def groups_of(self, user: str) -> set[str]:
        return {group for group, members in self.groups.items() if user in members}

    def allowed(self, identity: Identity, repository: str) -> frozenset[str]:
        """The actions identity may take on repository."""
        if identity.grants is not None:
            return frozenset().union(*(s.actions for s in identity.grants
                                       if s.type == "repository" and s.name == repository))
        if self.open_to_users and not self.rules:
            return ACTIONS if not identity.anonymous else frozenset()
        groups = self.groups_of(identity.name) if identity.name else set()
        granted: set[str] = set()
        for rule in self.rules:
            if rule.applies(identity.name, groups, repository):
                granted |= rule.actions
        return frozenset(granted)

    def anonymous_may_pull_something(self) -> bool:
        return any(rule.anonymous and "pull" in rule.actions for rule in self.rules)
