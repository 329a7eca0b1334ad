"""The person's own words in a reply, without the quoted message below them.

Mail clients quote in their own ways: ``>`` lines, an attribution line ("On ... wrote:", "Am ...
schrieb", "Le ... a écrit :", "El ... escribió:", which Gmail wraps over two or three lines),
Outlook's "-----Original Message-----" or a line of underscores followed by a From/Von/De block,
and in HTML a ``<blockquote>`` or Gmail's ``gmail_quote``. Everything from the first of these on
is history. A reply written below the quote (bottom-posting) has no own text above it.
"""

from __future__ import annotations

import re
from email.message import EmailMessage, Message

from selectolax.lexbor import LexborHTMLParser, LexborNode

_ATTRIBUTIONS = (
    re.compile(r"^On\b.*\bwrote:$", re.IGNORECASE | re.DOTALL),
    re.compile(r"^Am\b.*\bschrieb\b.*:$", re.IGNORECASE | re.DOTALL),
    re.compile(r"^Le\b.*\ba\s+[ée]crit\s*:$", re.IGNORECASE | re.DOTALL),
    re.compile(r"^El\b.*\bescribi[óo]\s*:$", re.IGNORECASE | re.DOTALL),
)
_ATTRIBUTION_START = re.compile(r"^(On|Am|Le|El)\b", re.IGNORECASE)
_SEPARATORS = (
    re.compile(
        r"^-{2,}\s*(Original Message|Urspr[üu]ngliche Nachricht|Message d'origine|"
        r"Mensaje original|Forwarded message|Weitergeleitete Nachricht)\s*-{2,}$",
        re.IGNORECASE,
    ),
    re.compile(r"^_{20,}$"),
    re.compile(r"^(From|Von|De|Sent|Gesendet|Envoy[ée]|Enviado)\s*:\s", re.IGNORECASE),
)
MAX_TEXT = 2000
"""As much of a reply as is kept: an acknowledgement's comment holds no more."""
MAX_BODY_BYTES = 512 * 1024
"""The largest text or HTML part a message is read from. A reply's own words come first and
are at most ``MAX_TEXT`` long; a part larger than this is no person's reply."""


class BodyTooLarge(ValueError):
    """A message's text part is over ``MAX_BODY_BYTES``: it is not read."""


def body_text(message: Message) -> str:
    """The message's text: its plain part, else its HTML part as text without quoted history."""
    if not isinstance(message, EmailMessage):
        return ""
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    size = len(str(body.get_payload()))
    if size > MAX_BODY_BYTES:
        raise BodyTooLarge(
            f"its {body.get_content_type()} part is {size} bytes, over {MAX_BODY_BYTES}"
        )
    try:
        content = body.get_content()
    except (LookupError, ValueError, AssertionError):
        # An unknown charset or a broken encoding: the bytes as well as they can be read.
        payload = body.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    if body.get_content_subtype() == "html":
        content = html_text(content)
    return content.replace("\r\n", "\n").replace("\u00a0", " ")


_BREAKS = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "hr"})
_HIDDEN = frozenset({"style", "script", "head", "title", "blockquote"})
"""Elements whose text is not the person's: styles, scripts, and quoted history."""


def _starts_history(node: LexborNode) -> bool:
    """Gmail's and Outlook's quote blocks: everything from them on is the quoted message."""
    attributes = node.attributes
    return "gmail_quote" in (attributes.get("class") or "").split() or (
        "divRplyFwdMsg" in (attributes.get("id") or "")
    )


def html_text(html: str) -> str:
    """Text of an HTML body, quoted history left out: a ``<blockquote>``, and once Gmail's or
    Outlook's quote block opens, the rest of the message. Parsed by lexbor (selectolax), in
    time linear in the HTML's size, and walked without recursion."""
    tree = LexborHTMLParser(html)
    parts: list[str] = []
    node: LexborNode | None = tree.root
    while node is not None:
        tag = node.tag or ""
        descend = True
        if tag == "-text":
            parts.append(node.text_content or "")
        elif tag in _HIDDEN or tag.startswith("-"):
            descend = False
        elif _starts_history(node):
            break
        elif tag in _BREAKS:
            parts.append("\n")
        following = node.child if descend else None
        while following is None and node is not None:
            following = node.next
            if following is None:
                node = node.parent
        node = following
    return "".join(parts)


def _starts_quote(lines: list[str], index: int) -> bool:
    line = lines[index].strip()
    if any(pattern.match(line) for pattern in _SEPARATORS):
        return True
    if not _ATTRIBUTION_START.match(line):
        return False
    joined = line
    for following in lines[index + 1 : index + 3]:
        if any(pattern.match(joined) for pattern in _ATTRIBUTIONS):
            break
        if not following.strip() or following.lstrip().startswith(">"):
            break
        joined += " " + following.strip()
    return any(pattern.match(joined) for pattern in _ATTRIBUTIONS)


def own_lines(text: str) -> list[str]:
    """The lines the person wrote: up to the quoted history, ``>`` lines skipped."""
    lines = text.replace("\r\n", "\n").split("\n")
    own: list[str] = []
    for index, line in enumerate(lines):
        if _starts_quote(lines, index):
            break
        if line.lstrip().startswith(">"):
            continue
        own.append(line.rstrip())
    while own and not own[-1].strip():
        own.pop()
    while own and not own[0].strip():
        own.pop(0)
    return own


def own_text(text: str) -> str:
    return "\n".join(own_lines(text))[:MAX_TEXT]


def first_lines(text: str, count: int = 3, limit: int = 500) -> str:
    """The first ``count`` non-empty lines, for a timeline entry."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return "\n".join([line for line in lines if line][:count])[:limit]
