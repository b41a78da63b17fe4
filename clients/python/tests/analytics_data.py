"""Known events for the analytics tests, and a plain-Python model of what each analytics
query should answer for them (the semantics written in proto/eventline/v1/query.proto),
computed from the events alone: the tests compare the server's answers with it."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import eventline

DAY = timedelta(days=1)
MISSING = object()  # an event without the "plan" property


@dataclass(frozen=True)
class Sent:
    """One event as the tests send it."""

    index: int
    user_id: Optional[str]
    event_type: str
    timestamp: datetime
    plan: Any = MISSING

    @property
    def properties(self) -> Dict[str, Any]:
        return {} if self.plan is MISSING else {"plan": self.plan}


# (user, type, day, hour, minute, plan): six days from `base`, seven users, three types,
# events without a user, a "plan" property with string values, a number and no value.
SCRIPT: List[Tuple[Optional[str], str, int, int, int, Any]] = [
    ("u1", "signup", 0, 9, 0, "pro"),
    ("u1", "view", 0, 10, 0, "pro"),
    ("u1", "purchase", 0, 11, 0, "pro"),
    ("u1", "view", 1, 9, 0, "pro"),
    ("u1", "view", 3, 12, 0, MISSING),
    ("u2", "signup", 0, 12, 0, "free"),
    ("u2", "view", 0, 13, 0, "free"),
    ("u2", "view", 2, 8, 0, "free"),  # never purchases: drops out of the funnel
    ("u3", "signup", 1, 8, 0, "pro"),
    ("u3", "view", 1, 9, 30, "pro"),
    ("u3", "purchase", 4, 9, 0, "pro"),  # 3 days after signing up: outside a 2-day window
    ("u4", "signup", 1, 10, 0, MISSING),
    ("u4", "view", 1, 10, 0, MISSING),  # the same instant as the signup: in order
    ("u4", "purchase", 2, 9, 0, MISSING),
    ("u5", "view", 2, 10, 0, "free"),  # before the signup: not a funnel step
    ("u5", "signup", 3, 11, 0, "free"),
    ("u5", "purchase", 3, 11, 30, "free"),  # before the view: not the third step
    ("u5", "view", 3, 12, 0, "free"),
    ("u6", "signup", 4, 15, 0, "pro"),
    ("u6", "signup", 5, 9, 0, 5),  # the number 5; after the funnel's window
    ("u6", "view", 5, 10, 0, 5),  # after the funnel's window, within the conversion window
    (None, "view", 2, 14, 0, "free"),
    (None, "view", 4, 16, 0, MISSING),
    ("u7", "purchase", 2, 20, 0, "free"),
]


def base_day() -> datetime:
    """A UTC midnight a week ago: every event is in the past, and all in one window."""
    now = datetime.now(timezone.utc)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - 7 * DAY


def events(base: datetime) -> List[Sent]:
    return [
        Sent(index, user, event_type, base + day * DAY + timedelta(hours=hour, minutes=minute), plan)
        for index, (user, event_type, day, hour, minute, plan) in enumerate(SCRIPT)
    ]


def track_all(client: Any, sent: Sequence[Sent]) -> None:
    for event in sent:
        client.track(
            event.event_type, user_id=event.user_id, properties=event.properties, timestamp=event.timestamp
        )


# -- the model ---------------------------------------------------------------------------


def in_window(sent: Sequence[Sent], start: datetime, end: datetime, event_type: Optional[str] = None) -> List[Sent]:
    return [e for e in sent if start <= e.timestamp < end and event_type in (None, e.event_type)]


def value_key(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def group_order(selected: Sequence[Sent], limit: int) -> Tuple[List[str], bool, bool]:
    """The values with a group of their own (largest first, ties by value), and whether
    there are events without the property and events in "other"."""
    counts = Counter(value_key(e.plan) for e in selected if e.plan is not MISSING)
    ranked = sorted(counts, key=lambda key: (-counts[key], key))
    missing = any(e.plan is MISSING for e in selected)
    return ranked[:limit], missing, len(ranked) > limit


def groups(
    selected: Sequence[Sent], order: Tuple[List[str], bool, bool], keep_zeros: bool = False
) -> Tuple[eventline.PropertyGroup, ...]:
    values, has_missing, has_other = order
    counts = Counter(value_key(e.plan) for e in selected if e.plan is not MISSING)
    result = [eventline.PropertyGroup("value", json.loads(key), counts[key]) for key in values]
    if has_missing:
        result.append(eventline.PropertyGroup("missing", None, sum(e.plan is MISSING for e in selected)))
    if has_other:
        other = sum(count for key, count in counts.items() if key not in values)
        result.append(eventline.PropertyGroup("other", None, other))
    return tuple(group for group in result if keep_zeros or group.count > 0)


def count(
    sent: Sequence[Sent],
    start: datetime,
    end: datetime,
    event_type: Optional[str] = None,
    measure: str = "events",
    group_limit: Optional[int] = None,
) -> eventline.EventCount:
    selected = in_window(sent, start, end, event_type)
    if measure == "unique_users":
        return eventline.EventCount(len({e.user_id for e in selected if e.user_id is not None}), True)
    if group_limit is None:
        return eventline.EventCount(len(selected), True)
    return eventline.EventCount(len(selected), True, groups(selected, group_order(selected, group_limit)))


def top_event_types(
    sent: Sequence[Sent], start: datetime, end: datetime, limit: int, group_limit: Optional[int] = None
) -> List[eventline.EventTypeCount]:
    selected = in_window(sent, start, end)
    counts = Counter(e.event_type for e in selected)
    ranked = sorted(counts, key=lambda name: (-counts[name], name))[:limit]
    result = []
    for name in ranked:
        of_type = [e for e in selected if e.event_type == name]
        split = () if group_limit is None else groups(of_type, group_order(of_type, group_limit))
        result.append(eventline.EventTypeCount(name, counts[name], split))
    return result


def series(
    sent: Sequence[Sent],
    start: datetime,
    end: datetime,
    width: timedelta,
    event_type: Optional[str] = None,
    measure: str = "events",
    group_limit: Optional[int] = None,
) -> eventline.Timeseries:
    """Buckets of `width` (an hour or a day; `start` is already aligned)."""
    selected = in_window(sent, start, end, event_type)
    order = None if group_limit is None else group_order(selected, group_limit)
    buckets = []
    bucket_start = start
    while bucket_start < end:
        inside = [e for e in selected if bucket_start <= e.timestamp < bucket_start + width]
        if measure == "unique_users":
            number = len({e.user_id for e in inside if e.user_id is not None})
        else:
            number = len(inside)
        split = () if order is None else groups(inside, order, keep_zeros=True)
        buckets.append(eventline.Bucket(bucket_start, number, split))
        bucket_start += width
    return eventline.Timeseries(tuple(buckets), True)


def by_user(sent: Sequence[Sent], keep: Callable[[Sent], bool]) -> Dict[str, List[Sent]]:
    users: Dict[str, List[Sent]] = defaultdict(list)
    for event in sorted(sent, key=lambda e: (e.timestamp, e.index)):
        if event.user_id is not None and keep(event):
            users[event.user_id].append(event)
    return users


def funnel(
    sent: Sequence[Sent],
    steps: Sequence[str],
    window: timedelta,
    start: datetime,
    end: datetime,
    keep: Callable[[Sent], bool] = lambda event: True,
    group_limit: Optional[int] = None,
) -> eventline.Funnel:
    """Each user enters at their first steps[0] event in [start, end); each next step is
    the earliest unused event of its type at or after the previous step's, at most
    `window` after entering (the earliest choice is never worse for the next steps)."""
    reached: Dict[str, Tuple[int, Sent]] = {}
    for user, history in by_user(sent, keep).items():
        entering = next((e for e in history if e.event_type == steps[0] and start <= e.timestamp < end), None)
        if entering is None:
            continue
        used: Set[int] = {entering.index}
        last = entering.timestamp
        depth = 1
        for step in steps[1:]:
            candidate = next(
                (
                    e
                    for e in history
                    if e.event_type == step
                    and e.index not in used
                    and last <= e.timestamp <= entering.timestamp + window
                ),
                None,
            )
            if candidate is None:
                break
            used.add(candidate.index)
            last = candidate.timestamp
            depth += 1
        reached[user] = (depth, entering)

    def step_counts(users: Sequence[Tuple[int, Sent]]) -> Tuple[eventline.FunnelStep, ...]:
        return tuple(
            eventline.FunnelStep(step, sum(depth > index for depth, _ in users))
            for index, step in enumerate(steps)
        )

    everyone = list(reached.values())
    if group_limit is None:
        return eventline.Funnel(step_counts(everyone))
    entering_events = [entering for _, entering in everyone]
    values, has_missing, has_other = group_order(entering_events, group_limit)
    split = [
        eventline.FunnelGroup(
            "value",
            json.loads(key),
            step_counts([item for item in everyone if item[1].plan is not MISSING and value_key(item[1].plan) == key]),
        )
        for key in values
    ]
    if has_missing:
        split.append(
            eventline.FunnelGroup("missing", None, step_counts([item for item in everyone if item[1].plan is MISSING]))
        )
    if has_other:
        rest = [item for item in everyone if item[1].plan is not MISSING and value_key(item[1].plan) not in values]
        split.append(eventline.FunnelGroup("other", None, step_counts(rest)))
    return eventline.Funnel(step_counts(everyone), tuple(split))


def retention(
    sent: Sequence[Sent], start_type: str, return_type: str, width: timedelta, start: datetime, end: datetime
) -> List[eventline.RetentionCohort]:
    """`start` is a UTC midnight. A user's cohort is the interval of their first start
    event in the window; returned[k] holds the users with a return event k intervals
    later (in their own interval: at or after the first start event, and another event)."""
    intervals = math.ceil((end - start) / width)
    users: List[Set[str]] = [set() for _ in range(intervals)]
    returned: List[List[Set[str]]] = [[set() for _ in range(intervals - c)] for c in range(intervals)]
    for user, history in by_user(sent, lambda event: True).items():
        first = next((e for e in history if e.event_type == start_type and start <= e.timestamp < end), None)
        if first is None:
            continue
        cohort = (first.timestamp - start) // width
        users[cohort].add(user)
        for event in history:
            if event.event_type == return_type and event is not first and first.timestamp <= event.timestamp < end:
                returned[cohort][(event.timestamp - start) // width - cohort].add(user)
    return [
        eventline.RetentionCohort(start + c * width, len(users[c]), tuple(len(r) for r in returned[c]))
        for c in range(intervals)
    ]
