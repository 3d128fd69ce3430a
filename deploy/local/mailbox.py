"""The local mail sink as `make up` shows it: each new message in one summary with the links a person acts on."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from deploy.local.supervisor import say

_LINK = re.compile(r"https?://[^\s<>\"']+")


def action_links(text: str) -> list[tuple[str, str]]:
    """(label, url) for every link that carries a signed token (approve, reject): the links that act. Other
    links in a message (a step's destination, a docs page) are not what the reader has to click."""
    found: list[tuple[str, str]] = []
    for url in dict.fromkeys(_LINK.findall(text)):
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        if "token" not in query:
            continue
        label = (query.get("action") or [parts.path.rstrip("/").rsplit("/", 1)[-1]])[0]
        found.append((label, url))
    return found


def summary(path: Path) -> str:
    """A few lines about one sink message: recipient, subject, the action links, the file."""
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    body = message.get_body(("plain",))
    text = body.get_content() if body is not None else ""
    subject = " ".join(str(message["Subject"] or "").split())  # a folded header may start with whitespace
    lines = [f"mail       to {message['To']}: {subject}"]
    lines += [f"           {label + ':':<9}{url}" for label, url in action_links(text)]
    lines.append(f"           file:    {path}")
    return "\n".join(lines)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # replaced or removed since the listing
        return 0.0


class MailWatcher:
    """Prints each message the local sink receives, so a person running `make up` can follow approval emails
    without an SMTP server."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.seen = set(folder.glob("*.eml")) if folder and folder.is_dir() else set()

    def report(self) -> None:
        if self.folder is None or not self.folder.is_dir():
            return
        for path in sorted(set(self.folder.glob("*.eml")) - self.seen, key=_mtime):
            self.seen.add(path)
            try:
                say(summary(path))
            except (OSError, ValueError) as exc:  # a file being replaced right now: say so, never stop the stack
                say(f"mail       {path} ({exc})")
