"""What a center's reply says of the patient's treatment in its first lines: "Flu/Cy started
today", "LD postponed to 2031-03-04", "product received", "please call me on +1 555 0100
between 14:00 and 16:00".

Pure: text and the center's date in, reports out. A statement is taken only when nothing about
it is in doubt; anything that touches one of these subjects and cannot be read for sure (a date
written 03/04, which is March or April depending on the writer; a weekday, which names no week;
a negation; a question) is returned as unclear, with words for QA, and nothing is taken from
that reply: QA reads it and acts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from oos_notify.incidents.center_reports import ReportIn, ReportKind

FIRST_LINES = 3
"""How many of the reply's own non-empty lines are read: statements come first."""

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        )
    )
    for m in names
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))

_LYMPHODEPLETION = re.compile(
    r"\b(lymphodeplet\w*|ld|flu\s*/\s*cy|flu-cy|flucy|fludarabine|cyclophosphamide|"
    r"conditioning|chemo(therapy)?)\b"
)
_STARTED = re.compile(r"\b(started|began|begun|commenced|initiated|given)\b")
_POSTPONED = re.compile(r"\b(postponed|delayed|moved|rescheduled|pushed(\s+back)?)\b")
_THINGS = r"(product|cells|bag|bags|shipment|shipper|dewar)"
_PRODUCT_RECEIVED = re.compile(
    rf"\b{_THINGS}\s+((was|were|has|have|is|are|been|not|yet|n't|hasn't|haven't|isn't)\s+)*"
    r"(received|arrived|delivered|here)\b|"
    rf"\b(received|got)\s+(the\s+)?{_THINGS}\b"
)
_CALL = re.compile(
    r"\b(call\s+(me|us|back)|please\s+call|give\s+(me|us)\s+a\s+(call|ring)|"
    r"(phone|ring)\s+(me|us))\b"
)
_NEGATION = re.compile(r"\b(not|no|never|cancel(l?ed)?|don'?t|didn'?t|hasn'?t|haven'?t)\b|n't\b")

_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH})\.?(?:\s+(\d{{4}}))?\b")
_MONTH_DAY = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?\b")
_NUMERIC_DATE = re.compile(r"\b\d{1,2}[/.]\d{1,2}(?:[/.]\d{2,4})?\b")
_WEEKDAY = re.compile(
    r"\b(mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)(day|sday|nesday|rsday|urday)?\b"
)
_RELATIVE = {"today": 0, "yesterday": -1, "tomorrow": 1}

_PHONE = re.compile(r"\+?\d[\d ().-]{5,}\d")
_CLOCK = r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?"
_WINDOW = re.compile(rf"\b(?:between\s+)?{_CLOCK}\s*(?:-|\u2013|to|and|until)\s*{_CLOCK}\b")
_FROM = re.compile(rf"\b(?:after|from|at)\s+{_CLOCK}\b")
_UNTIL = re.compile(rf"\b(?:before|until|till|by)\s+{_CLOCK}\b")


@dataclass(frozen=True)
class Said:
    """What a reply's first lines say: reports to take, and what could not be read for sure."""

    reports: tuple[ReportIn, ...] = ()
    unclear: tuple[str, ...] = ()

    @property
    def request(self) -> str | None:
        """What QA's forwarded copy shows first, when something could not be taken."""
        return "; ".join(self.unclear) or None


def first_lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()][:FIRST_LINES]


def clauses(line: str) -> list[str]:
    """A line cut into statements: at sentence ends and commas, not in numbers or times."""
    parts = re.split(r"(?<!\d)[.;!]+(?!\d)|[.;!]+(?=\s|$)|,\s+|\s+(?:and|but)\s+(?=\D)", line)
    return [p.strip() for p in parts if p and p.strip()]


def read(text: str, today: date) -> Said:
    """The reports a reply's first lines make, against the center's ``today``."""
    reports: list[ReportIn] = []
    unclear: list[str] = []
    for line in first_lines(text):
        folded = " ".join(line.casefold().split())
        for clause in clauses(folded):
            found, doubt = _clause(clause, folded, today)
            if found is not None and all(r.kind is not found.kind for r in reports):
                reports.append(found)
            if doubt is not None:
                unclear.append(doubt)
    if unclear:
        return Said((), tuple(unclear))
    return Said(tuple(reports), ())


def _clause(clause: str, line: str, today: date) -> tuple[ReportIn | None, str | None]:
    """One statement of ``line``: a report, or words saying why it cannot be taken, or
    neither. A call's number and time may stand in the line's other statements."""
    call = _CALL.search(clause)
    lymphodepletion = _LYMPHODEPLETION.search(clause)
    received = _PRODUCT_RECEIVED.search(clause)
    if not (call or lymphodepletion or received):
        return None, None
    quoted = f'"{clause}"'
    if "?" in clause:
        return None, f"a question: {quoted}"
    if call:
        if _NEGATION.search(clause[: call.start()]):
            return None, f"a call, with a negation: {quoted}"
        return _call(clause, line, quoted)
    if _NEGATION.search(clause):
        return None, f"a negation: {quoted}"
    if received and not lymphodepletion:
        return ReportIn(kind=ReportKind.PRODUCT_RECEIVED, comment=clause), None
    started, postponed = _STARTED.search(clause), _POSTPONED.search(clause)
    if bool(started) == bool(postponed):
        return None, f"lymphodepletion, but not whether it started or was postponed: {quoted}"
    kind = ReportKind.LYMPHODEPLETION_STARTED if started else ReportKind.LYMPHODEPLETION_POSTPONED
    day, doubt = _day(clause, today)
    if day is None:
        what = "started" if started else "postponed"
        return None, f"lymphodepletion {what}, but {doubt or 'no date'}: {quoted}"
    return ReportIn(kind=kind, day=day, comment=clause), None


def _day(clause: str, today: date) -> tuple[date | None, str | None]:
    """The one date a statement names, or why there is none for sure."""
    found: list[date] = []
    if _NUMERIC_DATE.search(clause):
        return None, "a date written with numbers only, which reads as two different days"
    for word, offset in _RELATIVE.items():
        if re.search(rf"\b{word}\b", clause):
            found.append(today + timedelta(days=offset))
    for m in _ISO_DATE.finditer(clause):
        found.extend(_valid(int(m[1]), int(m[2]), int(m[3])))
    for m in _DAY_MONTH.finditer(clause):
        found.extend(_named(int(m[1]), _MONTHS[m[2]], m[3], today))
    for m in _MONTH_DAY.finditer(clause):
        found.extend(_named(int(m[2]), _MONTHS[m[1]], m[3], today))
    if len(set(found)) == 1:
        return found[0], None
    if found:
        return None, "more than one date"
    if _WEEKDAY.search(clause):
        return None, "a weekday, which does not say which week"
    return None, None


def _valid(year: int, month: int, day: int) -> list[date]:
    try:
        return [date(year, month, day)]
    except ValueError:
        return []


def _named(day: int, month: int, year: str | None, today: date) -> list[date]:
    """A day and a month without a year is the one nearest ``today``."""
    if year is not None:
        return _valid(int(year), month, day)
    candidates = [
        d for y in (today.year - 1, today.year, today.year + 1) for d in _valid(y, month, day)
    ]
    return [min(candidates, key=lambda d: abs((d - today).days))] if candidates else []


def _call(clause: str, line: str, quoted: str) -> tuple[ReportIn | None, str | None]:
    # The other statements about the treatment keep their own times, and dates are no phone
    # numbers: both are taken out of the line first.
    for other in clauses(line):
        if other != clause and (_LYMPHODEPLETION.search(other) or _PRODUCT_RECEIVED.search(other)):
            line = line.replace(other, " ")
    undated = _NUMERIC_DATE.sub(" ", _ISO_DATE.sub(" ", line))
    phone = _PHONE.search(undated)
    number = " ".join(phone[0].split()) if phone else None
    rest = undated.replace(phone[0], " ") if phone else undated
    start = until = None
    window = _WINDOW.search(rest)
    if window:
        # "between 2 and 4 pm": the first hour is in the half of the day the second names.
        first_half = window[3] or window[6]
        start, until = _clock(window[1], window[2], first_half), _clock(*window.group(4, 5, 6))
        if start is None or until is None:
            return None, f"a call, but the time to call cannot be read for sure: {quoted}"
    else:
        after, before = _FROM.search(rest), _UNTIL.search(rest)
        start = _clock(*after.group(1, 2, 3)) if after else None
        until = _clock(*before.group(1, 2, 3)) if before else None
        if (after and start is None) or (before and until is None):
            return None, f"a call, but the time to call cannot be read for sure: {quoted}"
    if number is not None and not re.fullmatch(r"\+?[0-9][0-9 ()./-]*", number):
        return None, f"a call, but the number cannot be read: {quoted}"
    return (
        ReportIn(
            kind=ReportKind.CALL_ME, phone=number, call_from=start, call_until=until, comment=clause
        ),
        None,
    )


def _clock(hour: str, minute: str | None, half: str | None) -> str | None:
    """``14:00`` from "2 pm", "14:00" or "14"; None when it is no time of day, or when an hour
    without am/pm or minutes could be morning or afternoon."""
    h, m = int(hour), int(minute or 0)
    if half is not None:
        if not 1 <= h <= 12:
            return None
        h = h % 12 + (12 if half == "pm" else 0)
    elif minute is None and 1 <= h <= 12:
        return None
    if h > 23 or m > 59:
        return None
    return f"{h:02d}:{m:02d}"
